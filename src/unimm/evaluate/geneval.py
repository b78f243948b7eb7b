"""GenEval-scene: text-to-image accuracy judged by the world's detector (shared/WORLD.md).

The harness knows nothing about models: it calls generate_images(prompts, n_per_prompt, seed)
with many prompts at once and scores whatever uint8 images come back.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from unimm.evaluate.common import check_image, check_len, chunks, describe_scene, mean
from unimm.evaluate.taxonomy import classify_failure, failure_table
from unimm.progress import progress_bar
from unimm.world.detector import DetectorConfig, detect
from unimm.world.geneval import GENEVAL_TASKS, check, geneval_prompts

GenerateImages = Callable[[list[str], int, int], list[list[np.ndarray]]]


def geneval_scene(
    generate_images: GenerateImages,
    split: str = "in",
    per_task: int = 50,
    images_per_prompt: int = 4,
    seed: int = 0,
    progress: bool = True,
    batch_prompts: int = 64,
    detector: DetectorConfig | None = None,
) -> dict:
    """Per-task accuracy, overall (mean of the split's tasks) and per-prompt records.

    Each record holds the prompt, the generated images, the detector's reading of each,
    whether it passed and, if not, why (unimm.evaluate.taxonomy), so a report can show a grid;
    "failures" counts the failure classes per task. Batch k is generated with seed + k.
    """
    if images_per_prompt < 1:
        raise ValueError(f"images_per_prompt must be >= 1, got {images_per_prompt}")
    prompts = geneval_prompts(split, per_task, seed)
    records: list[dict] = []
    bar = progress_bar(total=len(prompts), desc=f"geneval[{split}]", disable=not progress)
    for k, batch in enumerate(chunks(prompts, batch_prompts)):
        texts = [p.text for p in batch]
        outs = generate_images(texts, images_per_prompt, seed + k)
        check_len(outs, len(batch), "generate_images")
        for p, imgs in zip(batch, outs, strict=True):
            check_len(imgs, images_per_prompt, f"generate_images for {p.text!r}")
            imgs = [check_image(im, f"image for {p.text!r}") for im in imgs]
            scenes = [detect(im, detector) for im in imgs]
            records.append(
                {
                    "task": p.task,
                    "prompt": p.text,
                    "correct": [check(p, s) for s in scenes],
                    "detected": [describe_scene(s) for s in scenes],
                    "failure": [classify_failure(p, s) for s in scenes],
                    "images": imgs,
                }
            )
        bar.update(len(batch))
    bar.close()
    tasks = [t for t in GENEVAL_TASKS if any(r["task"] == t for r in records)]
    per_task_acc = {
        t: mean([float(c) for r in records if r["task"] == t for c in r["correct"]]) for t in tasks
    }
    return {
        "benchmark": "geneval_scene",
        "split": split,
        "tasks": per_task_acc,
        "overall": mean(list(per_task_acc.values())),
        "failures": failure_table(records),
        "n_prompts": len(prompts),
        "images_per_prompt": images_per_prompt,
        "records": records,
    }
