"""Reports: image grids, a loss curve, and report.md + metrics.json for a run directory."""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from unimm.data.images import save_image
from unimm.evaluate.ceiling import ceiling_md
from unimm.evaluate.layouts import layout_fidelity_md
from unimm.evaluate.relation_use import relation_use_md
from unimm.evaluate.taxonomy import failures_md
from unimm.evaluate.token_loss import token_loss_md

GRID_PROMPTS = 8  # prompts shown per GenEval task grid
REPORT_SCALE = 2  # pixel repetition of report images


def image_grid(
    images: Sequence[np.ndarray], nrow: int, pad: int = 2, pad_value: int = 160, scale: int = 1
) -> np.ndarray:
    """Tile (H, W, 3) uint8 images, nrow per row, into one (H', W', 3) uint8 image.

    Smaller images are placed top-left in their cell; the cell is the largest image's size.
    The grey padding keeps white-background scenes apart.
    scale > 1 enlarges each image by pixel repetition (64 px scenes are tiny on screen).
    """
    if not images:
        raise ValueError("image_grid needs at least one image")
    if nrow < 1 or scale < 1:
        raise ValueError(f"nrow and scale must be >= 1, got {nrow}, {scale}")
    if scale > 1:
        images = [im.repeat(scale, axis=0).repeat(scale, axis=1) for im in images]
    h = max(im.shape[0] for im in images)
    w = max(im.shape[1] for im in images)
    rows = math.ceil(len(images) / nrow)
    cols = min(nrow, len(images))
    grid = np.full((rows * (h + pad) + pad, cols * (w + pad) + pad, 3), pad_value, dtype=np.uint8)
    for i, im in enumerate(images):
        r, c = divmod(i, nrow)
        y, x = pad + r * (h + pad), pad + c * (w + pad)
        grid[y : y + im.shape[0], x : x + im.shape[1]] = im
    return grid


