"""`unimm eval-spread RUN...`: mean and standard deviation of the headline metrics over runs that
differ only in train.seed, so a change can be told from seed noise.

Each RUN is a run directory holding metrics.json (from `unimm eval`) or the metrics.json file
itself. Where a run directory also holds its checkpoint, the configs are compared and any
difference besides train.seed is listed under the table (a spread over different configs is
not seed noise).
"""

from __future__ import annotations

import json
import math
import statistics
from pathlib import Path

from unimm.checkpoint import CHECKPOINT_DIR

HEADLINE: tuple[tuple[str, str], ...] = (
    ("geneval_in", "GenEval-scene in-distribution"),
    ("geneval_heldout", "GenEval-scene held-out"),
    ("vqa_eval", "VQA-scene"),
    ("vqa_heldout", "VQA-scene held-out"),
    ("caption_eval", "Caption-scene"),
    ("edit_eval", "Edit-scene"),
    ("interleaved_eval", "Interleaved-scene"),
    ("ceiling_in", "Tokenizer ceiling in-distribution"),
    ("ceiling_heldout", "Tokenizer ceiling held-out"),
)


def metrics_path(run: str | Path) -> Path:
    path = Path(run)
    path = path / "metrics.json" if path.is_dir() else path
    if not path.is_file():
        raise FileNotFoundError(f"no metrics.json at {path} (run `unimm eval` on the run first)")
    return path


def seed_spread(runs: list[dict]) -> dict[str, dict]:
    """Per headline metric that every run has: its values, mean and sample standard deviation
    (nan for a single run)."""
    out: dict[str, dict] = {}
    for key, _ in HEADLINE:
        if not all(isinstance(m.get(key), dict) and "overall" in m[key] for m in runs):
            continue
        values = [float(m[key]["overall"]) for m in runs]
        std = statistics.stdev(values) if len(values) > 1 else math.nan
        out[key] = {"values": values, "mean": statistics.fmean(values), "std": std}
    return out


def _run_config(run: Path) -> dict | None:
    """The run's config as a flat {key: value} dict, or None when it holds no checkpoint."""
    ckpt = run / CHECKPOINT_DIR
    if not (ckpt / "config.json").is_file():
        return None
    flat: dict = {}

    def walk(d: dict, prefix: str) -> None:
        for k, v in d.items():
            if isinstance(v, dict):
                walk(v, f"{prefix}{k}.")
            else:
                flat[f"{prefix}{k}"] = v

    walk(json.loads((ckpt / "config.json").read_text())["config"], "")
    return flat


def config_differences(runs: list[str | Path]) -> tuple[list[object], list[str]]:
    """(train.seed of each run, None where unknown; the config keys besides train.seed whose
    values differ among the runs that hold a checkpoint)."""
    configs = [_run_config(Path(r)) if Path(r).is_dir() else None for r in runs]
    seeds = [c.get("train.seed") if c else None for c in configs]
    known = [c for c in configs if c]
    keys = sorted({k for c in known for k in c} - {"train.seed"})
    differ = [k for k in keys if len({json.dumps(c.get(k)) for c in known}) > 1]
    return seeds, differ


def spread_md(runs: list[str | Path]) -> str:
    """The markdown table `unimm eval-spread` prints."""
    metrics = [json.loads(metrics_path(r).read_text()) for r in runs]
    spread = seed_spread(metrics)
    seeds, differ = config_differences(runs)
    head = " | ".join(f"seed {s}" if s is not None else f"run {i + 1}" for i, s in enumerate(seeds))
    lines = [
        f"Seed spread over {len(runs)} runs: {', '.join(str(r) for r in runs)}",
        "",
        f"| metric | mean ± std | {head} |",
        "|---|---|" + "---|" * len(runs),
    ]
    for key, label in HEADLINE:
        if key in spread:
            s = spread[key]
            values = " | ".join(f"{v:.3f}" for v in s["values"])
            lines.append(f"| {label} | {s['mean']:.3f} ± {s['std']:.3f} | {values} |")
    if differ:
        lines += ["", f"Warning: the runs' configs differ besides train.seed: {', '.join(differ)}"]
    return "\n".join(lines) + "\n"
