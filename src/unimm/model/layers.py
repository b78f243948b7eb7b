"""Small building blocks of the backbone: RMSNorm, 1-D rotary embeddings, SwiGLU.

RoPE uses the "rotate half" layout (the two halves of each head are the real and imaginary
parts), which is also the Hugging Face Llama layout, so imported q/k weights need no permutation.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

# RMSNorm (arXiv 1910.07467): torch's own module, which has a fused CPU/GPU kernel.
RMSNorm = nn.RMSNorm


def scaled_inv_freq(
    head_dim: int,
    theta: float,
    kind: str,
    factor: float,
    freq_factors: tuple[float, float] = (1.0, 4.0),
    original_len: int = 8192,
) -> Tensor:
    """RoPE inverse frequencies (hd/2,) with context-extension scaling (see ModelConfig).

    llama3: a frequency whose wavelength exceeds original_len / low is divided by `factor`;
    one shorter than original_len / high is kept; between the two, the result blends the
    divided and the kept value linearly in original_len / wavelength.
    """
    inv_freq = 1.0 / (theta ** (torch.arange(0, head_dim, 2, dtype=torch.float32) / head_dim))
    if kind == "linear":
        return inv_freq / factor
    if kind != "llama3":
        return inv_freq
    low, high = freq_factors
    ratio = original_len * inv_freq / (2 * math.pi)  # original_len / wavelength
    blend = ((ratio - low) / (high - low)).clamp(0.0, 1.0)  # 0: divide fully, 1: keep
    return (1 - blend) * inv_freq / factor + blend * inv_freq


def rope_axes(head_dim: int, pairs_2d: int) -> Tensor:
    """(hd/2,) which position axis each rotation pair turns by under 2-D RoPE
    (ModelConfig.rope_2d_pairs): pairs 0, 2, ... of the first 2 * pairs_2d the row (1), pairs
    1, 3, ... the column (2), every later pair the sequence position (0)."""
    axes = torch.zeros(head_dim // 2, dtype=torch.long)
    axes[: 2 * pairs_2d] = 1 + torch.arange(2 * pairs_2d) % 2
    return axes


def rope_cos_sin(
    positions: Tensor,
    head_dim: int,
    theta: float = 10000.0,
    inv_freq: Tensor | None = None,
    axes: Tensor | None = None,
) -> tuple[Tensor, Tensor]:
    """Rotary tables (RoFormer, arXiv 2104.09864) for explicit position ids.

    inv_freq: precomputed frequencies (e.g. `scaled_inv_freq`); None = plain RoPE.
    positions: (B, T) integer ids; any values (recipes choose them: one id per image, restarts
    per row for left padding, ...). Or (B, T, A) ids on A axes with `axes` (hd/2,) naming the
    axis each rotation pair turns by (`rope_axes`). Returns float32 cos and signed sin, each
    (B, T, 1, head_dim) so they broadcast over the heads of a (B, T, H, hd) tensor; the sign
    of the first half of sin is folded in so `apply_rope` needs no negation.
    """
    if inv_freq is None:
        inv_freq = 1.0 / (
            theta
            ** (
                torch.arange(0, head_dim, 2, device=positions.device, dtype=torch.float32)
                / head_dim
            )
        )  # (hd/2,)
    else:
        inv_freq = inv_freq.to(positions.device)
    if positions.ndim == 3:
        if axes is None:
            raise ValueError("(B, T, A) positions need `axes`, the axis of each rotation pair")
        index = axes.to(positions.device).expand(*positions.shape[:2], -1)  # (B, T, hd/2)
        angles = positions.gather(-1, index).to(torch.float32) * inv_freq  # (B, T, hd/2)
    else:
        angles = positions.to(torch.float32)[..., None] * inv_freq  # (B, T, hd/2)
    sin = angles.sin()
    cos = angles.cos().repeat(1, 1, 2)  # (B, T, hd)
    sin = torch.cat([-sin, sin], dim=-1)  # (B, T, hd)
    return cos[:, :, None], sin[:, :, None]  # (B, T, 1, hd)


def apply_rope(x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
    """x: (B, T, H, hd); cos/sin from `rope_cos_sin`. Rotates the pairs (i, i + hd/2):
    (x1, x2) -> (x1 cos - x2 sin, x2 cos + x1 sin)."""
    half = x.shape[-1] // 2
    swapped = torch.cat([x[..., half:], x[..., :half]], dim=-1)  # (B, T, H, hd)
    return (x * cos + swapped * sin).to(x.dtype)


class PerHeadLayerNorm(nn.Module):
    """LayerNorm over head_dim with its own gain and bias for every head: the QK-norm of the
    released Chameleon weights (arXiv 2405.09818), trained with tensor parallelism where each
    head shard kept its own norm. eps 1e-5 as in those weights."""

    def __init__(self, n_heads: int, head_dim: int, eps: float = 1e-5) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(n_heads, head_dim))
        self.bias = nn.Parameter(torch.zeros(n_heads, head_dim))

    def reset_parameters(self) -> None:
        nn.init.ones_(self.weight)
        nn.init.zeros_(self.bias)

    def forward(self, x: Tensor) -> Tensor:  # (B, T, H, hd)
        return F.layer_norm(x, x.shape[-1:], eps=self.eps) * self.weight + self.bias


class SwiGLU(nn.Module):
    """Gated MLP (arXiv 2002.05202). Gate and up projections are one matmul (w13) for speed."""

    def __init__(self, dim: int, hidden_dim: int) -> None:
        super().__init__()
        self.hidden_dim = hidden_dim
        self.w13 = nn.Linear(dim, 2 * hidden_dim, bias=False)
        self.w2 = nn.Linear(hidden_dim, dim, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        gate, up = self.w13(x).split(self.hidden_dim, dim=-1)  # (B, T, H) each
        return self.w2(F.silu(gate) * up)
