"""Finite scalar quantisation (FSQ, arXiv 2309.15505).

Each latent channel is squashed into a bounded range and rounded to one of `levels[i]` values;
the code index is the mixed-radix number formed by the per-channel digits. There is no learned
codebook, so nothing can collapse and no commitment or codebook loss is needed: on this world a
plain learned codebook collapsed to a handful of codes while FSQ kept hundreds in use
(shared/MEASURED.md).
"""

from __future__ import annotations

import math

import torch
from torch import nn


class FSQ(nn.Module):
    """Quantise the last dimension of `z` (..., len(levels)) to a grid of `prod(levels)` codes."""

    def __init__(self, levels: tuple[int, ...] | list[int]) -> None:
        super().__init__()
        levels = tuple(int(v) for v in levels)
        if not levels or any(v < 2 for v in levels):
            raise ValueError(f"FSQ levels must be a non-empty list of integers >= 2, got {levels}")
        self.levels = levels
        self.dim = len(levels)
        self.codebook_size = math.prod(levels)
        lv = torch.tensor(levels, dtype=torch.float32)
        basis = torch.cumprod(torch.tensor((1,) + levels[:-1], dtype=torch.long), 0)
        self.register_buffer("_levels", lv, persistent=False)
        self.register_buffer("_basis", basis, persistent=False)
        # Integer grid per channel: {-(L//2), ..., L - 1 - L//2}; normalised by L//2 to ~[-1, 1].
        self.register_buffer("_half_width", torch.floor(lv / 2), persistent=False)

    def bound(self, z: torch.Tensor) -> torch.Tensor:
        """Squash to the open interval whose rounding gives exactly L values per channel."""
        eps = 1e-3
        half_l = (self._levels - 1) * (1 + eps) / 2
        offset = torch.where(self._levels % 2 == 0, 0.5, 0.0)
        shift = torch.atanh(offset / half_l)
        return torch.tanh(z + shift) * half_l - offset

    def forward(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """z (..., d) float -> (quantised values in [-1, 1] with a straight-through gradient,
        integer code indices (...))."""
        if z.shape[-1] != self.dim:
            raise ValueError(f"FSQ expects a last dimension of {self.dim}, got {z.shape[-1]}")
        b = self.bound(z.float())
        q = b + (torch.round(b) - b).detach()  # straight-through rounding
        idx = self._digits_to_indices(torch.round(b).detach())
        return q / self._half_width, idx

    def _digits_to_indices(self, q_int: torch.Tensor) -> torch.Tensor:
        digits = (q_int + self._half_width).long()  # (..., d) in [0, L)
        return (digits * self._basis).sum(-1)

    def indices_to_codes(self, idx: torch.Tensor) -> torch.Tensor:
        """Integer indices (...) -> quantised values (..., d) in [-1, 1]."""
        if idx.dtype not in (torch.int32, torch.int64):
            raise ValueError(f"code indices must be an integer tensor, got {idx.dtype}")
        if idx.numel() and (int(idx.min()) < 0 or int(idx.max()) >= self.codebook_size):
            raise ValueError(
                f"code indices must lie in [0, {self.codebook_size}), got "
                f"[{int(idx.min())}, {int(idx.max())}]"
            )
        digits = (idx.long().unsqueeze(-1) // self._basis) % self._levels.long()  # (..., d)
        return (digits.float() - self._half_width) / self._half_width

    def codes_to_indices(self, codes: torch.Tensor) -> torch.Tensor:
        """Quantised values (..., d) -> integer indices (...); inverse of `indices_to_codes`."""
        return self._digits_to_indices(torch.round(codes * self._half_width))
