"""What each discrete image code looks like: the running mean of the pixel patches it encoded.

A code's learned embedding starts as noise and learns what the code means only through the
gradients that reach its own row; with 512 codes and a few hundred training steps most rows see
little. The prototype (the code's mean 8x8x3 patch) is known from the data at once, so a
learned projection of it gives every code a meaningful part of its embedding from the first
steps, shared between codes that look alike. Used by chameleon.code_prototypes.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class CodePrototypes(nn.Module):
    """Buffers (saved with the weights): per-code sums of patch pixels and patch counts."""

    def __init__(self, codebook_size: int, patch: int) -> None:
        super().__init__()
        self.patch = patch
        self.feature_dim = 3 * patch * patch
        self.register_buffer("pixel_sum", torch.zeros(codebook_size, self.feature_dim))
        self.register_buffer("count", torch.zeros(codebook_size))

    @torch.no_grad()
    def observe(self, images: torch.Tensor, codes: torch.Tensor) -> None:
        """images (N, 3, H, W) in [-1, 1], codes (N, h*w) their codes in raster order."""
        p = self.patch
        patches = F.unfold(images.float(), kernel_size=p, stride=p)  # (N, 3*p*p, h*w)
        patches = patches.transpose(1, 2).reshape(-1, self.feature_dim)  # (N*h*w, 3*p*p)
        flat = codes.reshape(-1).to(self.count.device)
        self.pixel_sum.index_add_(0, flat, patches.to(self.pixel_sum))
        self.count += torch.bincount(flat, minlength=len(self.count)).to(self.count)

    def features(self) -> torch.Tensor:
        """(C, 3*p*p): each code's mean patch minus white, so background is about 0 and a code
        never seen in training is exactly 0."""
        mean = self.pixel_sum / self.count.clamp(min=1)[:, None]
        return torch.where(self.count[:, None] > 0, mean - 1.0, torch.zeros_like(mean))
