"""Streaming training data besides the built-in world: unimm's export folder (images + JSONL, the
format `unimm world` writes), Hugging Face imagefolder (unimm.data.imagefolder), LLaVA
conversation JSON (unimm.data.llava), WebDataset tar shards, and a weighted mixture of sources.

Every reader is a *source*: a function start_index -> endless iterator of Samples, a pure
function of the index, which is what the trainer needs to give each rank a fixed slice of every
global batch and to resume at the recorded position. Nothing is loaded into memory beyond one
sample (plus, for JSONL, CSV and JSON arrays, one byte offset per record, so seeking to an index
is one `seek`). Images of any size and mode are brought to the model's resolution by the run's
`data` policy (unimm.data.decode). Bad samples (unreadable, too small or too large image,
missing text, broken JSON) are skipped and counted per reason in a `BadSamples` tally the
caller reports; the slot of a bad sample is filled by the next
good one, so sample i is the first good record at or after i and `source(k)` continues exactly
where `source(0)` is after k samples (what makes resume and rank slicing exact on dirty data).
A source made only of bad samples raises instead of spinning.
"""

from __future__ import annotations

import json
import random
from collections.abc import Iterator, Mapping
from itertools import count
from pathlib import Path
from typing import Any

from unimm.data.config import TEXT_COLUMNS, DataConfig
from unimm.data.decode import BadRecord, decode_image
from unimm.data.records import (
    BadSamples,
    Records,
    Source,
    pair_sample,
    read_records,
    record_offsets,
)
from unimm.data.sample import Image, Sample, Text

__all__ = ["BadSamples", "Source", "build_source", "jsonl_folder", "mixture", "webdataset_shards"]

KINDS = ("folder", "unimm", "imagefolder", "llava", "wds")
LOOKED_FOR = (
    "samples.jsonl (unimm export), metadata.jsonl or metadata.csv (Hugging Face imagefolder), "
    "a .json / .jsonl of LLaVA conversations, .tar shards (WebDataset)"
)


def parse_record(record: dict, load) -> Sample:
    """One exported JSONL record -> Sample; load(path) -> (pixels, ImageInfo). ValueError
    names what is wrong with it."""
    segments, infos = [], []
    for seg in record.get("segments") or []:
        if "text" in seg:
            if not isinstance(seg["text"], str) or not seg["text"].strip():
                raise ValueError("missing text")
            segments.append(Text(seg["text"]))
        elif "image" in seg:
            pixels, info = load(seg["image"])
            segments.append(Image(pixels))
            infos.append(info)
        else:
            raise ValueError("segment is neither text nor image")
    targets = tuple(record.get("targets") or ())
    if not segments or not targets or any(not 0 <= t < len(segments) for t in targets):
        raise ValueError("missing segments or targets")
    return Sample(segments, targets, str(record.get("task", "data")), {"images": infos})


def export_records(folder: str | Path, resolution: int, cfg: DataConfig | None = None) -> Records:
    """The folder `unimm world --out FOLDER` writes: FOLDER/samples.jsonl + images it names."""
    folder = Path(folder)
    path = folder / "samples.jsonl"
    if not path.is_file():
        raise ValueError(f"{folder} has no samples.jsonl")
    offsets = record_offsets(path)  # seeking is one f.seek, not a scan
    if len(offsets) == 0:
        raise ValueError(f"{path} is empty")

    def decode(i: int, line: object) -> Sample:
        record = json.loads(line)
        if not isinstance(record, dict):
            raise ValueError("JSON line is not an object")
        return parse_record(record, lambda p: decode_image(folder / p, resolution, cfg))

    def label(i: int, line: object) -> str:
        return f"samples.jsonl line {i % len(offsets) + 1}"

    read = read_records(path, offsets)
    return Records(len(offsets), read, decode, label, str(path), "unimm export (samples.jsonl)")


def jsonl_folder(
    folder: str | Path, resolution: int, bad: BadSamples, cfg: DataConfig | None = None
) -> Source:
    """unimm's export folder as a source. Index i is record i modulo the record count (epochs
    repeat the file in order)."""
    return export_records(folder, resolution, cfg).source(bad)


def wds_records(
    urls: str | list[str],
    resolution: int,
    bad: BadSamples,
    cfg: DataConfig | None = None,
    seed: int = 0,
    tasks: dict[str, float] | None = None,
) -> Records:
    """WebDataset tar shards of (image .png/.jpg/.jpeg/.webp, caption .txt or a .json with a
    text column) -> image-caption pairs. Index i is the i-th pair of the shards in order, modulo
    their total (counted once). A shard that cannot be read (missing, truncated tar) is counted
    once, as "unreadable shard", when the pairs are counted; the pairs it still yields are used."""
    import webdataset as wds

    cfg = cfg or DataConfig()

    def count_shard_error(exn: Exception) -> bool:
        bad["unreadable shard"] += 1
        return True  # continue with the next member / shard

    def pairs(handler=lambda exn: True):  # read passes: shard errors were counted already
        return wds.WebDataset(urls, shardshuffle=False, handler=handler, empty_check=False)

    total = sum(1 for _ in pairs(count_shard_error))
    if total == 0:
        raise ValueError(f"no samples in {urls}")

    def caption(rec: dict) -> str:
        if "txt" in rec:
            return rec["txt"].decode("utf-8", "replace").strip()
        if "json" in rec:
            meta = json.loads(rec["json"])
            columns = [cfg.text_column] if cfg.text_column else TEXT_COLUMNS
            for c in columns:
                if isinstance(meta, dict) and isinstance(meta.get(c), str):
                    return meta[c].strip()
        return ""

    def decode(i: int, rec: object) -> Sample:
        data = next((rec[k] for k in ("png", "jpg", "jpeg", "webp") if k in rec), None)
        if data is None:
            raise BadRecord("unreadable image", "none in the sample")
        text = caption(rec)
        if not text:
            raise BadRecord("missing text")
        pixels, info = decode_image(data, resolution, cfg)
        sample = pair_sample(text, pixels, i, seed, tasks)
        sample.meta["images"] = [info]
        return sample

    def read(start: int) -> Iterator[tuple[int, dict]]:
        i = start
        while True:
            for k, rec in enumerate(pairs()):
                if k >= i % total:
                    yield i, rec
                    i += 1

    def label(i: int, rec: object) -> str:
        return f"{Path(str(rec.get('__url__', ''))).name} {rec.get('__key__', i % total)}"

    return Records(total, read, decode, label, str(urls), "WebDataset shards", seekable=False)


