"""The MetaQuery image decoder: a small DiT over the latent grid, conditioned on query features.

MetaQuery (arXiv 2504.06256) feeds the connected query outputs to a pre-trained diffusion
decoder (SANA, SD1.5) through its cross-attention; none can be downloaded here, so this is a
small DiT (arXiv 2212.09748) trained from scratch on the world. The condition enters twice:
- as a prefix of every block's self-attention (the query features and the latent tokens attend
  to each other, bidirectionally, as SD3's joint attention does with text; arXiv 2403.03206);
- pooled, added to the time embedding that drives adaLN-Zero (DiT's t + y).
The velocity comes out of a zero-initialised layer, so the first steps learn the mean velocity.

Legend: B rows, Q query features, N latent tokens (h * w), d latent channels, C decoder width.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from unimm.paradigms.flow import TimestepEmbedding


def modulate(x: Tensor, shift: Tensor, scale: Tensor) -> Tensor:
    return x * (1 + scale) + shift


class DiTBlock(nn.Module):
    """adaLN-Zero transformer block (DiT): modulated LayerNorm -> attention / MLP, gated."""

    def __init__(self, dim: int, n_heads: int) -> None:
        super().__init__()
        self.n_heads = n_heads
        self.norm1 = nn.LayerNorm(dim, elementwise_affine=False, eps=1e-6)
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.norm2 = nn.LayerNorm(dim, elementwise_affine=False, eps=1e-6)
        self.mlp = nn.Sequential(
            nn.Linear(dim, 4 * dim), nn.GELU(approximate="tanh"), nn.Linear(4 * dim, dim)
        )
        self.modulation = nn.Linear(dim, 6 * dim)
        nn.init.zeros_(self.modulation.weight)
        nn.init.zeros_(self.modulation.bias)

    def forward(self, x: Tensor, c: Tensor) -> Tensor:
        """x (B, T, C) tokens, c (B, C) conditioning vector."""
        B, T, D = x.shape
        s1, sc1, g1, s2, sc2, g2 = self.modulation(F.silu(c))[:, None].chunk(6, dim=-1)
        h = modulate(self.norm1(x), s1, sc1)
        q, k, v = self.qkv(h).view(B, T, 3, self.n_heads, D // self.n_heads).permute(2, 0, 3, 1, 4)
        a = F.scaled_dot_product_attention(q, k, v)  # (B, H, T, hd), no mask: bidirectional
        x = x + g1 * self.proj(a.transpose(1, 2).reshape(B, T, D))
        return x + g2 * self.mlp(modulate(self.norm2(x), s2, sc2))


class QueryDecoder(nn.Module):
    """velocity = decoder(x_t (B, N, d), t (B,), cond (B, Q, C)) -> (B, N, d)."""

    def __init__(self, latent_dim: int, tokens: int, width: int, layers: int, heads: int):
        super().__init__()
        self.inp = nn.Linear(latent_dim, width)
        self.pos = nn.Parameter(torch.randn(1, tokens, width) * 0.02)
        self.time = TimestepEmbedding(width)
        self.blocks = nn.ModuleList(DiTBlock(width, heads) for _ in range(layers))
        self.norm = nn.LayerNorm(width, elementwise_affine=False, eps=1e-6)
        self.final_modulation = nn.Linear(width, 2 * width)
        self.out = nn.Linear(width, latent_dim)
        for layer in (self.final_modulation, self.out):
            nn.init.zeros_(layer.weight)
            nn.init.zeros_(layer.bias)

    def forward(self, x: Tensor, t: Tensor, cond: Tensor) -> Tensor:
        Q = cond.shape[1]
        c = self.time(t) + cond.mean(1)  # (B, C)
        h = torch.cat([cond, self.inp(x) + self.pos], dim=1)  # (B, Q + N, C)
        for block in self.blocks:
            h = block(h, c)
        shift, scale = self.final_modulation(F.silu(c))[:, None].chunk(2, dim=-1)
        return self.out(modulate(self.norm(h[:, Q:]), shift, scale))  # (B, N, d)
