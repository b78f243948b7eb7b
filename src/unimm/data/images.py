"""Conversions between the uint8 (H, W, 3) images of the data layer and model tensors.

Models see float tensors in [-1, 1], shaped (B, 3, H, W).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch


def to_tensor(
    images: np.ndarray | list[np.ndarray], device: torch.device | str | None = None
) -> torch.Tensor:
    """(H, W, 3) or (B, H, W, 3) uint8 -> (B, 3, H, W) float in [-1, 1], on `device` (the
    uint8 pixels travel, a quarter of the float bytes)."""
    arr = np.stack(images) if isinstance(images, list) else images
    if arr.ndim == 3:
        arr = arr[None]
    t = torch.from_numpy(np.ascontiguousarray(arr)).to(device).permute(0, 3, 1, 2).float()
    return t / 127.5 - 1.0


def to_uint8(images: torch.Tensor) -> np.ndarray:
    """(B, 3, H, W) float in [-1, 1] -> (B, H, W, 3) uint8."""
    x = ((images.detach().float().clamp(-1, 1) + 1.0) * 127.5).round().to(torch.uint8)
    return x.permute(0, 2, 3, 1).cpu().numpy()


READABLE_MODES = ("RGB", "RGBA", "L", "LA", "P")


def load_image(path: str | Path, resolution: int | None = None) -> np.ndarray:
    """Read an image file as (H, W, 3) uint8; with `resolution`, it must be that square size.

    Raises ValueError with the file name when the file is not a readable image or has the
    wrong size, so a CLI user sees which input is at fault.
    """
    from PIL import Image as PILImage
    from PIL import UnidentifiedImageError

    path = Path(path)
    if not path.is_file():
        raise ValueError(f"image file not found: {path}")
    try:
        with PILImage.open(path) as im:
            im.load()
            if im.mode not in READABLE_MODES:
                raise ValueError(
                    f"image {path} has mode {im.mode}; expected 8-bit RGB, RGBA, grey or palette"
                )
            if im.mode in ("RGBA", "LA", "P"):
                # Transparent pixels become the world's white background, not black.
                rgba = im.convert("RGBA")
                rgb = PILImage.new("RGB", rgba.size, (255, 255, 255))
                rgb.paste(rgba, mask=rgba.getchannel("A"))
            else:
                rgb = im.convert("RGB")
    except (UnidentifiedImageError, OSError) as e:
        raise ValueError(f"not a readable image: {path} ({e})") from None
    if resolution is not None and rgb.size != (resolution, resolution):
        raise ValueError(
            f"image {path} is {rgb.size[0]}x{rgb.size[1]}; this model takes "
            f"{resolution}x{resolution} images"
        )
    return np.asarray(rgb, dtype=np.uint8).copy()


def save_image(pixels: np.ndarray, path: str | Path) -> None:
    from PIL import Image as PILImage

    PILImage.fromarray(pixels).save(path)


def uniform_background(
    images: np.ndarray, tolerance: int = 24, share: float = 0.6
) -> tuple[int, int, int] | None:
    """The colour of the images' empty canvas: the median colour of their one-pixel borders
    when at least `share` of the border pixels lie within `tolerance` of it in every channel
    (white for the world's scenes, black for white-on-black drawings); None when the borders
    vary (photographs). images: (N, H, W, 3) uint8."""
    if images.ndim != 4 or images.shape[-1] != 3 or len(images) == 0:
        raise ValueError(f"expected (N, H, W, 3) images, got shape {images.shape}")
    border = np.concatenate(
        [images[:, 0], images[:, -1], images[:, 1:-1, 0], images[:, 1:-1, -1]], axis=1
    ).reshape(-1, 3)
    colour = np.median(border, axis=0)
    near = (np.abs(border.astype(np.int16) - colour) <= tolerance).all(axis=1)
    if near.mean() < share:
        return None
    return tuple(int(round(v)) for v in colour)  # type: ignore[return-value]


def background_cells(images: np.ndarray, grid: tuple[int, int], tolerance: int = 24) -> np.ndarray:
    """(N, gh * gw) bool, raster order: the cells of each image's gh x gw grid whose pixels all
    lie within `tolerance` of that image's own empty-canvas colour (`uniform_background` of its
    border); all False for an image without one. images: (N, H, W, 3) uint8, H and W
    divisible by the grid. What the flow recipes' background weight down-weighs."""
    if images.ndim != 4 or images.shape[-1] != 3:
        raise ValueError(f"expected (N, H, W, 3) images, got shape {images.shape}")
    N, H, W, _ = images.shape
    gh, gw = grid
    if H % gh or W % gw:
        raise ValueError(f"a {gh} x {gw} grid does not divide {H} x {W} images")
    cells = np.zeros((N, gh * gw), dtype=bool)
    for i, image in enumerate(images):
        colour = uniform_background(image[None], tolerance)
        if colour is None:
            continue
        near = (np.abs(image.astype(np.int16) - np.array(colour)) <= tolerance).all(-1)
        cells[i] = near.reshape(gh, H // gh, gw, W // gw).all(axis=(1, 3)).reshape(-1)
    return cells