def webdataset_shards(
    urls: str | list[str],
    resolution: int,
    bad: BadSamples,
    cfg: DataConfig | None = None,
    seed: int = 0,
    tasks: dict[str, float] | None = None,
) -> Source:
    """WebDataset shards as a source (see wds_records); pairs are text-to-image samples, or
    also captioning ones when `tasks` weighs caption (records.pair_sample)."""
    return wds_records(urls, resolution, bad, cfg, seed, tasks).source(bad)


def detect(path: Path) -> tuple[str, Path | list[str]]:
    """A folder or file -> (format, what its reader takes); ValueError names what was looked for."""
    from unimm.data.imagefolder import find_metadata
    from unimm.data.llava import is_llava

    if path.is_file():
        if path.suffix == ".tar":
            return "wds", [str(path)]
        if path.name == "samples.jsonl":
            return "unimm", path.parent
        if path.suffix in (".json", ".jsonl") and is_llava(_first_record(path)):
            return "llava", path
        raise ValueError(f"cannot tell the format of {path}: looked for {LOOKED_FOR}")
    if not path.is_dir():
        raise ValueError(f"no such file or folder: {path}")
    if (path / "samples.jsonl").is_file():
        return "unimm", path
    if find_metadata(path) is not None:
        return "imagefolder", path
    shards = sorted(str(p) for p in path.glob("*.tar"))
    if shards:
        return "wds", shards
    found = [p for p in sorted(path.glob("*.json*")) if is_llava(_first_record(p))]
    if len(found) == 1:
        return "llava", found[0]
    if len(found) > 1:
        names = ", ".join(p.name for p in found)
        raise ValueError(f"{path} holds several LLaVA files ({names}): name one with llava=FILE")
    raise ValueError(f"cannot tell the format of folder {path}: looked for {LOOKED_FOR}")


def _first_record(path: Path) -> object:
    """The first record of a .jsonl, or of a .json array (read only as far as needed)."""
    try:
        with path.open("rb") as f:
            if path.suffix == ".jsonl":
                line = next((x for x in f if x.strip()), b"")
                return json.loads(line)
            head = f.read(1 << 20).decode("utf-8", "ignore").lstrip()
        if head.startswith("["):
            return json.JSONDecoder().raw_decode(head[1:].lstrip())[0]
        return json.loads(head)
    except (ValueError, OSError):
        return None


def open_records(
    entry: str,
    resolution: int,
    bad: BadSamples,
    cfg: DataConfig | None = None,
    seed: int = 0,
    tasks: dict[str, float] | None = None,
) -> Records:
    """One `train.data` entry other than `world` -> its Records: KIND=PATH with KIND one of
    folder (format detected), unimm, imagefolder, llava, wds, or a bare path (detected)."""
    from unimm.data.imagefolder import imagefolder
    from unimm.data.llava import llava

    kind, eq, path = entry.partition("=")
    if not eq:
        kind, path = "folder", entry
        if not Path(path).exists():
            raise ValueError(f"unknown data source {entry!r}: use world, {', '.join(KINDS)}=PATH")
    if kind not in KINDS or not path:
        raise ValueError(f"unknown data source {entry!r}: use world or {'|'.join(KINDS)}=PATH")
    target: Path | list[str] | str = path
    if kind == "folder":
        kind, target = detect(Path(path))
    if kind == "unimm":
        return export_records(target, resolution, cfg)
    if kind == "imagefolder":
        return imagefolder(target, resolution, cfg, seed, tasks)
    if kind == "llava":
        return llava(target, resolution, cfg)
    return wds_records(target, resolution, bad, cfg, seed, tasks)


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
    data: DataConfig | None = None,
    world: Mapping[str, Any] | None = None,
) -> Source:
    """`train.data` -> one source. spec maps `world` or a file source (see open_records) to a
    mixture weight; on the command line
    `train.data=world:0.5,folder=/data/export:0.3,wds=/data/shard-{000..009}.tar:0.2`, or one
    source alone (`train.data=folder=/data/pets`, weight 1). world: keyword options of the
    built-in world's stream (unimm.world.tasks.world_samples: vqa_questions, object_ramp, ...)."""
    from unimm.world.tasks import world_samples

    sources: dict[str, tuple[Source, float]] = {}
    for entry, weight in spec.items():
        if not isinstance(weight, int | float) or weight < 0:
            raise ValueError(f"train.data weight of {entry!r} must be a number >= 0, got {weight}")
        if entry == "world":
            src = lambda start: world_samples(  # noqa: E731
                "train", seed, tasks, start=start, **(world or {})
            )
        else:
            records = open_records(entry, resolution, bad, data, seed, tasks)
            if (data is None or data.shuffle) and records.seekable:
                records = records.shuffled(seed)
            src = records.source(bad)
        sources[entry] = (src, float(weight))
    if len(sources) == 1:
        return next(iter(sources.values()))[0]
    return mixture(sources, seed)
