"""VQA-scene and Caption-scene: understanding accuracy on eval and held-out scenes.

answer(images, questions) -> answers and caption(images) -> captions are called in batches; the
harness draws its samples from the world's eval stream (never the train seeds).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Sequence
from itertools import islice

import numpy as np

from unimm.data.sample import Image, Sample, Text
from unimm.evaluate.common import batched_records, mean, normalise_answer
from unimm.world.language import caption_matches, parse_caption
from unimm.world.tasks import world_samples

Answer = Callable[[list[np.ndarray], list[str]], list[str]]
Caption = Callable[[list[np.ndarray]], list[str]]
SPLITS = ("eval", "heldout")


def eval_samples(task: str, split: str, n: int, seed: int) -> list[Sample]:
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    heldout = "only" if split == "heldout" else "exclude"
    return list(islice(world_samples("eval", seed, {task: 1.0}, heldout), n))


def _pixels(seg: object) -> np.ndarray:
    assert isinstance(seg, Image)
    return seg.pixels


def _text(seg: object) -> str:
    assert isinstance(seg, Text)
    return seg.text


def vqa_scene(
    answer: Answer,
    split: str = "eval",
    n: int = 500,
    seed: int = 0,
    batch_size: int = 64,
    progress: bool = True,
) -> dict:
    """Exact-match accuracy of short answers, per question type and overall (mean over all)."""
    samples = eval_samples("vqa", split, n, seed)

    def predict(batch: Sequence[Sample]) -> list[str]:
        return answer(
            [_pixels(s.segments[0]) for s in batch], [_text(s.segments[1]) for s in batch]
        )

    def record(s: Sample, p: object) -> dict:
        truth = _text(s.segments[2])
        return {
            "question": _text(s.segments[1]),
            "answer": truth,
            "prediction": p,
            "qtype": s.meta["qtype"],
            "correct": normalise_answer(p) == truth,
            "image": _pixels(s.segments[0]),
        }

    records = batched_records(
        samples,
        predict,
        record,
        what="answer",
        desc=f"vqa[{split}]",
        batch_size=batch_size,
        progress=progress,
    )
    by_type: dict[str, list[float]] = defaultdict(list)
    for r in records:
        by_type[r["qtype"]].append(float(r["correct"]))
    return {
        "benchmark": "vqa_scene",
        "split": split,
        "overall": mean([float(r["correct"]) for r in records]),
        "per_qtype": {t: mean(v) for t, v in sorted(by_type.items())},
        "n": len(records),
        "records": records,
    }


def caption_scene(
    caption: Caption,
    split: str = "eval",
    n: int = 500,
    seed: int = 0,
    batch_size: int = 64,
    progress: bool = True,
) -> dict:
    """Captions parsed back into colour-shape counts; exact match against the scene."""
    samples = eval_samples("caption", split, n, seed)

    def record(s: Sample, p: object) -> dict:
        return {
            "reference": _text(s.segments[1]),
            "prediction": p,
            "parsed": parse_caption(p) is not None,
            "correct": caption_matches(p, s.meta["scene"]),
            "image": _pixels(s.segments[0]),
        }

    records = batched_records(
        samples,
        lambda batch: caption([_pixels(s.segments[0]) for s in batch]),
        record,
        what="caption",
        desc=f"caption[{split}]",
        batch_size=batch_size,
        progress=progress,
    )
    return {
        "benchmark": "caption_scene",
        "split": split,
        "overall": mean([float(r["correct"]) for r in records]),
        "parse_rate": mean([float(r["parsed"]) for r in records]),
        "n": len(records),
        "records": records,
    }
