"""GenEval-scene of one trained run under several sampling settings (the "sampling settings"
lever of docs/LOG.md): temperature, top-k and guidance scale, each row on the same prompts and
seeds so the rows differ only in how the model's distribution is sampled.

    PYTHONPATH=src OMP_NUM_THREADS=1 python benchmarks/sampling_sweep.py RUN \
        --per-task 20 --images-per-prompt 2 --setting t=1.0 --setting t=0.7,k=20 \
        --setting t=0.7,cfg=3

A setting is comma-separated key=value pairs: t (temperature), k (top-k), p (top-p), cfg
(guidance scale), std (1: standard guidance instead of background-preserving). Prints one
markdown row per setting (overall and per task) and writes them to --json when given.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from unimm.evaluate.geneval import geneval_scene
from unimm.pipeline import load_checkpoint
from unimm.recipes.base import SamplingConfig
from unimm.world.geneval import GENEVAL_TASKS

KEYS = {"t": "temperature", "k": "top_k", "p": "top_p", "cfg": "cfg_scale", "std": "std"}


def parse_setting(text: str) -> SamplingConfig:
    fields: dict = {}
    for part in text.split(","):
        key, _, value = part.partition("=")
        if key not in KEYS:
            raise SystemExit(f"unknown sampling key {key!r} in {text!r} (use {', '.join(KEYS)})")
        if key == "std":
            fields["cfg_keep_background"] = value not in ("1", "true")
        elif key == "k":
            fields["top_k"] = int(value)
        else:
            fields[KEYS[key]] = float(value)
    return SamplingConfig(**fields)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("run")
    ap.add_argument("--setting", action="append", required=True)
    ap.add_argument("--per-task", type=int, default=20)
    ap.add_argument("--images-per-prompt", type=int, default=2)
    ap.add_argument("--split", default="in")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    model, _ = load_checkpoint(args.run)
    rows = []
    print("| setting | overall | " + " | ".join(GENEVAL_TASKS) + " | s |")
    print("|---" * (len(GENEVAL_TASKS) + 3) + "|")
    for text in args.setting:
        sampling = parse_setting(text)
        t0 = time.perf_counter()
        res = geneval_scene(
            lambda p, n, s, sampling=sampling: model.generate_images(p, n, s, sampling),
            args.split,
            args.per_task,
            args.images_per_prompt,
            seed=args.seed,
            progress=False,
        )
        seconds = time.perf_counter() - t0
        tasks = " | ".join(f"{res['tasks'].get(t, float('nan')):.3f}" for t in GENEVAL_TASKS)
        print(f"| {text} | {res['overall']:.3f} | {tasks} | {seconds:.0f} |", flush=True)
        rows.append({"setting": text, "overall": res["overall"], "tasks": res["tasks"]})
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
