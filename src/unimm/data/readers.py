"""Streaming training data besides the built-in world: an exported folder (images + JSONL, the
format `unimm world` writes), WebDataset tar shards, and a weighted mixture of sources.

Every reader is a *source*: a function start_index -> endless iterator of Samples, a pure
function of the index, which is what the trainer needs to give each rank a fixed slice of every
global batch and to resume at the recorded position. Nothing is loaded into memory beyond one
sample (plus, for JSONL, one byte offset per line, so seeking to an index is one `seek`). Bad
samples (unreadable image, missing text, wrong size, broken JSON) are skipped and counted per
reason in a `BadSamples` tally the caller reports; the slot of a bad sample is filled by the next
good one, so sample i is the first good record at or after i and `source(k)` continues exactly
where `source(0)` is after k samples (what makes resume and rank slicing exact on dirty data).
A source made only of bad samples raises instead of spinning.
"""

from __future__ import annotations

import io
import json
import random
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import replace
from itertools import count
from pathlib import Path

import numpy as np

from unimm.data.images import load_image
from unimm.data.sample import Image, Sample, Text

Source = Callable[[int], Iterator[Sample]]


class BadSamples(Counter):
    """reason -> number of samples skipped for it."""

    def report(self) -> str:
        if not self:
            return "no bad samples"
        return f"{sum(self.values())} bad samples skipped (" + ", ".join(
            f"{k}: {v}" for k, v in sorted(self.items())
        ) + ")"  # fmt: skip


def _check_pixels(pixels: np.ndarray, resolution: int) -> None:
    if pixels.shape != (resolution, resolution, 3):
        raise ValueError(f"wrong size {pixels.shape[:2]}, expected {resolution}x{resolution}")


def parse_record(record: dict, load: Callable[[str], np.ndarray], resolution: int) -> Sample:
    """One exported JSONL record -> Sample; ValueError names what is wrong with it."""
    segments = []
    for seg in record.get("segments") or []:
        if "text" in seg:
            if not isinstance(seg["text"], str) or not seg["text"].strip():
                raise ValueError("missing text")
            segments.append(Text(seg["text"]))
        elif "image" in seg:
            pixels = load(seg["image"])
            _check_pixels(pixels, resolution)
            segments.append(Image(pixels))
        else:
            raise ValueError("segment is neither text nor image")
    targets = tuple(record.get("targets") or ())
    if not segments or not targets or any(not 0 <= t < len(segments) for t in targets):
        raise ValueError("missing segments or targets")
    return Sample(segments, targets, str(record.get("task", "data")))


def _reason(e: Exception) -> str:
    if not isinstance(e, ValueError):  # a record of the wrong shape (a list, a string target...)
        return "malformed record"
    text = str(e)
    for key in ("wrong size", "missing text", "not found", "segment", "JSON"):
        if key in text:
            return key
    return "unreadable image"


def _fill_bad_slots(
    records: Iterable[tuple[int, object]],
    decode: Callable[[object], Sample],
    bad: BadSamples,
    n_records: int,
    where: object,
) -> Iterator[Sample]:
    """(index, raw record) -> Samples, one per index: a bad record's slot (and every bad one
    before the next good record) is filled by that next good record, so the stream from any
    start index is a pure function of the index."""
    pending = 0  # slots of bad records waiting for the next good one
    for i, raw in records:
        try:
            sample = decode(raw)
        except (json.JSONDecodeError, UnicodeDecodeError):
            bad["JSON"] += 1
        except (ValueError, TypeError, KeyError, AttributeError) as e:  # never fatal
            bad[_reason(e)] += 1
        else:
            sample.meta["index"] = i
            for _ in range(pending):
                yield replace(sample, meta=dict(sample.meta))
            pending = 0
            yield sample
            continue
        pending += 1
        if pending >= n_records:
            raise ValueError(f"every sample in {where} is bad: {bad.report()}")


def jsonl_folder(folder: str | Path, resolution: int, bad: BadSamples) -> Source:
    """The folder `unimm world --out FOLDER` writes: FOLDER/samples.jsonl + images it names.
    Index i is line i modulo the line count (epochs repeat the file in order)."""
    folder = Path(folder)
    path = folder / "samples.jsonl"
    if not path.is_file():
        raise ValueError(f"{folder} has no samples.jsonl")
    offsets = [0]  # byte offset of every line: seeking is one f.seek, not a scan
    with path.open("rb") as f:
        for line in f:
            offsets.append(offsets[-1] + len(line))
    starts = np.asarray(offsets[:-1], dtype=np.int64)
    n_lines = len(starts)
    if n_lines == 0:
        raise ValueError(f"{path} is empty")

    def lines(start: int) -> Iterator[tuple[int, bytes]]:
        i = start
        while True:  # epochs repeat the file in order
            with path.open("rb") as f:
                f.seek(int(starts[i % n_lines]))
                for line in f:
                    yield i, line
                    i += 1

    def decode(line: bytes) -> Sample:
        record = json.loads(line)
        if not isinstance(record, dict):
            raise ValueError("JSON line is not an object")
        return parse_record(record, lambda p: load_image(folder / p, None), resolution)

    def read(start: int) -> Iterator[Sample]:
        return _fill_bad_slots(lines(start), decode, bad, n_lines, path)

    return read


