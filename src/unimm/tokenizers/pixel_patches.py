"""Raw pixel patches as continuous image tokens: the no-VAE baseline of the continuous recipes.

An image (B, 3, H, W) in [-1, 1] becomes (B, N, d) tokens, N = (H / p)^2, d = 3 p^2, then is
normalised per channel, (x - shift) / scale, with shift and scale measured on world images
(`fit`): flow matching starts from N(0, I) noise, so the data should have about unit variance
(SD3's latent shift/scale, arXiv 2403.03206). The scene world is mostly white, so raw pixels
have mean ~0.8 and std ~0.5; without this the noise would dwarf the objects.

A continuous image tokenizer (this one, or the VAE) offers: `grid`, `latent_dim`,
`encode(images) -> (B, N, d)`, `decode(latents) -> images`, `save_pretrained` /
`from_pretrained`. Legend: B batch, p patch size, h w token grid, N = h * w, d = latent_dim.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

import torch
from torch import nn

from unimm.checkpoint import read_json, write_json
from unimm.config import ConfigError, from_dict, to_dict

PATCHES_CONFIG = "patches_config.json"


@dataclass(kw_only=True)
class PatchConfig:
    resolution: int = 64
    patch: int = 8
    shift: float = 0.0
    scale: float = 1.0

    def __post_init__(self) -> None:
        if self.patch <= 0 or self.resolution % self.patch:
            raise ValueError(
                f"patches.resolution ({self.resolution}) must be a multiple of "
                f"patches.patch ({self.patch})"
            )
        if self.scale <= 0:
            raise ValueError(f"patches.scale must be > 0, got {self.scale}")


def patchify(x: torch.Tensor, p: int) -> torch.Tensor:
    """(B, C, H, W) -> (B, h*w, p*p*C), raster order of patches, (row, col, channel) inside."""
    B, C, H, W = x.shape
    h, w = H // p, W // p
    x = x.reshape(B, C, h, p, w, p).permute(0, 2, 4, 3, 5, 1)  # (B, h, w, p, p, C)
    return x.reshape(B, h * w, p * p * C)


def unpatchify(t: torch.Tensor, p: int, h: int, w: int, channels: int) -> torch.Tensor:
    """Inverse of patchify: (B, h*w, p*p*C) -> (B, C, h*p, w*p)."""
    B = t.shape[0]
    x = t.reshape(B, h, w, p, p, channels).permute(0, 5, 1, 3, 2, 4)  # (B, C, h, p, w, p)
    return x.reshape(B, channels, h * p, w * p)


class PixelPatches(nn.Module):
    """No parameters to train; an nn.Module only so recipes treat every tokenizer alike."""

    kind = "pixels"

    def __init__(self, config: PatchConfig) -> None:
        super().__init__()
        self.config = config
        n = config.resolution // config.patch
        self.grid: tuple[int, int] = (n, n)
        self.latent_dim = 3 * config.patch**2

    def _check(self, images: torch.Tensor) -> None:
        r = self.config.resolution
        if images.ndim != 4 or tuple(images.shape[1:]) != (3, r, r):
            raise ValueError(f"expected images shaped (B, 3, {r}, {r}), got {tuple(images.shape)}")

    def encode(self, images: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) in [-1, 1] -> (B, N, d) normalised patch tokens."""
        self._check(images)
        return (patchify(images.float(), self.config.patch) - self.config.shift) / self.config.scale

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """(B, N, d) -> (B, 3, H, W) in [-1, 1]."""
        n = self.grid[0] * self.grid[1]
        if latents.ndim != 3 or tuple(latents.shape[1:]) != (n, self.latent_dim):
            raise ValueError(
                f"expected latents shaped (B, {n}, {self.latent_dim}), got {tuple(latents.shape)}"
            )
        x = latents.float() * self.config.scale + self.config.shift
        return unpatchify(x, self.config.patch, *self.grid, 3).clamp(-1.0, 1.0)

    def fit(self, images: torch.Tensor) -> PixelPatches:
        """A copy whose shift/scale give `images` zero mean and unit variance overall."""
        raw = patchify(images.float(), self.config.patch)
        cfg = replace(self.config, shift=float(raw.mean()), scale=float(raw.std()))
        return PixelPatches(cfg)

    def save_pretrained(self, directory: str | Path) -> None:
        d = Path(directory)
        d.mkdir(parents=True, exist_ok=True)
        write_json(d / PATCHES_CONFIG, to_dict(self.config))

    @classmethod
    def from_pretrained(cls, directory: str | Path) -> PixelPatches:
        path = Path(directory) / PATCHES_CONFIG
        try:
            return cls(from_dict(PatchConfig, read_json(path)))
        except (ConfigError, TypeError) as e:
            raise ValueError(f"bad pixel-patch config {path}: {e}") from None
