"""Helpers shared by the benchmark harnesses: batching, answer normalisation, input checks."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from typing import TypeVar

import numpy as np

from unimm.progress import progress_bar
from unimm.world.language import canonical_caption
from unimm.world.palette import NUMBER_WORDS
from unimm.world.qa import ANSWER_MARK
from unimm.world.scene import Scene

T = TypeVar("T")
S = TypeVar("S")


def chunks(items: Sequence[T], size: int) -> Iterator[Sequence[T]]:
    if size < 1:
        raise ValueError(f"batch size must be >= 1, got {size}")
    for i in range(0, len(items), size):
        yield items[i : i + size]


def normalise_answer(text: str) -> str:
    """Lower case, single spaces, no trailing period: "Two." -> "two". A reasoned answer is
    scored by what follows its last "answer:" ("a red circle. answer: yes" -> "yes"), the form
    train.vqa_rationale teaches (unimm.world.qa.ANSWER_MARK)."""
    text = str(text).lower()
    if ANSWER_MARK in text:
        text = text.rpartition(ANSWER_MARK)[2]
    return " ".join(text.strip().rstrip(".!").split())


def check_image(img: object, where: str) -> np.ndarray:
    if (
        not isinstance(img, np.ndarray)
        or img.dtype != np.uint8
        or img.ndim != 3
        or img.shape[2] != 3
    ):
        shape = getattr(img, "shape", None)
        dtype = getattr(img, "dtype", type(img).__name__)
        raise ValueError(
            f"{where}: expected an (H, W, 3) uint8 array, got shape {shape} dtype {dtype}"
        )
    if img.shape[0] != img.shape[1]:
        raise ValueError(f"{where}: expected a square image, got {img.shape[:2]}")
    return img


def check_len(got: Sequence[object], want: int, what: str) -> None:
    if len(got) != want:
        raise ValueError(f"{what} returned {len(got)} results for {want} inputs")


def describe_scene(scene: Scene) -> str:
    """The detector's reading in words. Generated images can hold more objects of one kind than
    the world's number words cover, so large counts fall back to digits."""
    if not scene.objects:
        return "(nothing)"
    counts = Counter((o.color, o.shape) for o in scene.objects)
    if max(counts.values()) < len(NUMBER_WORDS):
        return canonical_caption(scene)
    return ", ".join(f"{n} x {c} {s}" for (c, s), n in sorted(counts.items()))


def mean(xs: Sequence[float]) -> float:
    return float(sum(xs) / len(xs)) if xs else float("nan")


KEEP_IMAGES = 16  # records that keep their images, for the report's sample grids


def batched_records(
    samples: Sequence[S],
    predict: Callable[[Sequence[S]], Sequence[object]],
    record: Callable[[S, object], dict],
    *,
    what: str,
    desc: str,
    batch_size: int,
    progress: bool,
) -> list[dict]:
    """The loop every understanding/editing benchmark shares: call the model on batches of
    samples, check it answered each, and turn (sample, output) into a record. Records may hold
    "image"/"images"; only the first KEEP_IMAGES keep them, so results stay small."""
    records: list[dict] = []
    for batch in progress_bar(list(chunks(samples, batch_size)), desc=desc, disable=not progress):
        outs = predict(batch)
        check_len(outs, len(batch), what)
        for sample, out in zip(batch, outs, strict=True):
            rec = record(sample, out)
            if len(records) >= KEEP_IMAGES:
                rec.pop("image", None)
                rec.pop("images", None)
            records.append(rec)
    return records
