"""LLaVA-style conversation data (captioning, VQA, multi-turn chat about images).

A .json file holding a list of records, or a .jsonl file of one record a line:

    {"id": "0001", "image": "images/0001.jpg",
     "conversations": [{"from": "human", "value": "<image>\\nWhat colour is the car?"},
                       {"from": "gpt", "value": "Red."}]}

`image` is one path or a list of them, relative to data.image_root (default: the JSON file's
folder); each "<image>" in a human turn places the next one, and images no placeholder names go
first. "from" is human/user or gpt/assistant ("role"/"content" keys work too). Every assistant
turn is a target (trained on), as in LLaVA's instruction tuning. A record without images is a
text-only conversation.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from unimm.data.config import DataConfig
from unimm.data.decode import BadRecord, decode_image
from unimm.data.records import Records, read_records, record_offsets
from unimm.data.sample import Image, Sample, Text

PLACEHOLDER = "<image>"
ROLES = {"human": "user", "user": "user", "gpt": "assistant", "assistant": "assistant"}


def is_llava(record: object) -> bool:
    return isinstance(record, dict) and isinstance(record.get("conversations"), list)


def json_array_offsets(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """(byte start, byte end) of every element of a JSON array file, found in one pass (each
    element parsed once and dropped), so reading element i later is one seek and one parse."""
    text = path.read_text("utf-8")
    dec = json.JSONDecoder()

    def skip(pos: int) -> int:
        while pos < len(text) and text[pos] in " \t\r\n":
            pos += 1
        return pos

    pos = skip(0)
    if text[pos : pos + 1] != "[":
        raise ValueError(f"{path} is not a JSON array of records")
    pos, spans = skip(pos + 1), []
    while text[pos : pos + 1] != "]":
        try:
            _, end = dec.raw_decode(text, pos)
        except json.JSONDecodeError as e:
            raise ValueError(f"{path} is not valid JSON: {e}") from None
        spans.append((pos, end))
        pos = skip(end)
        if text[pos : pos + 1] == ",":
            pos = skip(pos + 1)
    # character offsets -> byte offsets (UTF-8 text before each point)
    starts, ends, byte, prev = [], [], 0, 0
    for a, b in spans:
        byte += len(text[prev:a].encode())
        starts.append(byte)
        byte += len(text[a:b].encode())
        ends.append(byte)
        prev = b
    return np.asarray(starts, dtype=np.int64), np.asarray(ends, dtype=np.int64)


def _read_array(path: Path, starts: np.ndarray, ends: np.ndarray):
    n = len(starts)

    def read(start: int) -> Iterator[tuple[int, bytes]]:
        i = start
        with path.open("rb") as f:
            while True:
                f.seek(int(starts[i % n]))
                yield i, f.read(int(ends[i % n] - starts[i % n]))
                i += 1

    return read


def llava(path: str | Path, resolution: int, cfg: DataConfig | None = None) -> Records:
    cfg = cfg or DataConfig()
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"no LLaVA JSON file at {path}")
    if path.suffix == ".jsonl":
        offsets = record_offsets(path)
        n, read = len(offsets), read_records(path, offsets)
    else:
        starts, ends = json_array_offsets(path)
        n, read = len(starts), _read_array(path, starts, ends)
    if n == 0:
        raise ValueError(f"{path} holds no records")
    root = Path(cfg.image_root) if cfg.image_root else path.parent

    def decode(i: int, raw: object) -> Sample:
        record = json.loads(raw)
        if not is_llava(record):
            raise BadRecord("malformed record", "no conversations list")
        return parse_conversation(record, lambda p: decode_image(root / p, resolution, cfg))

    def label(i: int, raw: object) -> str:
        try:
            record = json.loads(raw)
            name = record.get("id", record.get("image"))
        except (ValueError, AttributeError):
            name = None
        where = f"record {i % n + 1}" if path.suffix != ".jsonl" else f"line {i % n + 1}"
        return f"{path.name} {where}" + (f" ({name})" if name is not None else "")

    return Records(n, read, decode, label, str(path), f"LLaVA conversations ({path.name})")


def parse_conversation(record: dict, load) -> Sample:
    """One LLaVA record -> Sample; load(path) -> (pixels, ImageInfo)."""
    paths = record.get("image") or []
    paths = [paths] if isinstance(paths, str) else list(paths)
    if not all(isinstance(p, str) for p in paths):
        raise BadRecord("malformed record", "image must be a path or a list of paths")
    images = [load(p) for p in paths]
    segments: list = []
    targets: list[int] = []
    placed = 0
    for turn in record["conversations"]:
        if not isinstance(turn, dict):
            raise BadRecord("malformed record", "a turn is not an object")
        role = ROLES.get(turn.get("from", turn.get("role")))
        value = turn.get("value", turn.get("content"))
        if role is None or not isinstance(value, str):
            raise BadRecord("malformed record", f"turn {turn!r:.60}")
        if role == "assistant":
            if not value.strip():
                raise BadRecord("missing text", "empty assistant turn")
            targets.append(len(segments))
            segments.append(Text(value.strip(), role="assistant"))
            continue
        for k, part in enumerate(value.split(PLACEHOLDER)):
            if k > 0:
                if placed == len(images):
                    raise BadRecord("malformed record", f"more {PLACEHOLDER} than images")
                segments.append(Image(images[placed][0]))
                placed += 1
            if part.strip():
                segments.append(Text(part.strip()))
    if not targets:
        raise BadRecord("missing text", "no assistant turn")
    first = [Image(pixels) for pixels, _ in images[placed:]]  # images without a placeholder
    segments = first + segments
    targets = [t + len(first) for t in targets]
    n_images = len(images)
    if n_images == 1 and len(segments) == 2 and targets == [1]:
        task = "caption"  # the image and its description, as the world's captions
    elif n_images == 1 and len(segments) == 3 and targets == [2]:
        task = "vqa"
    else:
        task = "conversation"
    meta = {"images": [info for _, info in images]}
    return Sample(segments, tuple(targets), task, meta)
