"""Hugging Face `imagefolder` data sets: FOLDER/metadata.jsonl or FOLDER/metadata.csv, one row
per image, with `file_name` (relative to the folder) and the caption in a text column
(data.text_column; by default the first of "text", "caption" that the rows have). Rows with
`question` and `answer` columns (and no caption column) are VQA samples instead.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Callable
from itertools import islice
from pathlib import Path

from unimm.data.config import TEXT_COLUMNS, DataConfig
from unimm.data.decode import BadRecord, decode_image
from unimm.data.records import Records, pair_sample, read_records, record_offsets
from unimm.data.sample import Image, Sample, Text

METADATA = ("metadata.jsonl", "metadata.csv")


def csv_complete(rec: bytes) -> bool:
    """A CSV record is whole when its quotes pair up (a quoted field may hold a newline)."""
    return rec.count(b'"') % 2 == 0


def find_metadata(folder: Path) -> Path | None:
    for name in METADATA:
        if (folder / name).is_file():
            return folder / name
    return None


def imagefolder(
    folder: str | Path,
    resolution: int,
    cfg: DataConfig | None = None,
    seed: int = 0,
    tasks: dict[str, float] | None = None,
) -> Records:
    cfg = cfg or DataConfig()
    folder = Path(folder)
    meta = find_metadata(folder)
    if meta is None:
        raise ValueError(f"{folder} has no {' or '.join(METADATA)} (Hugging Face imagefolder)")
    if meta.suffix == ".csv":
        offsets = record_offsets(meta, csv_complete)
        if len(offsets) < 2:
            raise ValueError(f"{meta} has no rows under its header")
        with meta.open("rb") as f:
            f.seek(int(offsets[0]))
            header = next(csv.reader(io.StringIO(f.readline().decode("utf-8-sig"))))
        offsets = offsets[1:]

        def parse(raw: bytes) -> dict:
            row = next(csv.reader(io.StringIO(raw.decode("utf-8"))))
            if len(row) != len(header):
                raise BadRecord("malformed record", f"{len(row)} fields, header has {len(header)}")
            return dict(zip(header, row))

        columns = set(header)
        read = read_records(meta, offsets, csv_complete)
    else:
        offsets = record_offsets(meta)
        if len(offsets) == 0:
            raise ValueError(f"{meta} is empty")

        def parse(raw: bytes) -> dict:
            row = json.loads(raw)
            if not isinstance(row, dict):
                raise BadRecord("malformed record", "a metadata line is not an object")
            return row

        read = read_records(meta, offsets)
        columns = set()
        for _, raw in islice(read(0), min(len(offsets), 100)):
            try:
                columns |= set(parse(raw))
            except (ValueError, UnicodeDecodeError):
                continue
    if "file_name" not in columns:
        raise ValueError(f"{meta} has no file_name column (columns: {', '.join(sorted(columns))})")
    column = text_column(columns, cfg, meta)
    decode = _decoder(parse, folder, column, resolution, cfg, seed, tasks)

    def label(i: int, raw: object) -> str:
        try:
            return f"{meta.name} row {i % len(offsets) + 1} ({parse(raw).get('file_name')})"
        except (ValueError, UnicodeDecodeError):
            return f"{meta.name} row {i % len(offsets) + 1}"

    kind = f"imagefolder ({meta.name}, " + (
        "question/answer columns)" if column is None else f"text column {column!r})"
    )
    return Records(len(offsets), read, decode, label, str(folder), kind)


def text_column(columns: set[str], cfg: DataConfig, meta: Path) -> str | None:
    """The caption column, or None for question/answer rows; ValueError names what was tried."""
    if cfg.text_column is not None:
        if cfg.text_column not in columns:
            raise ValueError(
                f"{meta} has no column data.text_column={cfg.text_column!r} "
                f"(columns: {', '.join(sorted(columns))})"
            )
        return cfg.text_column
    for name in TEXT_COLUMNS:
        if name in columns:
            return name
    if {"question", "answer"} <= columns:
        return None
    raise ValueError(
        f"{meta} has no text column: looked for {', '.join(map(repr, TEXT_COLUMNS))} and "
        f"question/answer (columns: {', '.join(sorted(columns))}); set data.text_column=NAME"
    )


def _decoder(
    parse: Callable[[bytes], dict],
    folder: Path,
    column: str | None,
    resolution: int,
    cfg: DataConfig,
    seed: int,
    tasks: dict[str, float] | None,
) -> Callable[[int, object], Sample]:
    def decode(i: int, raw: object) -> Sample:
        row = parse(raw)
        name = row.get("file_name")
        if not isinstance(name, str) or not name:
            raise BadRecord("malformed record", "no file_name")
        texts = [row.get(c) for c in (("question", "answer") if column is None else (column,))]
        if any(not isinstance(t, str) or not t.strip() for t in texts):
            raise BadRecord("missing text")
        pixels, info = decode_image(folder / name, resolution, cfg)
        if column is None:
            q, a = (t.strip() for t in texts)
            sample = Sample([Image(pixels), Text(q), Text(a)], (2,), "vqa")
        else:
            sample = pair_sample(texts[0].strip(), pixels, i, seed, tasks)
        sample.meta["images"] = [info]
        return sample

    return decode
