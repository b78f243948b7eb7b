"""How user images and records become training samples: the run config's `data` section."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

# Tried in order when data.text_column is not set (Hugging Face imagefolder, WebDataset .json).
TEXT_COLUMNS = ("text", "caption")


@dataclass(kw_only=True)
class DataConfig:
    """Policy for images of any size and mode, and where captions are read from.

    resize: how an image that is not the model's square resolution is brought to it.
      center_crop: scale the shorter side to the resolution, crop the middle (default; keeps
        the aspect ratio, loses the ends of the longer side);
      pad: scale the longer side to the resolution, pad with white (keeps the whole image);
      stretch: scale each side on its own (keeps the whole image, distorts shapes).
    An image already at the resolution is used as it is, pixel for pixel.
    """

    resize: Literal["center_crop", "pad", "stretch"] = "center_crop"
    # The caption column of an imagefolder's metadata (or a WebDataset sample's .json); None
    # tries TEXT_COLUMNS in order.
    text_column: str | None = None
    # LLaVA JSON: the folder its image paths are relative to (default: the JSON file's folder).
    image_root: str | None = None
    min_size: int = 8  # an image with a side under this many pixels is skipped ("too small")
    # An image with more pixels is skipped ("too large") from its header, before it is decoded.
    max_pixels: int = 40_000_000
    # Read file sources (export, imagefolder, LLaVA) in a fresh seeded order each epoch
    # (Records.shuffled): files are often grouped by class or source, and in file order whole
    # batches would hold one group. WebDataset shards stream in order: shuffle them when
    # writing them, as WebDataset advises.
    shuffle: bool = True

    def __post_init__(self) -> None:
        if self.resize not in ("center_crop", "pad", "stretch"):
            raise ValueError(f"data.resize must be center_crop, pad or stretch: {self.resize!r}")
        if self.min_size < 1 or self.max_pixels < 1:
            raise ValueError("data.min_size and data.max_pixels must be positive")
