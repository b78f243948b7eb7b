"""Quality as a function of the number of sampling steps, for iterative samplers.

Run (from the repo root), on trained checkpoints:

    PYTHONPATH=src .venv/bin/python benchmarks/quality_vs_steps.py runs/eq_showo runs/eq_mmada \
        --steps 4 8 16 32 --per-task 20 --out docs/quality_vs_steps.json

For each checkpoint and step count: GenEval-scene in-distribution (`--per-task` prompts x
`--images-per-prompt` images, the default guidance: s = 5, background-preserving; temperature 1)
and VQA-scene (`--questions`, greedy); the step count applies to every iterative sampler of the
recipe (Show-o's images; MMaDA's images and its masked-diffusion text). Seeds are fixed, so
the rows differ only in the step count. Prints a table and writes the rows as JSON.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from unimm.evaluate.geneval import geneval_scene
from unimm.evaluate.understanding import vqa_scene
from unimm.pipeline import load_checkpoint
from unimm.recipes.base import SamplingConfig


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("checkpoints", nargs="+")
    p.add_argument("--steps", type=int, nargs="+", default=[4, 8, 16, 32])
    p.add_argument("--per-task", type=int, default=20)
    p.add_argument("--images-per-prompt", type=int, default=2)
    p.add_argument("--questions", type=int, default=200)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--out", type=Path, default=None)
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    rows = []
    print(f"{'recipe':<10} {'steps':>5} {'geneval_in':>10} {'vqa':>6} {'seconds':>8}")
    for ckpt in args.checkpoints:
        model, _ = load_checkpoint(ckpt)
        for steps in args.steps:
            t0 = time.perf_counter()
            image_sampling = SamplingConfig(steps=steps)
            text_sampling = SamplingConfig(temperature=0.0, steps=steps)
            gen = geneval_scene(
                lambda ps, n, s: model.generate_images(ps, n, s, image_sampling),  # noqa: B023
                "in",
                args.per_task,
                args.images_per_prompt,
                progress=False,
            )
            vqa = vqa_scene(
                lambda ims, qs: model.answer(ims, qs, text_sampling),  # noqa: B023
                "eval",
                args.questions,
                progress=False,
            )
            row = {
                "checkpoint": str(ckpt),
                "recipe": model.recipe,
                "steps": steps,
                "geneval_in": gen["overall"],
                "geneval_tasks": gen["tasks"],
                "vqa": vqa["overall"],
                "seconds": time.perf_counter() - t0,
            }
            rows.append(row)
            print(
                f"{row['recipe']:<10} {steps:>5} {row['geneval_in']:>10.3f} {row['vqa']:>6.3f} "
                f"{row['seconds']:>8.1f}"
            )
    if args.out:
        args.out.write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
