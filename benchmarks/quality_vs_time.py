"""GenEval-scene (and VQA-scene) as a function of training time: the long-run curve.

Run (from the repo root; about `--minutes` of training plus a short evaluation per point):

    PYTHONPATH=src .venv/bin/python benchmarks/quality_vs_time.py --out runs/curve \
        --minutes 40 --points 8 [--image-tokenizer runs/quickstart/image_tokenizer]

Trains the `small` preset with a wall-clock budget (train.max_seconds), saving a checkpoint at
`--points` evenly spaced steps; afterwards each checkpoint is evaluated on a reduced GenEval-scene
(`--per-task` prompts x 2 images, in-distribution and held-out) and VQA-scene, so evaluation time
never counts as training time. Writes OUT/curve.json and OUT/curve.png.
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
from pathlib import Path

import matplotlib
import torch

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from unimm.evaluate.geneval import geneval_scene  # noqa: E402
from unimm.evaluate.understanding import vqa_scene  # noqa: E402
from unimm.pipeline import train_run  # noqa: E402
from unimm.recipes.registry import load_model  # noqa: E402


def plot_curve(rows: list[dict], path: Path, threads: int) -> None:
    fig, ax = plt.subplots(figsize=(6, 4))
    mins = [r["train_seconds"] / 60 for r in rows]
    ax.plot(mins, [r["geneval_in"] for r in rows], "o-", label="GenEval-scene (in-dist.)")
    ax.plot(mins, [r["geneval_heldout"] for r in rows], "s--", label="GenEval-scene (held-out)")
    ax.plot(mins, [r["vqa"] for r in rows], "^:", label="VQA-scene")
    ax.set_xlabel(f"training minutes ({threads} CPU thread{'s' if threads > 1 else ''})")
    ax.set_ylabel("score")
    ax.set_ylim(0, 1)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default="runs/curve")
    ap.add_argument("--minutes", type=float, default=40.0)
    ap.add_argument("--steps", type=int, default=6000, help="schedule length (time stops first)")
    ap.add_argument("--points", type=int, default=8)
    ap.add_argument("--per-task", type=int, default=20)
    ap.add_argument("--image-tokenizer", default=None)
    ap.add_argument("overrides", nargs="*")
    args = ap.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    # Checkpoints at evenly spaced training times, judged by the steps the budget allows.
    saved: list[tuple[int, float]] = []
    t0 = time.perf_counter()
    every = max(1, args.steps // args.points)
    overrides = [
        f"train.steps={args.steps}",
        f"train.max_seconds={args.minutes * 60}",
        f"train.save_every={every}",
        *args.overrides,
    ]

    def keep(step: int) -> None:
        src = out / "checkpoint"
        if src.exists():
            shutil.copytree(src, out / f"ckpt-{step:06d}", dirs_exist_ok=True)
            saved.append((step, time.perf_counter() - t0))

    # train_run saves to OUT/checkpoint at every save; copy each save aside.
    train_run(out, "small", overrides, args.image_tokenizer, on_saved=keep)

    rows = []
    for ckpt in sorted(out.glob("ckpt-*")):
        step = int(ckpt.name.split("-")[1])
        model = load_model(ckpt)
        gen = lambda p, n, s, m=model: m.generate_images(p, n, s)  # noqa: E731
        g_in = geneval_scene(gen, "in", args.per_task, 2, 0, progress=False)
        g_ho = geneval_scene(gen, "heldout", args.per_task, 2, 0, progress=False)
        vqa = vqa_scene(model.answer, "eval", 200, 0, progress=False)
        log = [json.loads(x) for x in (out / "train_log.jsonl").read_text().splitlines()]
        seconds = next((r["seconds"] for r in log if r["step"] >= step), log[-1]["seconds"])
        row = {
            "step": step,
            "train_seconds": seconds,
            "geneval_in": g_in["overall"],
            "geneval_heldout": g_ho["overall"],
            "geneval_tasks": g_in["tasks"],
            "vqa": vqa["overall"],
        }
        print(json.dumps(row), flush=True)
        rows.append(row)
    (out / "curve.json").write_text(json.dumps(rows, indent=2))
    plot_curve(rows, out / "curve.png", torch.get_num_threads())
    print(f"wrote {out / 'curve.json'} and {out / 'curve.png'}")


if __name__ == "__main__":
    main()
