"""`unimm data check SOURCE`: what a data source holds, before a run trains on it.

    unimm data check folder=/data/pets data.text_column=caption --out check/

Reads every record once (or the first --limit), the way training reads them, and reports: the
format found, how many records are good and bad, each bad one with its reason, caption
lengths, image sizes and modes as stored, and how many images data.resize will scale up; it
writes OUT/grid.png (the first good images as the model will see them) and OUT/check.json.
"""

from __future__ import annotations

import argparse
import json
from collections import Counter
from itertools import islice
from pathlib import Path

import numpy as np

from unimm.data.config import DataConfig
from unimm.data.readers import BadSamples, open_records
from unimm.data.records import DECODE_ERRORS, reason
from unimm.data.sample import Image, Text

GRID = 16


def check_source(
    entry: str,
    resolution: int = 64,
    cfg: DataConfig | None = None,
    out: str | Path | None = None,
    limit: int | None = None,
    grid: int = GRID,
) -> dict:
    """Read `entry` (a train.data source other than world) once -> the report as a dict;
    with `out`, also write out/grid.png and out/check.json."""
    if entry == "world":
        raise ValueError("world is the built-in data set: there is nothing to check")
    bad = BadSamples()  # shard-level errors (WebDataset) land here; records are judged below
    records = open_records(entry, resolution, bad, cfg)
    n = records.n if limit is None else min(limit, records.n)
    bad_records, words, chars, sizes, modes, tasks = [], [], [], [], Counter(), Counter()
    shown: list[tuple[np.ndarray, str]] = []
    for i, raw in islice(records.read(0), n):
        try:
            sample = records.decode(i, raw)
        except DECODE_ERRORS as e:
            bad_records.append({"record": records.label(i, raw), "reason": reason(e),
                                "detail": str(e)})  # fmt: skip
            continue
        tasks[sample.task] += 1
        texts = [s.text for s in sample.segments if isinstance(s, Text)]
        words += [len(t.split()) for t in texts]
        chars += [len(t) for t in texts]
        for info in sample.meta.get("images", []):
            sizes.append((info.width, info.height))
            modes[info.mode] += 1
        image = next((s.pixels for s in sample.segments if isinstance(s, Image)), None)
        if image is not None and len(shown) < grid:
            shown.append((image, " | ".join(texts)))
    report = {
        "source": entry,
        "format": records.kind,
        "records": n,
        "good": n - len(bad_records),
        "bad": len(bad_records),
        "bad_by_reason": dict(Counter(b["reason"] for b in bad_records) + bad),
        "bad_records": bad_records,
        "tasks": dict(tasks),
        "text_words": _stats(words),
        "text_chars": _stats(chars),
        "image_width": _stats([w for w, _ in sizes]),
        "image_height": _stats([h for _, h in sizes]),
        "image_modes": dict(modes),
        "images_upscaled": sum(min(w, h) < resolution for w, h in sizes),
        "resolution": resolution,
        "resize": (cfg or DataConfig()).resize,
        "grid_captions": [t for _, t in shown],
    }
    if out is not None:
        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        if shown:
            from unimm.data.images import save_image
            from unimm.evaluate.report import image_grid

            save_image(image_grid([im for im, _ in shown], nrow=4, scale=2), out / "grid.png")
            report["grid"] = str(out / "grid.png")
        (out / "check.json").write_text(json.dumps(report, indent=2))
    return report


def _stats(values: list[int]) -> dict:
    if not values:
        return {}
    a = np.asarray(values)
    return {"min": int(a.min()), "median": float(np.median(a)), "mean": round(float(a.mean()), 1),
            "max": int(a.max())}  # fmt: skip


def format_report(r: dict, show_bad: int = 20) -> str:
    def stats(s: dict) -> str:
        return f"min {s['min']}, median {s['median']:g}, mean {s['mean']:g}, max {s['max']}"

    lines = [
        f"{r['source']}: {r['format']}",
        f"records: {r['records']} ({r['good']} good, {r['bad']} bad)",
    ]
    if r["bad_by_reason"]:
        reasons = ", ".join(f"{k}: {v}" for k, v in sorted(r["bad_by_reason"].items()))
        lines.append(f"bad by reason: {reasons}")
    for b in r["bad_records"][:show_bad]:
        lines.append(f"  {b['record']}: {b['detail']}")
    if len(r["bad_records"]) > show_bad:
        lines.append(f"  ... and {len(r['bad_records']) - show_bad} more (check.json lists all)")
    if r["tasks"]:
        lines.append("samples: " + ", ".join(f"{k} {v}" for k, v in sorted(r["tasks"].items())))
    if r["text_words"]:
        lines.append(f"text length in words: {stats(r['text_words'])}")
        lines.append(f"text length in characters: {stats(r['text_chars'])}")
    if r["image_width"]:
        lines.append(f"image width: {stats(r['image_width'])}")
        lines.append(f"image height: {stats(r['image_height'])}")
        lines.append("image modes: " + ", ".join(f"{k} {v}" for k, v in r["image_modes"].items()))
        lines.append(
            f"to {r['resolution']}x{r['resolution']} by data.resize={r['resize']}; "
            f"{r['images_upscaled']} images have a side under {r['resolution']} px (scaled up)"
        )
    if "grid" in r:
        lines.append(f"grid of the first {len(r['grid_captions'])} good samples: {r['grid']}")
        lines += [f"  {k + 1}. {t[:100]!r}" for k, t in enumerate(r["grid_captions"])]
    return "\n".join(lines)


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "data",
        help="look at training data before a run: unimm data check SOURCE",
        description="Data tools. `unimm data check SOURCE` reads every record of a source the "
        "way training does and reports counts, bad records with reasons, caption lengths and "
        "image sizes, and writes a grid PNG of samples.",
    )
    dsub = p.add_subparsers(dest="data_command", required=True, metavar="DATA_COMMAND")
    c = dsub.add_parser(
        "check",
        help="count records, list bad ones, show statistics, write a sample grid",
        description=__doc__.split("\n\n")[2],
        epilog="SOURCE is a train.data entry: folder=PATH (format detected), imagefolder=PATH, "
        "llava=FILE, wds=SHARDS, unimm=PATH, or a path alone. Overrides: data.resize=pad, "
        "data.text_column=NAME, data.image_root=DIR, data.min_size=N, data.max_pixels=N.",
    )
    c.add_argument("source")
    c.add_argument("--out", default="data_check", help="folder for grid.png and check.json")
    c.add_argument("--resolution", type=int, default=64, help="the model's image size (64)")
    c.add_argument("--limit", type=int, default=None, help="check only the first N records")
    c.add_argument("overrides", nargs="*", metavar="data.KEY=VALUE")


def run(args: argparse.Namespace) -> None:
    from unimm.config import ConfigError, apply_overrides

    wrong = [o for o in args.overrides if not o.startswith("data.")]
    if wrong:
        raise ConfigError(f"unimm data check takes data.* overrides only, got {wrong}")
    cfg = apply_overrides(DataConfig(), [o.removeprefix("data.") for o in args.overrides])
    report = check_source(args.source, args.resolution, cfg, args.out, args.limit)
    print(format_report(report))
    print(f"report: {Path(args.out) / 'check.json'}")
