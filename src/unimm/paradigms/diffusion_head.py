"""Per-token diffusion head with masked-autoregressive order (MAR, arXiv 2406.11838; Harmon,
arXiv 2503.21979).

The backbone turns a partly masked image into one condition vector z per token; a small MLP
models each continuous token given its z, trained with the flow-matching loss per token
(unimm.paradigms.flow: t = 0 noise, t = 1 data, velocity x1 - x0). MAR uses a DDPM head; we use
the flow form, which shares the objective and samplers with Transfusion.

Training masks a random subset of each target image's tokens (ratio r = cos(pi u / 2),
u ~ U(0, 1), MaskGIT's schedule, arXiv 2202.04200, so every ratio the sampler visits is
trained; MAR draws r from a truncated normal in [0.7, 1]) and applies the head loss on the
masked tokens only, each with `head_batch_mul` draws of (t, noise): the head is cheap next to
the backbone, so several draws per backbone pass reduce the loss's variance (MAR uses 4).

Sampling: a random order per image; K steps; after step k, floor(N cos(pi (k + 1) / (2 K)))
tokens stay masked; the tokens revealed at a step are drawn by integrating the head's ODE, with
classifier-free guidance between the conditional and unconditional z.
Legend: M images, N tokens per image, d token channels, D backbone width, W head width.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from unimm.paradigms.flow import EulerScheduler, TimestepEmbedding, guided_velocity, sample_ode
from unimm.paradigms.rng import Rng, group_rows, randn


@dataclass(kw_only=True)
class HeadConfig:
    """The MLP head and the masked-AR sampler (RunConfig.head)."""

    width: int = 256
    n_blocks: int = 3
    head_batch_mul: int = 4
    mar_steps: int = 8  # backbone passes per image at inference
    head_steps: int = 20  # Euler steps of the per-token ODE

    def __post_init__(self) -> None:
        for name in ("width", "n_blocks", "head_batch_mul", "mar_steps", "head_steps"):
            if getattr(self, name) < 1:
                raise ValueError(f"head.{name} must be >= 1, got {getattr(self, name)}")


class _AdaLNBlock(nn.Module):
    """Residual MLP whose LayerNorm is modulated by the condition (DiT's adaLN, zero-init gate)."""

    def __init__(self, width: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(width, elementwise_affine=False)
        self.mlp = nn.Sequential(nn.Linear(width, width), nn.SiLU(), nn.Linear(width, width))
        self.modulation = nn.Linear(width, 3 * width)
        nn.init.zeros_(self.modulation.weight)
        nn.init.zeros_(self.modulation.bias)

    def forward(self, h: Tensor, c: Tensor) -> Tensor:
        shift, scale, gate = self.modulation(nn.functional.silu(c)).chunk(3, dim=-1)
        return h + gate * self.mlp(self.norm(h) * (1 + scale) + shift)


class DiffusionHead(nn.Module):
    """velocity = head(x_t (K, d), t (K,), z (K, D)) -> (K, d)."""

    def __init__(self, token_dim: int, cond_dim: int, config: HeadConfig) -> None:
        super().__init__()
        w = config.width
        self.x_in = nn.Linear(token_dim, w)
        self.cond = nn.Linear(cond_dim, w)
        self.time = TimestepEmbedding(w)
        self.blocks = nn.ModuleList(_AdaLNBlock(w) for _ in range(config.n_blocks))
        self.out_norm = nn.LayerNorm(w)
        self.out = nn.Linear(w, token_dim)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    def forward(self, x: Tensor, t: Tensor, z: Tensor) -> Tensor:
        c = self.cond(z) + self.time(t)  # (K, W)
        h = self.x_in(x)
        for block in self.blocks:
            h = block(h, c)
        return self.out(self.out_norm(h))


def training_mask(n_images: int, n_tokens: int, generator: torch.Generator | None = None) -> Tensor:
    """(M, N) bool, True = masked: a random subset per image, ratio cos(pi u / 2), at least one."""
    u = torch.rand(n_images, generator=generator)
    count = (n_tokens * torch.cos(math.pi * u / 2)).ceil().clamp(1, n_tokens).long()  # (M,)
    scores = torch.rand(n_images, n_tokens, generator=generator)
    rank = scores.argsort(dim=1).argsort(dim=1)  # each token's rank in a random order
    return rank < count[:, None]


def masked_after_step(step: int, total: int, n_tokens: int) -> int:
    """Tokens still masked after step `step` (0-based) of `total`: cosine schedule, 0 at the end."""
    return int(math.floor(n_tokens * math.cos(math.pi * (step + 1) / (2 * total))))


def sample_tokens(
    head: DiffusionHead,
    z_cond: Tensor,
    z_uncond: Tensor | None,
    cfg_scale: float,
    steps: int,
    generator: Rng = None,
) -> Tensor:
    """Draw one token per condition row (K, D) by integrating the head's ODE from noise with
    Euler steps; with z_uncond, velocities are guided: u + s (c - u). Returns (K, d).
    generator: one stream, or `RowGenerators` of B images whose tokens are the K rows in image
    order (K = B * k): image b's noise then comes from generator b."""
    K = z_cond.shape[0]
    groups, per_group = group_rows(K, generator)
    noise = randn((groups, per_group, head.out.out_features), generator)
    x0 = noise.flatten(0, 1).to(z_cond)

    def velocity(x: Tensor, t: Tensor) -> Tensor:
        if z_uncond is None:
            return head(x, t, z_cond)
        v = head(torch.cat([x, x]), torch.cat([t, t]), torch.cat([z_cond, z_uncond]))
        return guided_velocity(v[:K], v[K:], cfg_scale)

    return sample_ode(velocity, x0, EulerScheduler(steps))
