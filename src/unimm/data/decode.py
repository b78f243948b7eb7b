"""Any image file -> the model's (R, R, 3) uint8 pixels, by the run's `data.resize` policy.

Modes: 8-bit RGB as is; grey, bilevel, CMYK and YCbCr converted; transparency (RGBA, LA,
palette with a transparent colour) composited on white, the world's background; 16-bit grey
scaled to 8 bits (65535 -> 255); JPEGs turned upright by their EXIF orientation. Bad files
raise `BadRecord` with the reason the readers count them under: "unreadable image" (not an
image, truncated, corrupt), "too small" (a side under data.min_size), "too large" (more than
data.max_pixels, refused from the header before any pixel is decoded), "unsupported image
mode" (float images and the like, whose range is unknown).
"""

from __future__ import annotations

import io
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from unimm.data.config import DataConfig

WHITE = (255, 255, 255)
SIXTEEN_BIT = ("I;16", "I;16B", "I;16L", "I;16N", "I")  # Pillow's 16-bit (and 32-bit int) grey
TRANSPARENT = ("RGBA", "LA", "PA", "RGBa", "La")


class BadRecord(ValueError):
    """A record or image that is skipped; `reason` is the name it is counted under."""

    def __init__(self, reason: str, detail: str = ""):
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason


@dataclass(frozen=True, slots=True)
class ImageInfo:
    """What the file held before the policy (size upright, as EXIF turns it), for statistics."""

    width: int
    height: int
    mode: str


def decode_image(
    data: bytes | str | Path, resolution: int, cfg: DataConfig | None = None
) -> tuple[np.ndarray, ImageInfo]:
    """Image bytes or a file path -> ((resolution, resolution, 3) uint8, what the file held)."""
    from PIL import Image as PILImage
    from PIL import ImageOps, UnidentifiedImageError

    cfg = cfg or DataConfig()
    if not isinstance(data, bytes) and not Path(data).is_file():
        raise BadRecord("image not found", str(data))
    try:
        with warnings.catch_warnings():
            # Pillow warns of (and past twice its limit refuses) decompression bombs at open.
            warnings.simplefilter("error", PILImage.DecompressionBombWarning)
            im = PILImage.open(io.BytesIO(data) if isinstance(data, bytes) else data)
        with im:
            check_size(im.width, im.height, cfg)
            upright = im.getexif().get(0x0112) in (5, 6, 7, 8)  # EXIF turns it a quarter
            info = ImageInfo(*(im.size[::-1] if upright else im.size), im.mode)
            if im.format == "JPEG":  # decode at 1/2, 1/4 or 1/8 scale, still >= the target
                im.draft(None, (resolution, resolution))
            im = ImageOps.exif_transpose(im)  # a copy, decoded
            pixels = np.asarray(fit(to_rgb(im), resolution, cfg.resize), dtype=np.uint8)
    except (PILImage.DecompressionBombError, PILImage.DecompressionBombWarning) as e:
        raise BadRecord("too large", str(e)) from None
    except BadRecord:
        raise
    except (UnidentifiedImageError, OSError, SyntaxError, EOFError, ValueError) as e:
        # Pillow raises all of these for corrupt or truncated files
        raise BadRecord("unreadable image", f"{_name(data)} ({e})") from None
    return pixels.copy(), info


def check_size(width: int, height: int, cfg: DataConfig) -> None:
    if width * height > cfg.max_pixels:
        raise BadRecord("too large", f"{width}x{height} is over data.max_pixels={cfg.max_pixels}")
    if min(width, height) < cfg.min_size:
        raise BadRecord("too small", f"{width}x{height}, a side under data.min_size={cfg.min_size}")


def to_rgb(im):
    """A PIL image of any mode -> an 8-bit RGB PIL image (see the module docstring)."""
    from PIL import Image as PILImage

    if im.mode in SIXTEEN_BIT:
        grey = np.clip(np.asarray(im, dtype=np.float64) / 257.0, 0, 255).round()
        return PILImage.fromarray(grey.astype(np.uint8)).convert("RGB")
    if (im.mode == "P" and "transparency" in im.info) or im.mode in TRANSPARENT:
        rgba = im.convert("RGBA")
        rgb = PILImage.new("RGB", rgba.size, WHITE)
        rgb.paste(rgba, mask=rgba.getchannel("A"))
        return rgb
    if im.mode in ("RGB", "L", "1", "P", "CMYK", "YCbCr", "RGBX"):
        return im.convert("RGB")
    raise BadRecord("unsupported image mode", im.mode)


def fit(im, resolution: int, resize: str):
    """An RGB PIL image -> (resolution, resolution) by the policy (DataConfig.resize)."""
    from PIL import Image as PILImage
    from PIL import ImageOps

    size = (resolution, resolution)
    if im.size == size:
        return im
    bicubic = PILImage.Resampling.BICUBIC  # antialiased when shrinking
    if resize == "center_crop":
        return ImageOps.fit(im, size, bicubic)
    if resize == "pad":
        return ImageOps.pad(im, size, bicubic, color=WHITE)
    if resize == "stretch":
        return im.resize(size, bicubic)
    raise ValueError(f"unknown data.resize {resize!r}")


def _name(data: bytes | str | Path) -> str:
    return f"{len(data)} bytes" if isinstance(data, bytes) else str(data)
