"""Quality per CPU-minute, before and after: GenEval-scene and VQA-scene against minutes of model
training, one line per recipe version, from the measured runs listed in a JSON file.

    PYTHONPATH=src .venv/bin/python benchmarks/plot_quality_per_minute.py \
        [--data docs/quality_per_minute.json] [--out docs/quality_per_minute.png]

Each point of the data file is a run recorded in BENCHMARKS.md (its "source"); points with
several seeds get their standard deviation as an error bar.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

METRICS = (("geneval", "GenEval-scene (in distribution)"), ("vqa", "VQA-scene"))


def plot(data: dict, out: Path) -> None:
    fig, axes = plt.subplots(1, len(METRICS), figsize=(11, 4.2), sharex=True)
    for ax, (key, title) in zip(axes, METRICS):
        for series in data["series"]:
            pts = sorted(series["points"], key=lambda p: p["minutes"])
            ax.errorbar(
                [p["minutes"] for p in pts],
                [p[key] for p in pts],
                yerr=[p.get(f"{key}_std", 0.0) for p in pts],
                marker="o",
                capsize=3,
                label=series["label"],
            )
        ax.set_title(title)
        ax.set_xlabel("minutes of model training (2-core CPU)")
        ax.set_ylim(0, 1)
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("accuracy")
    axes[0].legend(fontsize=7, loc="upper left")
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", type=Path, default=Path("docs/quality_per_minute.json"))
    ap.add_argument("--out", type=Path, default=Path("docs/quality_per_minute.png"))
    args = ap.parse_args()
    data = json.loads(args.data.read_text())
    for series in data["series"]:
        for p in series["points"]:
            missing = {"minutes", "geneval", "vqa"} - p.keys()
            if missing:
                raise SystemExit(f"{args.data}: a point of {series['label']!r} lacks {missing}")
    plot(data, args.out)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
