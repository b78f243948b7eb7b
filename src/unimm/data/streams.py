"""What the tokenizers and the semantic encoder learn from, drawn from `train.data` through the
same `build_source` the model trains on: a stream of images, of image-caption pairs, and a
text corpus. A run whose data is the world alone keeps the world's own generators (the tuned
renders of unimm.train.*_trainer); any other data reaches every part that learns."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from itertools import islice
from typing import Any

import numpy as np

from unimm.data.config import DataConfig
from unimm.data.readers import BadSamples, Source, build_source, open_records
from unimm.data.sample import Image, Text

# The world tasks the text tokenizer reads: every kind of sentence the world says.
TEXT_TASKS = {"t2i": 1.0, "caption": 1.0, "vqa": 1.0, "edit": 1.0}
PATIENCE = 10_000  # samples without an image before an image stream gives up


def world_only(spec: dict[str, float]) -> bool:
    return {k for k, w in spec.items() if w > 0} == {"world"}


def describe(spec: dict[str, float]) -> str:
    """train.data in words, saying when the built-in world is mixed with the user's data."""
    if world_only(spec):
        return "the built-in scene world"
    total = sum(spec.values())
    shares = ", ".join(f"{k} {100 * w / total:.0f} %" for k, w in spec.items() if w > 0)
    if spec.get("world", 0) > 0:
        return f"a mix of the built-in scene world and your data ({shares})"
    return f"your data ({shares})"


def images(source: Source, start: int = 0) -> Iterator[np.ndarray]:
    """Every image of every sample in order (a t2i target, a VQA input, an edit's two images)."""
    since = 0
    for sample in source(start):
        found = [s.pixels for s in sample.segments if isinstance(s, Image)]
        since = 0 if found else since + 1
        if since >= PATIENCE:
            raise ValueError(f"train.data gave {PATIENCE} samples in a row without an image")
        yield from found


def captioned_images(source: Source, start: int = 0) -> Iterator[tuple[np.ndarray, str]]:
    """(image, its text) for every sample with exactly one image: a caption, or a question with
    its answer; what a contrastive image-text encoder learns from."""
    since = 0
    for sample in source(start):
        pics = [s.pixels for s in sample.segments if isinstance(s, Image)]
        texts = [s.text for s in sample.segments if isinstance(s, Text)]
        since = 0 if len(pics) == 1 and texts else since + 1
        if since >= PATIENCE:
            raise ValueError(f"train.data gave {PATIENCE} samples in a row without image + text")
        if since == 0:
            yield pics[0], " ".join(texts)


def texts(
    spec: dict[str, float],
    n: int,
    seed: int,
    resolution: int,
    data: DataConfig | None = None,
    bad: BadSamples | None = None,
    world: Mapping[str, Any] | None = None,
) -> list[str]:
    """The text tokenizer's corpus: the texts of about n samples, each source's share by its
    weight; a file source gives at most one epoch (repeating a small data set adds nothing to
    a BPE). The world alone gives exactly the texts of its first n samples of every task,
    drawn with the stream options `world` (build_source)."""
    bad = BadSamples() if bad is None else bad
    total = sum(w for w in spec.values() if w > 0)
    out: list[str] = []
    for entry, weight in spec.items():
        if weight <= 0:
            continue
        share = round(n * weight / total)
        if entry == "world":
            source = build_source({"world": 1.0}, seed, resolution, bad, TEXT_TASKS, world=world)
        else:
            records = open_records(entry, resolution, bad, data, seed)
            source, share = records.source(bad), min(share, records.n)
        for sample in islice(source(0), share):
            out += [s.text for s in sample.segments if isinstance(s, Text)]
    return out


def take(stream: Iterator[np.ndarray], n: int) -> np.ndarray:
    """The next n images of a stream as one (n, R, R, 3) uint8 array."""
    return np.stack([next(stream) for _ in range(n)])
