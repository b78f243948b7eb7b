"""The one data type every task shares: a sample is an ordered list of segments.

Caption, text-to-image, VQA, edit and interleaved data are all just samples; which segments
are targets decides the task. Recipes turn samples into token sequences (the sequence builder),
so data readers never know which paradigm will consume them.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

ROLES = ("user", "assistant")


@dataclass(frozen=True, slots=True)
class Text:
    """A piece of text. role "assistant" marks a model reply in a conversation's history: it is
    laid out like a target answer (`<assistant> ... <eos>`) without being trained on. Target
    texts are replies whatever their role; every other text is the user's."""

    text: str
    role: str = "user"

    def __post_init__(self) -> None:
        if self.role not in ROLES:
            raise ValueError(f"unknown role {self.role!r}; expected one of {ROLES}")


@dataclass(frozen=True, slots=True)
class Image:
    """An RGB image as a (H, W, 3) uint8 array (the layout PIL and the detector use)."""

    pixels: np.ndarray

    def __post_init__(self) -> None:
        p = self.pixels
        if not isinstance(p, np.ndarray) or p.dtype != np.uint8 or p.ndim != 3 or p.shape[2] != 3:
            shape = getattr(p, "shape", None)
            dtype = getattr(p, "dtype", type(p).__name__)
            raise ValueError(
                f"Image needs a (H, W, 3) uint8 array, got shape {shape} dtype {dtype}"
            )


Segment = Text | Image


@dataclass(slots=True)
class Sample:
    """segments in order; targets = indices of the segments the model must produce."""

    segments: list[Segment]
    targets: tuple[int, ...]
    task: str
    meta: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        for i in self.targets:
            if not 0 <= i < len(self.segments):
                raise ValueError(f"target index {i} outside {len(self.segments)} segments")

    def without_layouts(self) -> Sample:
        """The sample with the layouts it draws after (meta["layouts"], segment indices; the
        built-in world's train.t2i_plan / edit_plan) taken out, its targets renumbered."""
        gone = set(self.meta.get("layouts", ()))
        keep = [i for i in range(len(self.segments)) if i not in gone]
        targets = tuple(keep.index(i) for i in self.targets if i not in gone)
        meta = {k: v for k, v in self.meta.items() if k != "layouts"}
        return Sample([self.segments[i] for i in keep], targets, self.task, meta)