def webdataset_shards(urls: str | list[str], resolution: int, bad: BadSamples) -> Source:
    """WebDataset tar shards of (image .png/.jpg, caption .txt) pairs -> text-to-image samples.
    Index i is the i-th pair of the shards in order, modulo their total (counted once). A shard
    that cannot be read (missing, truncated tar) is counted once, as "unreadable shard", when the
    pairs are counted; the pairs it still yields are used."""
    import webdataset as wds
    from PIL import Image as PILImage

    def count_shard_error(exn: Exception) -> bool:
        bad["unreadable shard"] += 1
        return True  # continue with the next member / shard

    def pairs(handler=lambda exn: True):  # read passes: shard errors were counted already
        return wds.WebDataset(urls, shardshuffle=False, handler=handler, empty_check=False)

    total = sum(1 for _ in pairs(count_shard_error))
    if total == 0:
        raise ValueError(f"no samples in {urls}")

    def decode(rec: dict) -> Sample:
        data = rec.get("png") or rec.get("jpg") or rec.get("jpeg")
        if data is None:
            raise ValueError("unreadable image: none in the sample")
        text = rec.get("txt", b"").decode("utf-8", "replace").strip()
        if not text:
            raise ValueError("missing text")
        try:
            with PILImage.open(io.BytesIO(data)) as im:
                pixels = np.asarray(im.convert("RGB"))
        except Exception as e:  # PIL raises many types for broken files
            raise ValueError(f"unreadable image: {e}") from None
        _check_pixels(pixels, resolution)
        return Sample([Text(text), Image(pixels)], (1,), "t2i")

    def records(start: int) -> Iterator[tuple[int, dict]]:
        i = start
        while True:
            for k, rec in enumerate(pairs()):
                if k >= i % total:
                    yield i, rec
                    i += 1

    def read(start: int) -> Iterator[Sample]:
        return _fill_bad_slots(records(start), decode, bad, total, urls)

    return read


def mixture(sources: dict[str, tuple[Source, float]], seed: int) -> Source:
    """Index i draws its source from (seed, i) with the given weights and takes that source's
    i-th sample, so the mixture stays a pure function of the index."""
    names = [n for n, (_, w) in sources.items() if w > 0]
    if not names:
        raise ValueError("a mixture needs at least one source with a positive weight")
    weights = [sources[n][1] for n in names]

    def read(start: int) -> Iterator[Sample]:
        for i in count(start):
            name = random.Random(f"{seed}:{i}").choices(names, weights)[0]
            sample = next(sources[name][0](i))
            sample.meta["source"] = name
            yield sample

    return read


def build_source(
    spec: dict[str, float],
    seed: int,
    resolution: int,
    bad: BadSamples,
    tasks: dict[str, float] | None = None,
) -> Source:
    """`train.data` -> one source. spec maps `world`, `folder=PATH` (an exported folder) or
    `wds=SHARDS` (tar shards, brace ranges allowed) to a mixture weight; on the command line
    `train.data=world:0.5,folder=/data/export:0.3,wds=/data/shard-{000..009}.tar:0.2`."""
    from unimm.world.tasks import world_samples

    sources: dict[str, tuple[Source, float]] = {}
    for entry, weight in spec.items():
        kind, _, path = entry.partition("=")
        if not isinstance(weight, int | float) or weight < 0:
            raise ValueError(f"train.data weight of {entry!r} must be a number >= 0, got {weight}")
        if kind == "world" and not path:
            src = lambda start: world_samples("train", seed, tasks, start=start)  # noqa: E731
        elif kind == "folder" and path:
            src = jsonl_folder(path, resolution, bad)
        elif kind == "wds" and path:
            src = webdataset_shards(path, resolution, bad)
        else:
            raise ValueError(f"unknown data source {entry!r}: use world, folder=PATH or wds=SHARDS")
        sources[entry] = (src, float(weight))
    if len(sources) == 1:
        return next(iter(sources.values()))[0]
    return mixture(sources, seed)
