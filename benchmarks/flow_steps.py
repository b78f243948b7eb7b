"""Image quality vs number of ODE steps for a trained flow recipe (Transfusion).

Run (from the repo root; a few minutes for a small model on one thread):

    OMP_NUM_THREADS=1 PYTHONPATH=src .venv/bin/python benchmarks/flow_steps.py RUN_DIR \
        --steps 2 4 8 16 32 --samplers euler heun --per-task 20

For each (sampler, steps) it sets the recipe's flow sampler, generates GenEval-scene
in-distribution prompts (`--per-task` prompts x 2 images, cfg 3) and prints the overall score,
the per-task scores, the velocity evaluations per image and the images/s. Heun costs two
evaluations per step. Results: BENCHMARKS.md, "Continuous family".
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import replace

import torch

from unimm.evaluate.geneval import geneval_scene
from unimm.pipeline import load_checkpoint
from unimm.recipes.base import SamplingConfig


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("checkpoint")
    ap.add_argument("--steps", type=int, nargs="+", default=[2, 4, 8, 16, 32])
    ap.add_argument("--samplers", nargs="+", default=["euler"], choices=["euler", "heun"])
    ap.add_argument("--shift", type=float, default=1.0)
    ap.add_argument("--per-task", type=int, default=20)
    ap.add_argument("--cfg", type=float, default=3.0)
    ap.add_argument("--out", help="write the rows as JSON here")
    args = ap.parse_args()
    torch.set_num_threads(torch.get_num_threads())
    model, _ = load_checkpoint(args.checkpoint)
    base = model.parts.config
    rows = []
    print("sampler  steps  evals/image  GenEval-in  img/s  per task")
    for sampler in args.samplers:
        for n in args.steps:
            # The sampler kind and shift live in the checkpoint's flow config; steps per call.
            model.parts.config = replace(
                base, flow=replace(base.flow, sampler=sampler, shift=args.shift)
            )
            sampling = SamplingConfig(cfg_scale=args.cfg, steps=n)

            def gen(prompts, k, seed, sampling=sampling):
                return model.generate_images(prompts, k, seed, sampling)

            t0 = time.perf_counter()
            res = geneval_scene(gen, "in", args.per_task, 2, seed=0, progress=False)
            seconds = time.perf_counter() - t0
            n_images = sum(len(r["images"]) for r in res["records"])
            evals = n * (2 if sampler == "heun" else 1)
            row = {
                "sampler": sampler,
                "steps": n,
                "evals_per_image": evals,
                "geneval_in": res["overall"],
                "images_per_s": n_images / seconds,
                "per_task": res["tasks"],
            }
            rows.append(row)
            tasks = " ".join(f"{k} {v:.2f}" for k, v in res["tasks"].items())
            print(
                f"{sampler:7s} {n:6d} {evals:12d} {res['overall']:11.3f} "
                f"{row['images_per_s']:6.2f}  {tasks}",
                flush=True,
            )
    model.parts.config = base
    if args.out:
        with open(args.out, "w") as f:
            json.dump(rows, f, indent=2)


if __name__ == "__main__":
    main()
