"""`unimm plot RUN`: the run's curves as PNGs: training loss (train_log.jsonl) and, when the run
has one, evaluation metrics against step (eval_log.jsonl: rows {"step": ..., "<metric>": ...})."""

from __future__ import annotations

import json
from pathlib import Path

from unimm.evaluate.report import plot_loss_curve

EVAL_LOG = "eval_log.jsonl"


def _rows(path: Path) -> list[dict]:
    """The log's rows; an unfinished last line (a run killed mid-write, or one still writing) is
    left out, any other line that is not JSON is an error."""
    lines = path.read_text().splitlines(keepends=True)
    rows = []
    for n, line in enumerate(lines, 1):
        if line.strip():
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:
                if n == len(lines) and not line.endswith("\n"):
                    break
                raise ValueError(f"{path} line {n} is not JSON") from None
    return rows


def plot_run(run_dir: str | Path, out_dir: str | Path | None = None) -> list[Path]:
    run = Path(run_dir)
    log = run / "train_log.jsonl"
    if not log.is_file():
        raise ValueError(f"{run} has no train_log.jsonl: not a training run directory")
    out = Path(out_dir or run)
    paths = [plot_loss_curve(_rows(log), out / "loss_curve.png")]
    if (run / EVAL_LOG).is_file():
        rows = _rows(run / EVAL_LOG)
        keys = sorted({k for r in rows for k, v in r.items() if k != "step" and _num(v)})
        if keys:
            paths.append(plot_loss_curve(rows, out / "eval_curve.png", keys, log_y=False))
    return paths


def _num(v: object) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool)
