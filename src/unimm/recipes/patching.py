"""How Transfusion turns a grid of continuous tokens into backbone tokens and back
(arXiv 2408.11039, Sec. 3.2: "a simple linear layer, or up and down blocks of a U-Net").

A continuous image tokenizer gives N = h * w tokens of d channels on an (h, w) grid. With
`patch` p, one backbone token covers p x p grid cells, so an image takes N / p^2 sequence slots.

- `LinearPatching`: space-to-depth, then one linear layer (p = 1: a linear layer per token, the
  recipe's default); out: one linear layer, then depth-to-space.
- `UNetDown` / `UNetUp`: the U-Net option. Down: 3x3 conv to `width` channels, ResNet blocks
  conditioned on the time embedding, a p x p stride-p conv to the backbone width. Up: the
  mirror (stride-p transposed conv, ResNet blocks, 3x3 conv to d). The blocks see each token's
  neighbourhood on the grid, which linear patches do not (docs/LOG.md: Transfusion on linear
  pixel patches drew each 8x8 patch in its own colour).

Legend: M images, h w the tokenizer grid, g = (h / p) * (w / p) backbone tokens, d token
channels, D backbone width, C U-Net width.
"""

from __future__ import annotations

import math

import torch.nn.functional as F
from torch import Tensor, nn


def to_grid(x: Tensor, grid: tuple[int, int]) -> Tensor:
    """(M, h * w, c) -> (M, c, h, w)."""
    return x.transpose(1, 2).reshape(x.shape[0], x.shape[2], *grid)


def from_grid(y: Tensor) -> Tensor:
    """(M, c, h, w) -> (M, h * w, c)."""
    return y.flatten(2).transpose(1, 2)


def space_to_depth(x: Tensor, grid: tuple[int, int], p: int) -> Tensor:
    """(M, h * w, c) -> (M, g, p * p * c): each token the p x p cells of its patch, raster order."""
    (h, w), c = grid, x.shape[-1]
    y = x.reshape(x.shape[0], h // p, p, w // p, p, c).permute(0, 1, 3, 2, 4, 5)
    return y.reshape(x.shape[0], (h // p) * (w // p), p * p * c)


def depth_to_space(y: Tensor, grid: tuple[int, int], p: int) -> Tensor:
    """The inverse of `space_to_depth`: (M, g, p * p * c) -> (M, h * w, c)."""
    (h, w), c = grid, y.shape[-1] // (p * p)
    x = y.reshape(y.shape[0], h // p, w // p, p, p, c).permute(0, 1, 3, 2, 4, 5)
    return x.reshape(y.shape[0], h * w, c)


class LinearPatching(nn.Linear):
    """in (inward): (M, h * w, d) -> (M, g, D); out: (M, g, D) -> (M, h * w, d). An nn.Linear
    (same parameter names), so with p = 1 it is exactly the plain per-token linear layer."""

    def __init__(self, c_in: int, c_out: int, grid: tuple[int, int], patch: int, inward: bool):
        p2 = patch * patch
        super().__init__(c_in * p2, c_out) if inward else super().__init__(c_in, c_out * p2)
        self.grid, self.patch, self.inward = grid, patch, inward

    def forward(self, x: Tensor) -> Tensor:
        if self.patch == 1:
            return super().forward(x)
        if self.inward:
            return super().forward(space_to_depth(x, self.grid, self.patch))
        return depth_to_space(super().forward(x), self.grid, self.patch)


def _groups(channels: int) -> int:
    return math.gcd(channels, 32)


class ResBlock(nn.Module):
    """GroupNorm, SiLU, 3x3 conv, twice, the time embedding as a scale/shift of the second norm
    (the DDPM/ADM ResNet block, arXiv 2105.05233); (M, C, h, w), cond (M, D)."""

    def __init__(self, width: int, cond_dim: int) -> None:
        super().__init__()
        self.norm1 = nn.GroupNorm(_groups(width), width)
        self.conv1 = nn.Conv2d(width, width, 3, padding=1)
        self.modulation = nn.Linear(cond_dim, 2 * width)
        self.norm2 = nn.GroupNorm(_groups(width), width)
        self.conv2 = nn.Conv2d(width, width, 3, padding=1)

    def forward(self, x: Tensor, cond: Tensor) -> Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        scale, shift = self.modulation(F.silu(cond))[:, :, None, None].chunk(2, dim=1)
        h = self.norm2(h) * (1 + scale) + shift
        return x + self.conv2(F.silu(h))


class UNetDown(nn.Module):
    """Latents (M, h * w, d) and time embedding (M, D) -> backbone tokens (M, g, D)."""

    def __init__(
        self, d: int, dim: int, width: int, grid: tuple[int, int], patch: int, blocks: int
    ) -> None:
        super().__init__()
        self.grid = grid
        self.conv_in = nn.Conv2d(d, width, 3, padding=1)
        self.blocks = nn.ModuleList(ResBlock(width, dim) for _ in range(blocks))
        self.down = nn.Conv2d(width, dim, patch, stride=patch)

    def forward(self, x: Tensor, cond: Tensor) -> Tensor:
        y = self.conv_in(to_grid(x, self.grid))  # (M, C, h, w)
        for block in self.blocks:
            y = block(y, cond)
        return from_grid(self.down(y))  # (M, g, D)


class UNetUp(nn.Module):
    """Backbone hidden states (M, g, D) and time embedding (M, D) -> velocities (M, h * w, d).
    The last conv starts at zero (as the linear head does): first the mean velocity is learnt."""

    def __init__(
        self, d: int, dim: int, width: int, grid: tuple[int, int], patch: int, blocks: int
    ) -> None:
        super().__init__()
        self.coarse = (grid[0] // patch, grid[1] // patch)
        self.up = nn.ConvTranspose2d(dim, width, patch, stride=patch)
        self.blocks = nn.ModuleList(ResBlock(width, dim) for _ in range(blocks))
        self.norm_out = nn.GroupNorm(_groups(width), width)
        self.conv_out = nn.Conv2d(width, d, 3, padding=1)
        nn.init.zeros_(self.conv_out.weight)
        nn.init.zeros_(self.conv_out.bias)

    def forward(self, hidden: Tensor, cond: Tensor) -> Tensor:
        y = self.up(to_grid(hidden, self.coarse))  # (M, C, h, w)
        for block in self.blocks:
            y = block(y, cond)
        return from_grid(self.conv_out(F.silu(self.norm_out(y))))  # (M, h * w, d)
