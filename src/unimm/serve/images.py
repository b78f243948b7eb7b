"""Images in and out of requests: data: URIs, uploads, allowed local files, PNG replies."""

from __future__ import annotations

import base64
import io
from pathlib import Path
from urllib.parse import unquote, urlparse

import numpy as np
from PIL import Image as PILImage

from unimm.serve.config import ServeConfig
from unimm.serve.errors import APIError


def read_image_bytes(raw: bytes, param: str, cfg: ServeConfig) -> np.ndarray:
    if len(raw) > cfg.max_image_bytes:
        raise APIError(413, f"image larger than {cfg.max_image_bytes} bytes", param)
    try:
        with PILImage.open(io.BytesIO(raw)) as im:
            # Refuse decompression bombs before decoding: a small file can claim a huge image.
            if im.width * im.height > 4096 * 4096:
                raise APIError(413, f"image of {im.width}x{im.height} pixels is too large", param)
            return np.asarray(im.convert("RGB"), dtype=np.uint8)
    except APIError:
        raise
    except Exception as e:  # PIL raises many types for non-image bytes
        raise APIError(400, f"{param} bytes are not a readable image", param) from e


def decode_data_uri(url: str, cfg: ServeConfig) -> np.ndarray:
    raw_b64 = url.split(";base64,", 1)[1]
    if len(raw_b64) > cfg.max_image_bytes * 4 // 3 + 4:
        raise APIError(413, f"image larger than {cfg.max_image_bytes} bytes", "image_url")
    try:
        raw = base64.b64decode(raw_b64, validate=True)
    except ValueError as e:
        raise APIError(400, f"invalid base64 in image_url: {e}", "image_url") from e
    return read_image_bytes(raw, "image_url", cfg)


def read_local_image(url: str, cfg: ServeConfig) -> np.ndarray:
    """A path or file:// URL, allowed only inside the folders the server was started with."""
    if not cfg.image_dirs:
        raise APIError(
            403,
            "local image paths are disabled; start the server with --allow-image-dir DIR",
            "image_url",
        )
    path_text = unquote(urlparse(url).path) if url.startswith("file://") else url
    try:
        path = Path(path_text).resolve()  # resolves .. and symlinks before the check
    except (OSError, ValueError) as e:
        raise APIError(400, f"bad image path {url!r}", "image_url") from e
    if not any(path.is_relative_to(d) for d in cfg.image_dirs):
        raise APIError(403, f"{path} is outside the allowed image folders", "image_url")
    if not path.is_file():
        raise APIError(404, f"no image file at {path}", "image_url")
    if path.stat().st_size > cfg.max_image_bytes:
        raise APIError(413, f"image larger than {cfg.max_image_bytes} bytes", "image_url")
    return read_image_bytes(path.read_bytes(), "image_url", cfg)


def read_image_url(url: str, cfg: ServeConfig) -> np.ndarray:
    if url.startswith("data:"):
        if not url.startswith("data:image/") or ";base64," not in url:
            raise APIError(400, "image_url must be a data:image/...;base64, URI", "image_url")
        return decode_data_uri(url, cfg)
    if url.startswith(("http://", "https://")):
        raise APIError(
            400, "image_url must be a data: URI or a local path, not a web URL", "image_url"
        )
    return read_local_image(url, cfg)


def resize(pixels: np.ndarray, side: int) -> np.ndarray:
    if pixels.shape[:2] == (side, side):
        return pixels
    return np.asarray(PILImage.fromarray(pixels).resize((side, side)), dtype=np.uint8)


def encode_png(pixels: np.ndarray) -> str:
    buf = io.BytesIO()
    PILImage.fromarray(pixels).save(buf, format="PNG")
    return base64.b64encode(buf.getvalue()).decode()


def png_data_uri(pixels: np.ndarray) -> str:
    return "data:image/png;base64," + encode_png(pixels)
