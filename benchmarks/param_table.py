"""One table of trained runs: parameter counts (total, active per token, trained, frozen parts)
next to the scores their `unimm eval` wrote, so recipes trained at the same budget read side by
side.

    PYTHONPATH=src python benchmarks/param_table.py LABEL=RUN [LABEL=RUN ...]

RUN is a run directory (its checkpoint/ and metrics.json); a missing score prints "-". Counts
come from the loaded checkpoint (`UnifiedModel.describe`), never from the run's log.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from unimm.pipeline import load_checkpoint

SCORES = (
    ("GenEval in", "geneval_in"),
    ("GenEval held-out", "geneval_heldout"),
    ("VQA eval", "vqa_eval"),
    ("VQA held-out", "vqa_heldout"),
    ("caption", "caption_eval"),
)


def millions(n: int | None) -> str:
    return "-" if n is None else f"{n / 1e6:.2f}M"


def row(label: str, run: Path) -> list[str]:
    d = load_checkpoint(run)[0].describe()
    total = d["parameters"]
    metrics_path = run / "metrics.json"
    metrics = json.loads(metrics_path.read_text()) if metrics_path.is_file() else {}
    scores = [f"{metrics[key]['overall']:.3f}" if key in metrics else "-" for _, key in SCORES]
    return [
        label,
        d["recipe"],
        millions(total),
        millions(d.get("active_parameters", total)),
        millions(d.get("trained_parameters", total)),
        millions(d.get("image_tokenizer_parameters")),
        millions(d.get("semantic_encoder_parameters")),
        *scores,
    ]


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("runs", nargs="+", metavar="LABEL=RUN")
    args = ap.parse_args(argv)
    header = [
        "run",
        "recipe",
        "parameters",
        "active per token",
        "trained",
        "image tokenizer (frozen)",
        "semantic encoder (frozen)",
        *(name for name, _ in SCORES),
    ]
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for spec in args.runs:
        label, sep, path = spec.partition("=")
        if not sep or not label or not path:
            ap.error(f"expected LABEL=RUN, got {spec!r}")
        run = Path(path)
        if not run.is_dir():
            ap.error(f"{spec}: no such run directory")
        print("| " + " | ".join(row(label, run)) + " |")


if __name__ == "__main__":
    main()
