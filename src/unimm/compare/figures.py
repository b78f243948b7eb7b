"""The compare report's figures: quality against training compute (a curve per recipe, the
points its training states saved along the budget) and the recipes' images of the same
prompts side by side."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

PANELS = (
    ("geneval_in", "GenEval-scene"),
    ("vqa_eval", "VQA-scene"),
    ("caption_eval", "Caption-scene"),
)


def plot_quality_vs_compute(curves: dict[str, list[dict]], path: Path) -> Path | None:
    """curves: recipe -> points, each {"flops": mean FLOPs, "metrics": {key: stats.Interval}}; one
    panel per metric of PANELS that some recipe has, error bars the intervals over seeds.
    None when no recipe has a point to draw."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    panels = [
        (key, label)
        for key, label in PANELS
        if any(key in p["metrics"] for points in curves.values() for p in points)
    ]
    if not panels:
        return None
    fig = Figure(figsize=(4.2 * len(panels), 3.6), dpi=110)
    FigureCanvasAgg(fig)  # headless, whatever pyplot's backend
    for i, (key, label) in enumerate(panels):
        ax = fig.add_subplot(1, len(panels), i + 1)
        for recipe, points in curves.items():
            pts = [(p["flops"], p["metrics"][key]) for p in points if key in p["metrics"]]
            if not pts:
                continue
            xs = [x for x, _ in pts]
            ys = [iv.mean for _, iv in pts]
            err = [0.0 if math.isnan(iv.half_width) else iv.half_width for _, iv in pts]
            ax.errorbar(xs, ys, yerr=err, marker="o", capsize=3, linewidth=1.2, label=recipe)
        if all(x > 0 for points in curves.values() for x in (p["flops"] for p in points)):
            ax.set_xscale("log")
        ax.set_xlabel("training FLOPs (6 x trained parameters x tokens)")
        ax.set_title(label)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    return path


def side_by_side(panels: list[tuple[str, Path]], path: Path, gap: int = 12) -> Path:
    """Put images next to each other, each under its label (a recipe's samples.png)."""
    label_h = 16
    images = [np.asarray(Image.open(p).convert("RGB")) for _, p in panels]
    height = label_h + max(im.shape[0] for im in images)
    width = sum(im.shape[1] for im in images) + gap * (len(images) - 1)
    canvas = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(canvas)
    x = 0
    for (label, _), im in zip(panels, images):
        draw.text((x + 2, 2), label, fill="black")  # PIL's built-in bitmap font
        canvas.paste(Image.fromarray(im), (x, label_h))
        x += im.shape[1] + gap
    path.parent.mkdir(parents=True, exist_ok=True)
    canvas.save(path)
    return path
