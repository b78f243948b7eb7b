"""Quality as a function of the number of sampling steps, for iterative samplers.

Run (from the repo root), on trained checkpoints:

    PYTHONPATH=src .venv/bin/python benchmarks/quality_vs_steps.py runs/eq_showo runs/eq_mmada \
        --steps 4 8 16 32 --per-task 20 --out docs/quality_vs_steps.json

For each checkpoint and step count: GenEval-scene in-distribution (`--per-task` prompts x
`--images-per-prompt` images, the default guidance: s = 5, background-preserving; temperature 1)
and VQA-scene (`--questions`, greedy); the step count applies to every iterative sampler of the
recipe (Show-o's images; MMaDA's images and its masked-diffusion text; D-DiT's image ODE and its
masked-diffusion text). Seeds are fixed, so the rows differ only in the step count. Prints
quality and speed (images/s over the GenEval-scene prompts, answers/s over the VQA questions) per
step count and writes the rows as JSON.
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
    print(
        f"{'recipe':<10} {'steps':>5} {'geneval_in':>10} {'images/s':>8} {'vqa':>6} "
        f"{'answers/s':>9}"
    )
    for ckpt in args.checkpoints:
        model, _ = load_checkpoint(ckpt)
        for steps in args.steps:
            image_sampling = SamplingConfig(steps=steps)
            text_sampling = SamplingConfig(temperature=0.0, steps=steps)
            made = {"images": 0, "answers": 0}

            def draw(ps, n, s, sampling=image_sampling, made=made):
                out = model.generate_images(ps, n, s, sampling)  # noqa: B023
                made["images"] += len(out)
                return out

            def answer(ims, qs, sampling=text_sampling, made=made):
                out = model.answer(ims, qs, sampling)  # noqa: B023
                made["answers"] += len(out)
                return out

            t0 = time.perf_counter()
            gen = geneval_scene(draw, "in", args.per_task, args.images_per_prompt, progress=False)
            t1 = time.perf_counter()
            vqa = vqa_scene(answer, "eval", args.questions, progress=False)
            t2 = time.perf_counter()
            # The rates include the detector and answer checking, a small share beside the
            # sampling (both are cheap numpy), so they compare samplers, not absolute speeds.
            row = {
                "checkpoint": str(ckpt),
                "recipe": model.recipe,
                "steps": steps,
                "geneval_in": gen["overall"],
                "geneval_tasks": gen["tasks"],
                "images_per_s": made["images"] / (t1 - t0),
                "vqa": vqa["overall"],
                "answers_per_s": made["answers"] / (t2 - t1),
                "seconds": t2 - t0,
            }
            rows.append(row)
            print(
                f"{row['recipe']:<10} {steps:>5} {row['geneval_in']:>10.3f} "
                f"{row['images_per_s']:>8.2f} {row['vqa']:>6.3f} {row['answers_per_s']:>9.2f}"
            )
    if args.out:
        args.out.write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
