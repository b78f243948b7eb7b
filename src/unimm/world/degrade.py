"""Degradations that imitate generated images, to measure how the detector copes with them."""

from __future__ import annotations

import numpy as np


def gaussian_blur(image: np.ndarray, sigma: float) -> np.ndarray:
    """Separable Gaussian blur of an (H, W, 3) uint8 image, edges padded with white."""
    if sigma <= 0:
        return image.copy()
    radius = max(1, int(np.ceil(3 * sigma)))
    k = np.exp(-0.5 * (np.arange(-radius, radius + 1) / sigma) ** 2)
    k /= k.sum()
    x = np.pad(
        image.astype(np.float32), ((radius, radius), (radius, radius), (0, 0)), constant_values=255
    )
    h, w = image.shape[:2]
    # (H + 2r, W, 3) after the horizontal pass, then (H, W, 3)
    x = sum(k[i] * x[:, i : i + w] for i in range(len(k)))
    x = sum(k[i] * x[i : i + h] for i in range(len(k)))
    return np.clip(np.rint(x), 0, 255).astype(np.uint8)


def add_noise(image: np.ndarray, sigma: float, rng: np.random.Generator) -> np.ndarray:
    """Additive i.i.d. Gaussian noise per channel (sigma in 0-255 units)."""
    noisy = image.astype(np.float32) + rng.normal(0.0, sigma, image.shape)
    return np.clip(np.rint(noisy), 0, 255).astype(np.uint8)


def jpeg(image: np.ndarray, quality: int) -> np.ndarray:
    """JPEG round trip (block artefacts and chroma subsampling, as in compressed outputs)."""
    import io

    from PIL import Image as PILImage

    buf = io.BytesIO()
    PILImage.fromarray(image).save(buf, format="JPEG", quality=quality)
    buf.seek(0)
    with PILImage.open(buf) as im:
        return np.asarray(im.convert("RGB"), dtype=np.uint8).copy()
