"""What every file format shares: a `Records` set (n raw records, readable from any index, and
how one becomes a Sample), the tally of bad records, and the slot filling that turns a set
into a source that is a pure function of the index (unimm.data.readers explains why).
"""

from __future__ import annotations

import itertools
import json
import random
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from unimm.data.decode import BadRecord
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


# What a decoder may raise for a bad record: never fatal, counted under `reason(e)`.
DECODE_ERRORS = (ValueError, TypeError, KeyError, AttributeError, UnicodeDecodeError)


def reason(e: Exception) -> str:
    if isinstance(e, BadRecord):
        return e.reason
    if isinstance(e, json.JSONDecodeError | UnicodeDecodeError):
        return "JSON"
    if not isinstance(e, ValueError):  # a record of the wrong shape (a list, a string target...)
        return "malformed record"
    text = str(e)
    for key in ("missing text", "not found", "segment", "JSON"):
        if key in text:
            return key
    return "unreadable image"


@dataclass(frozen=True)
class Records:
    """n raw records of a file source. read(start) yields (i, raw) for i = start, start + 1, ...
    forever, raw being record i mod n (epochs repeat the records in order); decode(i, raw) makes
    the Sample or raises one of DECODE_ERRORS; label(i, raw) names the record for a person."""

    n: int
    read: Callable[[int], Iterator[tuple[int, object]]]
    decode: Callable[[int, object], Sample]
    label: Callable[[int, object], str]
    where: str  # the path or shards, for messages
    kind: str  # the format, as `unimm train` and `unimm data check` name it
    # read(j) starts at record j with one seek (line and array files); WebDataset shards stream
    seekable: bool = True

    def shuffled(self, seed: int) -> Records:
        """The same records in a fresh seeded order each epoch: stream index i is record
        perm_e[i mod n] of epoch e = i // n, so the stream stays a pure function of the index
        (resume and rank slicing stay exact). Files are often grouped (by class, by source);
        read in file order, whole batches would hold one group. Labels keep naming the file's
        record."""
        if not self.seekable:
            raise ValueError(f"{self.kind} cannot be read out of order")
        n, read, decode, label = self.n, self.read, self.decode, self.label
        orders: dict[int, np.ndarray] = {}

        def record(i: int) -> int:
            epoch = i // n
            if epoch not in orders:
                orders.clear()  # one epoch's order at a time: n int64s
                orders[epoch] = np.random.default_rng([seed, epoch]).permutation(n)
            return int(orders[epoch][i % n])

        def read_shuffled(start: int) -> Iterator[tuple[int, object]]:
            for i in itertools.count(start):
                j = record(i)
                raw = next(iter(read(j)))[1]
                yield i, (j, raw)

        return Records(
            n,
            read_shuffled,
            lambda i, jr: decode(i, jr[1]),
            lambda i, jr: label(jr[0], jr[1]),
            self.where,
            self.kind,
        )

    def source(self, bad: BadSamples) -> Source:
        def read(start: int) -> Iterator[Sample]:
            return fill_bad_slots(self.read(start), self.decode, bad, self.n, self.where)

        return read


def fill_bad_slots(
    records: Iterable[tuple[int, object]],
    decode: Callable[[int, object], Sample],
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
            sample = decode(i, raw)
        except DECODE_ERRORS as e:  # never fatal
            bad[reason(e)] += 1
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


def record_offsets(path: Path, complete: Callable[[bytes], bool] = lambda rec: True) -> np.ndarray:
    """Byte offset of every record of a line-based file (blank lines skipped), so seeking to a
    record is one f.seek: 8 bytes a record, not the file. A record spans lines until
    complete(bytes so far) (a CSV row with a quoted newline spans two)."""
    offsets, start, buf, pos = [], 0, b"", 0
    with path.open("rb") as f:
        for line in f:
            if not buf:
                start = pos
            buf += line
            pos += len(line)
            if complete(buf):
                if buf.strip():
                    offsets.append(start)
                buf = b""
    if buf.strip():
        offsets.append(start)
    return np.asarray(offsets, dtype=np.int64)


def read_records(
    path: Path, offsets: np.ndarray, complete: Callable[[bytes], bool] = lambda rec: True
) -> Callable[[int], Iterator[tuple[int, bytes]]]:
    """start -> (i, bytes of record i mod n) forever, reading on from one seek per epoch."""
    n = len(offsets)

    def read(start: int) -> Iterator[tuple[int, bytes]]:
        i = start
        while True:
            with path.open("rb") as f:
                f.seek(int(offsets[i % n]))
                buf = b""
                for line in f:
                    buf += line
                    if not complete(buf):
                        continue
                    if buf.strip():
                        yield i, buf
                        i += 1
                        if i % n == 0:
                            break  # the epoch's end (a trailing partial record is skipped)
                    buf = b""
                else:
                    if buf.strip():
                        yield i, buf
                        i += 1

    return read


def pair_sample(text: str, pixels: np.ndarray, i: int, seed: int, tasks: dict | None) -> Sample:
    """An (image, caption) pair as a text-to-image or a captioning sample: index i draws which
    from (seed, i) with the weights train.tasks gives t2i and caption (t2i alone when neither
    has one), so the user's captions train both directions, as the world's do."""
    weights = {t: w for t, w in (tasks or {}).items() if t in ("t2i", "caption") and w > 0}
    task = "t2i"
    if len(weights) > 1:
        task = random.Random(f"{seed}:pair:{i}").choices(list(weights), list(weights.values()))[0]
    elif weights:
        task = next(iter(weights))
    if task == "caption":
        return Sample([Image(pixels), Text(text)], (1,), "caption")
    return Sample([Text(text), Image(pixels)], (1,), "t2i")


def within(
    source: Source, length: Callable[[Sample], int], max_len: int, bad: BadSamples
) -> Source:
    """`source` without the samples longer than max_len tokens (counted as "too long for
    model.max_seq_len"): a long caption of the user's would otherwise stop the run. Sample i
    is the first short enough one at or after i, so the source stays a pure function of the
    index (the slot filling above)."""

    def check(i: int, sample: object) -> Sample:
        if length(sample) > max_len:
            raise BadRecord("too long for model.max_seq_len")
        return sample

    def read(start: int) -> Iterator[Sample]:
        stream = ((i, s) for i, s in zip(itertools.count(start), source(start), strict=False))
        return fill_bad_slots(stream, check, bad, 100_000, "train.data")

    return read
