"""Tiny image files of every kind a user's data holds, good and bad, made in memory."""

from __future__ import annotations

import io
import struct
import zlib

import numpy as np
from PIL import Image as PILImage


def encode(im: PILImage.Image, fmt: str = "PNG", **kw) -> bytes:
    buf = io.BytesIO()
    im.save(buf, format=fmt, **kw)
    return buf.getvalue()


def png(pixels: np.ndarray) -> bytes:
    return encode(PILImage.fromarray(pixels))


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def raw_png(width: int, height: int, bit_depth: int, colour_type: int, rows: bytes) -> bytes:
    """A PNG written by hand: Pillow cannot write 16-bit RGB, nor a header without pixels."""
    head = struct.pack(">IIBBBBB", width, height, bit_depth, colour_type, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + _chunk(b"IHDR", head)
        + _chunk(b"IDAT", zlib.compress(rows))
        + _chunk(b"IEND", b"")
    )


def png_rgb16(pixels: np.ndarray) -> bytes:
    """(H, W, 3) uint16 -> a 48-bit RGB PNG."""
    h, w, _ = pixels.shape
    rows = b"".join(b"\x00" + pixels[y].astype(">u2").tobytes() for y in range(h))
    return raw_png(w, h, 16, 2, rows)


def png_header_only(width: int, height: int) -> bytes:
    """A PNG whose header claims width x height (a decompression bomb's shape)."""
    return raw_png(width, height, 8, 2, b"")


def jpeg_with_orientation(pixels: np.ndarray, orientation: int) -> bytes:
    im = PILImage.fromarray(pixels)
    exif = PILImage.Exif()
    exif[0x0112] = orientation  # EXIF Orientation
    return encode(im, "JPEG", quality=95, exif=exif.tobytes())


def every_good_kind(rng: np.random.Generator) -> dict[str, bytes]:
    """name -> file bytes, one image of every mode and shape the policy takes."""
    rgb = rng.integers(0, 256, (30, 50, 3), dtype=np.uint8)
    rgba = np.dstack([rgb, np.full((30, 50), 255, np.uint8)])
    rgba[:5, :5, 3] = 0
    palette = PILImage.fromarray(rgb).convert("P", palette=PILImage.Palette.ADAPTIVE, colors=8)
    grey16 = rng.integers(0, 65536, (20, 40), dtype=np.uint16)
    return {
        "rgb.png": png(rgb),
        "grey.png": encode(PILImage.fromarray(rgb[..., 0])),
        "rgba.png": encode(PILImage.fromarray(rgba)),
        "palette.png": encode(palette),
        "palette_transparent.gif": encode(palette, "GIF", transparency=0),
        "grey16.png": encode(PILImage.fromarray(grey16)),
        "rgb16.png": png_rgb16(rng.integers(0, 65536, (24, 24, 3), dtype=np.uint16)),
        "rotated.jpg": jpeg_with_orientation(rgb, 6),
        "cmyk.jpg": encode(PILImage.fromarray(rgb).convert("CMYK"), "JPEG"),
        "bilevel.png": encode(PILImage.fromarray(rgb[..., 0]).convert("1")),
        "tall.png": png(rng.integers(0, 256, (90, 12, 3), dtype=np.uint8)),
    }


# name -> (file bytes, the reason it is counted under); max_pixels is set to 100_000 by the
# tests that use "big.png" (a real image over the limit, refused from its header).
BAD_KINDS = {
    "tiny.png": (png(np.zeros((4, 30, 3), np.uint8)), "too small"),
    "corrupt.png": (b"\x89PNG\r\n\x1a\n not really a png", "unreadable image"),
    "truncated.png": (
        png(np.random.default_rng(0).integers(0, 256, (64, 64, 3), np.uint8))[:900],
        "unreadable image",
    ),
    "text.jpg": (b"hello", "unreadable image"),
    "big.png": (png(np.zeros((400, 400, 3), np.uint8)), "too large"),
    "bomb.png": (png_header_only(20_000, 20_000), "too large"),
    "float.tif": (
        encode(PILImage.fromarray(np.zeros((16, 16), np.float32)), "TIFF"),
        "unsupported image mode",
    ),
}
