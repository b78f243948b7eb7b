"""OUT/compare.json and OUT/report.md of `unimm compare`: per recipe the mean and 95 % Student-t
interval over seeds of every score, speed and size; quality against training compute; the
recipes' images of the same prompts side by side; and, for each pair of recipes and headline
metric, whether the intervals separate them at this budget."""

from __future__ import annotations

import math
from itertools import combinations
from pathlib import Path

from unimm.checkpoint import write_json
from unimm.compare.figures import plot_quality_vs_compute, side_by_side
from unimm.compare.plan import Plan
from unimm.compare.run import GRID_IMAGES, QUALITY, SAMPLES
from unimm.compare.stats import Interval, separated, si, t_interval

CONFIDENCE = 0.95
CURVE_PNG = "quality_vs_compute.png"
SAMPLES_PNG = "samples.png"
LABELS = {
    "geneval_in": "GenEval-scene in-distribution",
    "geneval_heldout": "GenEval-scene held-out",
    "vqa_eval": "VQA-scene",
    "vqa_heldout": "VQA-scene held-out",
    "caption_eval": "Caption-scene",
    "edit_eval": "Edit-scene",
    "edit_heldout": "Edit-scene held-out",
    "interleaved_eval": "Interleaved-scene",
    "interleaved_heldout": "Interleaved-scene held-out",
    "images_per_s": "images/s (generation)",
    "train_tokens_per_s": "training tokens/s",
    "train_seconds": "training seconds",
    "train_tokens": "training tokens",
    "train_flops": "training FLOPs",
    "train_steps": "training steps",
    "parameters": "parameters",
    "active_parameters": "active parameters per token",
    "trained_parameters": "trained parameters",
}
COSTS = tuple(k for k in LABELS if k not in QUALITY)
SEPARATION_KEYS = (*QUALITY, "images_per_s", "train_tokens_per_s")


def label(key: str) -> str:
    head, _, task = key.partition("/")
    return f"{LABELS[head]}: {task}" if task else LABELS[key]


def number(key: str, v: float) -> str:
    if key in COSTS:  # counts and rates span orders of magnitude
        return si(v)
    return f"{v:.3f}"  # scores in [0, 1]


def cell(key: str, iv: Interval) -> str:
    if iv.n == 1:
        return number(key, iv.mean)
    if iv.std == 0:  # a parameter count, or a token budget met exactly
        return number(key, iv.mean)
    return f"{number(key, iv.mean)} ± {number(key, iv.half_width)}"


def summarize(plan: Plan, results: dict[str, dict]) -> dict[str, dict[str, Interval]]:
    """recipe -> metric -> interval over its finished seeds (metrics every seed has)."""
    out: dict[str, dict[str, Interval]] = {}
    for recipe in plan.recipes:
        runs = sorted((r for r in results.values() if r["recipe"] == recipe), key=_seed)
        if not runs:
            continue
        keys = [k for k in runs[0]["metrics"] if all(k in r["metrics"] for r in runs)]
        out[recipe] = {
            k: t_interval([float(r["metrics"][k]) for r in runs], CONFIDENCE) for k in keys
        }
    return out


def row_keys(summary: dict[str, dict[str, Interval]]) -> list[str]:
    """Headline scores in QUALITY's order, GenEval-scene's tasks under theirs, then costs."""
    present = {k for metrics in summary.values() for k in metrics}
    rows = []
    for key in QUALITY:
        if key in present:
            rows.append(key)
            tasks = {k for k in present if k.startswith(key + "/")}
            rows += sorted(tasks, key=lambda k: _first_position(summary, k))
    return rows + [k for k in COSTS if k in present]


def separation(summary: dict[str, dict[str, Interval]]) -> list[dict]:
    """For each pair of recipes and headline metric both have: separated or not, in words."""
    out = []
    for a, b in combinations(summary, 2):
        for key in SEPARATION_KEYS:
            if key not in summary[a] or key not in summary[b]:
                continue
            ia, ib = summary[a][key], summary[b][key]
            apart = separated(ia, ib)
            values = f"{_interval_text(key, ia)} vs {_interval_text(key, ib)}"
            if apart:
                higher = a if ia.mean > ib.mean else b
                verdict = f"separated, {higher} higher ({values})"
            elif ia.n < 2 or ib.n < 2:
                verdict = f"not separated at this budget (one seed gives no interval: {values})"
            else:
                verdict = f"not separated at this budget ({values})"
            sentence = f"{label(key)}, {a} vs {b}: {verdict}."
            out.append({"metric": key, "a": a, "b": b, "separated": apart, "sentence": sentence})
    return out


def curves(plan: Plan, results: dict[str, dict]) -> dict[str, list[dict]]:
    """recipe -> curve points over its seeds: the states saved at the same fraction of the
    budget (by position), then the final checkpoint; FLOPs averaged, scores as intervals."""
    out = {}
    for recipe in plan.recipes:
        runs = [r["curve"] for r in results.values() if r["recipe"] == recipe]
        if not runs:
            continue
        k = min(len(c) for c in runs)  # a corrupt state may have cost a seed one point
        aligned = [[*c[: k - 1], c[-1]] for c in runs]
        points = []
        for i in range(k):
            at = [c[i] for c in aligned]
            keys = [m for m in at[0]["metrics"] if all(m in p["metrics"] for p in at)]
            points.append(
                {
                    "flops": sum(p["flops"] for p in at) / len(at),
                    "tokens": sum(p["tokens"] for p in at) / len(at),
                    "metrics": {m: t_interval([p["metrics"][m] for p in at]) for m in keys},
                }
            )
        out[recipe] = points
    return out