def plot_loss_curve(
    log_rows: Sequence[dict],
    path: str | Path,
    keys: Sequence[str] | None = None,
    log_y: bool = True,
) -> Path:
    """Plot every numeric key starting with "loss" (or `keys`) against "step" to a PNG."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    rows = [r for r in log_rows if "step" in r]
    if not rows:
        raise ValueError("plot_loss_curve needs rows with a 'step' key")
    if keys is None:
        keys = sorted(
            {k for r in rows for k, v in r.items() if k.startswith("loss") and _is_num(v)}
        )
    if not keys:
        raise ValueError("no loss keys to plot (expected keys starting with 'loss')")
    fig = Figure(figsize=(7, 4), dpi=110)
    FigureCanvasAgg(fig)  # Agg canvas: works headless, independent of the pyplot backend
    ax = fig.add_subplot(1, 1, 1)
    for k in keys:
        pts = [(r["step"], r[k]) for r in rows if _is_num(r.get(k))]
        if pts:
            xs, ys = zip(*pts, strict=True)
            ax.plot(xs, ys, label=k, linewidth=1.2)
    if log_y and all(r[k] > 0 for r in rows for k in keys if _is_num(r.get(k))):
        ax.set_yscale("log")
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    return path


def _is_num(v: object) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(float(v))


def _is_pixels(v: object) -> bool:
    if isinstance(v, np.ndarray):
        return True
    return isinstance(v, (list, tuple)) and bool(v) and all(isinstance(x, np.ndarray) for x in v)


def to_json(obj: object) -> object:
    """Metrics without images (arrays and lists of arrays are dropped), numpy scalars as
    Python numbers."""
    if isinstance(obj, dict):
        return {str(k): to_json(v) for k, v in obj.items() if not _is_pixels(v)}
    if isinstance(obj, (list, tuple)):
        return [to_json(v) for v in obj if not _is_pixels(v)]
    if isinstance(obj, np.generic):
        return obj.item()
    return obj


def _geneval_md(name: str, res: dict, run_dir: Path) -> list[str]:
    lines = [f"## {name}: GenEval-scene ({res['split']})", "", "| task | accuracy |", "|---|---|"]
    lines += [f"| {t} | {a:.3f} |" for t, a in res["tasks"].items()]
    lines += [f"| **overall** | **{res['overall']:.3f}** |", ""]
    for task in res["tasks"]:
        recs = [r for r in res["records"] if r["task"] == task][:GRID_PROMPTS]
        if not recs or "images" not in recs[0]:
            continue
        n = len(recs[0]["images"])
        grid = image_grid([im for r in recs for im in r["images"]], nrow=n, scale=REPORT_SCALE)
        fname = f"{name}_{task}.png"
        save_image(grid, run_dir / fname)
        lines += [
            f"### {task}",
            "",
            f"![{task}]({fname})",
            "",
            "| row | prompt | correct | detected |",
            "|---|---|---|---|",
        ]
        for i, r in enumerate(recs):
            marks = "".join("✓" if c else "✗" for c in r["correct"])
            lines.append(f"| {i + 1} | {r['prompt']} | {marks} | {'; '.join(r['detected'])} |")
        lines.append("")
    return lines


def _qa_md(name: str, res: dict, run_dir: Path) -> list[str]:
    lines = [
        f"## {name}: VQA-scene ({res['split']})",
        "",
        "| question type | accuracy |",
        "|---|---|",
    ]
    lines += [f"| {t} | {a:.3f} |" for t, a in res["per_qtype"].items()]
    lines += [f"| **overall** | **{res['overall']:.3f}** |", ""]
    shown = [r for r in res["records"] if "image" in r][:8]
    if shown:
        fname = f"{name}_samples.png"
        save_image(
            image_grid([r["image"] for r in shown], nrow=len(shown), scale=REPORT_SCALE),
            run_dir / fname,
        )
        lines += [
            f"![samples]({fname})",
            "",
            "| # | question | answer | prediction |",
            "|---|---|---|---|",
        ]
        lines += [
            f"| {i + 1} | {r['question']} | {r['answer']} | {r['prediction']} |"
            for i, r in enumerate(shown)
        ]
        lines.append("")
    return lines


def _caption_md(name: str, res: dict, run_dir: Path) -> list[str]:
    lines = [
        f"## {name}: Caption-scene ({res['split']})",
        "",
        f"exact match {res['overall']:.3f}, parse rate {res['parse_rate']:.3f} (n = {res['n']})",
        "",
    ]
    shown = [r for r in res["records"] if "image" in r][:8]
    if shown:
        fname = f"{name}_samples.png"
        save_image(
            image_grid([r["image"] for r in shown], nrow=len(shown), scale=REPORT_SCALE),
            run_dir / fname,
        )
        lines += [f"![samples]({fname})", "", "| # | reference | prediction |", "|---|---|---|"]
        lines += [
            f"| {i + 1} | {r['reference']} | {r['prediction']} |" for i, r in enumerate(shown)
        ]
        lines.append("")
    return lines


def _pair_grid(name: str, res: dict, run_dir: Path) -> tuple[list[dict], str]:
    """Save the first records' image pairs as one grid (a row per record); returns the records
    shown and the file name."""
    shown = [r for r in res["records"] if "images" in r][:8]
    fname = f"{name}_samples.png"
    if shown:
        images = [im for r in shown for im in r["images"]]
        save_image(image_grid(images, nrow=2, scale=REPORT_SCALE), run_dir / fname)
    return shown, fname


def _edit_md(name: str, res: dict, run_dir: Path) -> list[str]:
    lines = [
        f"## {name}: Edit-scene ({res['split']})",
        "",
        "Exact: the output is the target scene. Instruction: the asked change is there. "
        "Preservation: share of the objects the instruction does not name that stay as they were.",
        "",
        "| edit | exact | instruction | preservation |",
        "|---|---|---|---|",
    ]
    done = res.get("per_kind_instruction", {})
    kept = res.get("per_kind_preservation", {})

    def cell(table: dict, k: str) -> str:
        return f"{table[k]:.3f}" if k in table else "-"

    lines += [
        f"| {k} | {a:.3f} | {cell(done, k)} | {cell(kept, k)} |" for k, a in res["per_kind"].items()
    ]
    lines += [
        f"| **overall** | **{res['overall']:.3f}** | {cell(res, 'instruction')} | "
        f"{cell(res, 'preservation')} |",
        "",
    ]
    shown, fname = _pair_grid(name, res, run_dir)
    if shown:
        lines += [
            f"![samples]({fname}) (rows: source, output)",
            "",
            "| # | instruction | correct |",
            "|---|---|---|",
        ]
        lines += [f"| {i + 1} | {r['instruction']} | {r['correct']} |" for i, r in enumerate(shown)]
        lines.append("")
    return lines


def _interleaved_md(name: str, res: dict, run_dir: Path) -> list[str]:
    lines = [
        f"## {name}: Interleaved-scene ({res['split']}, {res['n']} episodes)",
        "",
        "Each step is judged against the model's own previous output.",
        "",
        "| step | accuracy given the previous output | all steps so far right |",
        "|---|---|---|",
    ]
    lines += [f"| {k} | {res['per_step'][k]:.3f} | {res['chain'][k]:.3f} |" for k in res["chain"]]
    lines.append("")
    shown, fname = _pair_grid(name, res, run_dir)
    if shown:
        lines += [
            f"![episodes]({fname}) (rows: step 1, step 2)",
            "",
            "| # | caption | instruction | question | answer | right per step |",
            "|---|---|---|---|---|---|",
        ]
        lines += [
            f"| {i + 1} | {r['caption']} | {r['instruction']} | {r['question']} | "
            f"{r['answer']} | {' '.join('y' if c else 'n' for c in r['correct'])} |"
            for i, r in enumerate(shown)
        ]
        lines.append("")
    return lines


def _diagnostics_md(metrics: dict, run_dir: Path) -> list[str]:
    """Where GenEval-scene quality is lost: the tokenizer ceiling, the failure classes of the
    generated images and the image-token loss on objects vs background (each when present)."""
    by_split = {
        kind: {
            split: metrics[f"{kind}_{split}"]
            for split in ("in", "heldout")
            if isinstance(metrics.get(f"{kind}_{split}"), dict)
        }
        for kind in ("geneval", "ceiling")
    }
    body: list[str] = []
    if by_split["ceiling"]:
        body += ceiling_md(by_split["ceiling"], by_split["geneval"])
        for split, res in by_split["ceiling"].items():
            shown = [r for r in res["records"] if "images" in r]
            if shown:
                fname = f"ceiling_{split}_failures.png"
                images = [im for r in shown for im in r["images"]]
                save_image(image_grid(images, nrow=8, scale=REPORT_SCALE), run_dir / fname)
                caption = "pairs of clean render, reconstruction"
                body += [f"![failed reconstructions ({split})]({fname}) ({caption})", ""]
    for split, res in by_split["geneval"].items():
        if "failures" in res:
            body += failures_md(f"the generated images ({split})", res["failures"])
    if isinstance(metrics.get("image_token_loss"), dict):
        body += token_loss_md(metrics["image_token_loss"])
    if isinstance(metrics.get("relation_use"), dict):
        body += relation_use_md(metrics["relation_use"])
    if isinstance(metrics.get("layout_fidelity"), dict):
        body += layout_fidelity_md(metrics["layout_fidelity"])
    if not body:
        return []
    return ["## Diagnostics: where GenEval-scene quality is lost", "", *body]


def _edit_chain_md(name: str, res: dict, run_dir: Path) -> list[str]:
    steps = " | ".join(f"step {k + 1}" for k in range(res["steps"]))
    cells = " | ".join(f"{a:.3f}" for a in res["per_step"])
    return [
        f"## {name}: {res['steps']}-edit chains ({res['n']} episodes)",
        "",
        "Each step edits the model's own previous output; a chain counts when every step does.",
        "",
        f"| {steps} | whole chain |",
        "|" + "---|" * (res["steps"] + 1),
        f"| {cells} | **{res['overall']:.3f}** |",
        "",
    ]


_SECTIONS = {
    "geneval_scene": _geneval_md,
    "vqa_scene": _qa_md,
    "caption_scene": _caption_md,
    "edit_scene": _edit_md,
    "edit_chain": _edit_chain_md,
    "interleaved_scene": _interleaved_md,
}


def write_report(
    run_dir: str | Path,
    metrics: dict,
    title: str = "unimm evaluation",
    loss_rows: Sequence[dict] | None = None,
    notes: str | None = None,
) -> Path:
    """Write report.md, metrics.json, GenEval grids per task and sample Q&A into run_dir.

    metrics maps a name (e.g. "geneval_in") to a harness result or to a plain scalar/dict;
    results of geneval_scene / vqa_scene / caption_scene / edit_scene get their own sections.
    Returns the path of report.md.
    """
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    lines = [f"# {title}", ""]
    if notes:
        lines += [notes, ""]
    summary = []
    for name, res in metrics.items():
        if isinstance(res, dict) and _is_num(res.get("overall")):
            summary.append(f"| {name} | {res['overall']:.3f} |")
        elif _is_num(res):
            summary.append(f"| {name} | {res:.4g} |")
    if summary:
        lines += ["| metric | value |", "|---|---|", *summary, ""]
    lines += _diagnostics_md(metrics, run_dir)
    if loss_rows:
        plot_loss_curve(loss_rows, run_dir / "loss.png")
        lines += ["## Training loss", "", "![loss](loss.png)", ""]
    for name, res in metrics.items():
        section = _SECTIONS.get(res.get("benchmark", "")) if isinstance(res, dict) else None
        if section is not None:
            lines += section(name, res, run_dir)
    (run_dir / "metrics.json").write_text(json.dumps(to_json(metrics), indent=2))
    path = run_dir / "report.md"
    path.write_text("\n".join(lines) + "\n")
    return path
