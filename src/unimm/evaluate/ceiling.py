"""Tokenizer ceiling: the GenEval-scene score of a perfect generator behind this image tokenizer.

For every GenEval-scene prompt a ground-truth scene that satisfies it is rendered
(`oracle_scene`), passed through the image tokenizer (encode, then decode) and scored with the
same detector and check as GenEval-scene. A generator that produced exactly the tokens of a
correct image would score this, so the gap between the ceiling and GenEval-scene is the
generator's, and the gap between 1 and the ceiling the tokenizer's. It is not a hard bound:
other token sequences may decode to images the detector accepts (a weak tokenizer's generated
images can score above its ceiling). No model forward: a few hundred encode/decode passes,
batched.

The clean renders are scored too ("clean"): the detector's own ceiling, 1.0 up to its error.
"""

from __future__ import annotations

import random
from collections.abc import Callable

import numpy as np
import torch

from unimm.data.images import to_tensor, to_uint8
from unimm.evaluate.common import check_len, chunks, describe_scene, mean
from unimm.evaluate.taxonomy import FAILURES, classify_failure, failure_table
from unimm.world.detector import DetectorConfig, detect
from unimm.world.geneval import GENEVAL_TASKS, geneval_prompts, oracle_scene
from unimm.world.render import render

Reconstruct = Callable[[np.ndarray], np.ndarray]  # (B, H, W, 3) uint8 -> the same
SHOWN = 8  # failed reconstructions kept with their images, for the report's grid


def tokenizer_roundtrip(
    image_tok: torch.nn.Module, device: torch.device | str | None = None
) -> Reconstruct:
    """encode then decode through any unimm image tokenizer (VQ codes, VAE latents or pixel
    patches: all map (B, 3, H, W) in [-1, 1] to tokens and back)."""

    @torch.no_grad()
    def reconstruct(images: np.ndarray) -> np.ndarray:
        return to_uint8(image_tok.decode(image_tok.encode(to_tensor(images, device))))

    return reconstruct


def tokenizer_ceiling(
    reconstruct: Reconstruct,
    split: str = "in",
    per_task: int = 50,
    images_per_prompt: int = 1,
    seed: int = 0,
    resolution: int = 64,
    batch_size: int = 64,
    detector: DetectorConfig | None = None,
) -> dict:
    """Per-task and overall GenEval-scene accuracy of reconstructed oracle images ("tasks",
    "overall"), of the clean renders ("clean"), and the reconstructions' failure classes."""
    prompts = geneval_prompts(split, per_task, seed)
    rng = random.Random(f"ceiling:{split}:{seed}")
    # In-distribution prompts that leave a colour open get a training colour: the tokenizer
    # never saw the held-out pairs, and in-distribution generators should not draw them either.
    scenes = [
        oracle_scene(p, rng, resolution, heldout_ok=split == "heldout")
        for p in prompts
        for _ in range(images_per_prompt)
    ]
    clean = np.stack([render(s) for s in scenes])  # (N, H, W, 3)
    recon = []
    for batch in chunks(clean, batch_size):
        out = reconstruct(batch)
        check_len(out, len(batch), "reconstruct")
        recon.append(np.asarray(out, dtype=np.uint8))
    recon = np.concatenate(recon)
    records, shown = [], 0
    for k, p in enumerate(prompts):
        rows = range(k * images_per_prompt, (k + 1) * images_per_prompt)
        seen = [detect(recon[i], detector) for i in rows]
        failure = [classify_failure(p, s) for s in seen]
        rec = {
            "task": p.task,
            "prompt": p.text,
            "correct": [f is None for f in failure],
            "clean_correct": [
                classify_failure(p, detect(clean[i], detector)) is None for i in rows
            ],
            "failure": failure,
            "detected": [describe_scene(s) for s in seen],
        }
        bad = [i for i, f in zip(rows, failure) if f is not None]
        if bad and shown < SHOWN:
            rec["images"] = [clean[bad[0]], recon[bad[0]]]  # (clean, reconstruction)
            shown += 1
        records.append(rec)
    tasks = [t for t in GENEVAL_TASKS if any(r["task"] == t for r in records)]

    def accuracy(key: str) -> dict[str, float]:
        return {
            t: mean([float(c) for r in records if r["task"] == t for c in r[key]]) for t in tasks
        }

    per_task, per_task_clean = accuracy("correct"), accuracy("clean_correct")
    return {
        "benchmark": "tokenizer_ceiling",
        "split": split,
        "tasks": per_task,
        "overall": mean(list(per_task.values())),
        "clean": {"tasks": per_task_clean, "overall": mean(list(per_task_clean.values()))},
        "failures": failure_table(records),
        "n_images": len(scenes),
        "records": records,
    }


def ceiling_md(ceilings: dict[str, dict], generated: dict[str, dict]) -> list[str]:
    """A markdown table: per split and task, GenEval-scene of the generated images next to the
    tokenizer ceiling and the clean renders, then the reconstructions' failure classes.
    ceilings and generated map a split ("in", "heldout") to its result."""
    lines = [
        "Tokenizer ceiling: an oracle scene for every GenEval-scene prompt, encoded and decoded "
        "by the image tokenizer and scored like GenEval-scene: what a generator that reproduces "
        "the tokens of correct images reaches with this tokenizer.",
        "",
        "| split | task | generated | ceiling | clean renders |",
        "|---|---|---|---|---|",
    ]
    notes = []
    for split, ceil in ceilings.items():
        gen = generated.get(split, {"tasks": {}, "overall": None})
        rows = [
            (t, gen["tasks"].get(t), a, ceil["clean"]["tasks"][t]) for t, a in ceil["tasks"].items()
        ]
        rows.append(("**overall**", gen["overall"], ceil["overall"], ceil["clean"]["overall"]))
        for task, g, c, clean in rows:
            g = "-" if g is None else f"{g:.3f}"
            lines.append(f"| {split} | {task} | {g} | {c:.3f} | {clean:.3f} |")
        counts = {f: sum(row["counts"][f] for row in ceil["failures"].values()) for f in FAILURES}
        wrong = ", ".join(f"{f.replace('_', ' ')} {n}" for f, n in counts.items() if n)
        notes.append(f"Failed reconstructions ({split}, of {ceil['n_images']}): {wrong or 'none'}.")
    return lines + [""] + [n for note in notes for n in (note, "")]