def write_compare(plan: Plan, out: Path, results: dict[str, dict], errors: dict[str, str]) -> Path:
    """Write OUT/compare.json, OUT/report.md and its figures; returns the report's path."""
    summary = summarize(plan, results)
    seps = separation(summary)
    curve = curves(plan, results)
    curve_png = plot_quality_vs_compute(curve, out / CURVE_PNG)
    first = {}  # recipe -> its lowest finished seed's run, whose samples are shown
    for r in sorted(results.values(), key=_seed):
        first.setdefault(r["recipe"], r)
    samples = [(recipe, out / "runs" / first[recipe]["run"] / SAMPLES) for recipe in summary]
    samples_png = side_by_side(samples, out / SAMPLES_PNG) if samples else None
    write_json(
        out / "compare.json",
        {
            "plan": plan.to_json(),
            "confidence": CONFIDENCE,
            "recipes": {
                recipe: {
                    k: {**iv.to_dict(), "values": _values(results, recipe, k)}
                    for k, iv in metrics.items()
                }
                for recipe, metrics in summary.items()
            },
            "separation": seps,
            "curve": {
                recipe: [
                    {**p, "metrics": {k: iv.to_dict() for k, iv in p["metrics"].items()}}
                    for p in points
                ]
                for recipe, points in curve.items()
            },
            "runs": results,
            "failed": errors,
        },
    )
    lines = _header(plan, summary, errors)
    lines += _table(summary)
    if curve_png is not None:
        lines += [
            "## Quality against compute",
            "",
            f"![quality against compute]({CURVE_PNG})",
            "",
            f"Each curve: the training states saved at each 1/{plan.curve.points} of the budget, "
            f"scored with a reduced protocol ({plan.curve.per_task} prompts per GenEval task x "
            f"1 image, {plan.curve.questions} questions, {plan.curve.captions} captions), then "
            "the final checkpoint with the full one; mean over seeds, bars the 95 % intervals.",
            "",
        ]
    if samples_png is not None:
        prompts = first[next(iter(summary))]["sample_prompts"]
        seeds = ", ".join(f"{r} seed {first[r]['seed']}" for r in summary)
        lines += ["## Samples", "", f"![samples]({SAMPLES_PNG})", ""]
        lines += [f"{GRID_IMAGES} images per prompt ({seeds}); rows, top to bottom:", ""]
        lines += [f"{i + 1}. {p}" for i, p in enumerate(prompts)] + [""]
    lines += ["## Separated or not", ""]
    lines += [f"- {s['sentence']}" for s in seps] or ["(one recipe: nothing to compare)"]
    lines += ["", *_runs_table(results)]
    path = out / "report.md"
    path.write_text("\n".join(lines) + "\n")
    return path


def _header(plan: Plan, summary: dict, errors: dict[str, str]) -> list[str]:
    e = plan.eval
    lines = [
        f"# unimm compare: {', '.join(plan.recipes)} at {plan.budget.text}",
        "",
        f"Budget {plan.budget.describe()}, preset `{plan.preset}`, seeds "
        f"{', '.join(map(str, plan.seeds))}"
        + (f", overrides `{' '.join(plan.overrides)}`" if plan.overrides else "")
        + ". The tokenizers trained before the budget for the preset's fixed time. "
        f"Evaluation: {e.per_task} prompts per GenEval-scene task x {e.images_per_prompt} images, "
        f"{e.questions} VQA questions, {e.captions} captions per split. Cells: mean ± the "
        f"half-width of the {CONFIDENCE:.0%} Student-t interval over seeds (n in the last row); "
        "FLOPs are 6 x trained parameters x training tokens.",
        "",
    ]
    if errors:
        lines += [
            "**Failed runs** (not in the table; `--resume` retries them): "
            + "; ".join(f"{k}: {v}" for k, v in sorted(errors.items())),
            "",
        ]
    missing = [r for r in plan.recipes if r not in summary]
    if missing:
        lines += [f"No finished run of: {', '.join(missing)}.", ""]
    return lines


def _table(summary: dict[str, dict[str, Interval]]) -> list[str]:
    recipes = list(summary)
    lines = ["## Results", "", "| metric | " + " | ".join(recipes) + " |"]
    lines.append("|---|" + "---|" * len(recipes))
    for key in row_keys(summary):
        cells = [cell(key, summary[r][key]) if key in summary[r] else "-" for r in recipes]
        lines.append(f"| {label(key)} | " + " | ".join(cells) + " |")
    n = [str(next(iter(summary[r].values())).n) for r in recipes]
    lines += ["| seeds (n) | " + " | ".join(n) + " |", ""]
    return lines


def _runs_table(results: dict[str, dict]) -> list[str]:
    keys = ("geneval_in", "vqa_eval", "caption_eval", "train_tokens", "train_flops")
    lines = ["## Runs", "", "| run | " + " | ".join(label(k) for k in keys) + " | seconds |"]
    lines.append("|---|" + "---|" * (len(keys) + 1))
    for name in sorted(results):
        m = results[name]["metrics"]
        cells = [number(k, m[k]) if k in m else "-" for k in keys]
        cells.append(number("train_seconds", m["train_seconds"]))
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return lines


def _interval_text(key: str, iv: Interval) -> str:
    if math.isnan(iv.half_width):
        return number(key, iv.mean)
    return f"{number(key, iv.mean)} [{number(key, iv.low)}, {number(key, iv.high)}]"


def _values(results: dict[str, dict], recipe: str, key: str) -> list[float]:
    runs = sorted((r for r in results.values() if r["recipe"] == recipe), key=_seed)
    return [r["metrics"][key] for r in runs]


def _seed(result: dict) -> int:
    return result["seed"]


def _first_position(summary: dict[str, dict[str, Interval]], key: str) -> int:
    for metrics in summary.values():
        if key in metrics:
            return list(metrics).index(key)
    return 0
