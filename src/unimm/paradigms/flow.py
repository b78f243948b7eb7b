"""Flow-matching paradigm: the rectified-flow objective and ODE samplers (Euler, Heun).

Convention (one for every continuous recipe; Transfusion's and JanusFlow's): t = 0 is pure
noise, t = 1 is data, and the path is the straight line

    x_t = t * x1 + (1 - t) * x0,   x0 ~ N(0, I),   velocity v = dx_t/dt = x1 - x0

(rectified flow, arXiv 2209.03003; flow matching, arXiv 2210.02747). The network predicts v from
(x_t, t, condition); the loss is the mean squared error to x1 - x0. Sampling integrates
dx/dt = v from t = 0 to t = 1.

Split as in DiT/SiT: the network only predicts; `FlowMatching` owns time sampling, noising and
the loss; a scheduler owns integration. Schedulers follow the diffusers habit
(`set_timesteps(n)`, iterate `timesteps`, `x = step(v, t, x)`), so a sampling loop reads

    sched.set_timesteps(n)
    for t in sched.timesteps:
        x = sched.step(velocity(x, t), t, x)

Legend: B batch (or images), N tokens per image, d channels per token.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor, nn


@dataclass(kw_only=True)
class FlowConfig:
    """Objective and sampler settings of a flow recipe (RunConfig.flow)."""

    # Training time distribution: "logit_normal" = sigmoid(N(mean, std)), which puts more
    # samples at middle times where the velocity is hardest to predict (SD3, arXiv 2403.03206,
    # found it best among the distributions it compared); "uniform" = U(0, 1).
    time_sampling: Literal["logit_normal", "uniform"] = "logit_normal"
    logit_mean: float = 0.0
    logit_std: float = 1.0
    image_loss_weight: float = 5.0  # Transfusion's lambda (arXiv 2408.11039, Sec. 4)
    sampler: Literal["euler", "heun"] = "euler"
    num_steps: int = 20
    # Time shift s > 1 spends more steps near the noise end: sigma = 1 - t is mapped to
    # s sigma / (1 + (s - 1) sigma) (SD3's shift; BAGEL and Show-o2 sample with s = 3).
    shift: float = 1.0
    # Weight of a target image's tokens whose patch is all background (the image's own
    # uniform border colour), relative to the other tokens' 1.0, in the velocity loss's mean
    # (unimm.paradigms.weighting; chameleon.background_weight's counterpart).
    background_weight: float = 1.0

    def __post_init__(self) -> None:
        if self.background_weight < 0:
            raise ValueError(f"flow.background_weight must be >= 0, got {self.background_weight}")
        if self.time_sampling not in ("logit_normal", "uniform"):
            raise ValueError(
                f"flow.time_sampling must be logit_normal or uniform, got {self.time_sampling!r}"
            )
        if self.sampler not in ("euler", "heun"):
            raise ValueError(f"flow.sampler must be euler or heun, got {self.sampler!r}")
        if self.num_steps < 1:
            raise ValueError(f"flow.num_steps must be >= 1, got {self.num_steps}")
        if self.shift <= 0:
            raise ValueError(f"flow.shift must be > 0, got {self.shift}")
        if self.logit_std <= 0:
            raise ValueError(f"flow.logit_std must be > 0, got {self.logit_std}")
        if self.image_loss_weight < 0:
            raise ValueError(f"flow.image_loss_weight must be >= 0, got {self.image_loss_weight}")


# ----------------------------------------------------------------------------- objective


class FlowMatching:
    """Time sampling, noising and the velocity loss."""

    def __init__(self, config: FlowConfig | None = None) -> None:
        self.config = config or FlowConfig()

    def sample_time(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        """(n,) times in (0, 1)."""
        c = self.config
        if c.time_sampling == "uniform":
            return torch.rand(n, generator=generator)
        return torch.sigmoid(c.logit_mean + c.logit_std * torch.randn(n, generator=generator))

    @staticmethod
    def interpolate(x1: Tensor, x0: Tensor, t: Tensor) -> tuple[Tensor, Tensor]:
        """x_t and the target velocity. x1, x0 (B, ...); t (B,)."""
        tb = t.view(-1, *([1] * (x1.ndim - 1))).to(x1.dtype)
        return tb * x1 + (1 - tb) * x0, x1 - x0

    def noise(
        self, x1: Tensor, generator: torch.Generator | None = None
    ) -> tuple[Tensor, Tensor, Tensor]:
        """Draw t and x0 for clean x1 (B, ...): returns (x_t, t (B,), target velocity)."""
        t = self.sample_time(x1.shape[0], generator).to(x1.device)
        x0 = torch.randn(x1.shape, generator=generator).to(x1)
        xt, target = self.interpolate(x1, x0, t)
        return xt, t, target

    @staticmethod
    def loss(pred: Tensor, target: Tensor, weight: Tensor | None = None) -> Tensor:
        """Mean squared error of predicted velocities (any shape, same as target). weight:
        None = the plain mean; else one weight per token (pred's shape less its last
        dimension), summing to 1: the weighted mean of the tokens' mean squared errors."""
        if pred.shape != target.shape:
            raise ValueError(f"velocity {tuple(pred.shape)} vs target {tuple(target.shape)}")
        err = (pred.float() - target.float()).pow(2)
        if weight is None:
            return err.mean()
        if weight.shape != pred.shape[:-1]:
            raise ValueError(f"weight {tuple(weight.shape)} vs velocity {tuple(pred.shape)}")
        return (err.mean(-1) * weight).sum()


def guided_velocity(cond: Tensor, uncond: Tensor, scale: float) -> Tensor:
    """Classifier-free guidance u + s (c - u) (arXiv 2207.12598); JanusFlow's w c - (w - 1) u is
    the same expression."""
    return uncond + scale * (cond - uncond)


class TimestepEmbedding(nn.Module):
    """t in [0, 1] -> (B, dim): sinusoids of 1000 t, then an MLP (DiT, arXiv 2212.09748)."""

    def __init__(self, dim: int, freq_dim: int = 128) -> None:
        super().__init__()
        self.freq_dim = freq_dim
        self.mlp = nn.Sequential(nn.Linear(freq_dim, dim), nn.SiLU(), nn.Linear(dim, dim))

    def forward(self, t: Tensor) -> Tensor:
        half = self.freq_dim // 2
        freqs = torch.exp(-math.log(10000.0) * torch.arange(half, device=t.device) / half)
        args = 1000.0 * t.float()[:, None] * freqs[None]  # (B, half)
        feats = torch.cat([torch.cos(args), torch.sin(args)], dim=-1)  # (B, freq_dim)
        return self.mlp(feats.to(self.mlp[0].weight.dtype))


# ----------------------------------------------------------------------------- samplers


def shift_time(t: Tensor, shift: float) -> Tensor:
    """Map data-time t with sigma = 1 - t -> s sigma / (1 + (s - 1) sigma)."""
    sigma = 1.0 - t
    return 1.0 - shift * sigma / (1.0 + (shift - 1.0) * sigma)


class FlowScheduler:
    """Common part of the ODE schedulers: the time grid and its config."""

    order: int = 1

    def __init__(self, num_steps: int = 20, shift: float = 1.0) -> None:
        if num_steps < 1:
            raise ValueError(f"num_steps must be >= 1, got {num_steps}")
        if shift <= 0:
            raise ValueError(f"shift must be > 0, got {shift}")
        self.shift = shift
        self.set_timesteps(num_steps)

    @classmethod
    def from_config(cls, config: dict | FlowConfig) -> FlowScheduler:
        if isinstance(config, FlowConfig):
            return SCHEDULERS[config.sampler](config.num_steps, config.shift)
        return cls(**config)

    @property
    def config(self) -> dict:
        return {"num_steps": self.num_steps, "shift": self.shift}

    def set_timesteps(self, num_steps: int) -> None:
        if num_steps < 1:
            raise ValueError(f"num_steps must be >= 1, got {num_steps}")
        self.num_steps = num_steps
        # grid[0] = 0 (noise) ... grid[n] = 1 (data); the shift keeps both ends fixed.
        self.grid = shift_time(
            torch.linspace(0.0, 1.0, num_steps + 1, dtype=torch.float64), self.shift
        )
        self._index = 0
        self.timesteps = self._make_timesteps()

    def _make_timesteps(self) -> Tensor:
        return self.grid[:-1].float()

    def step(self, velocity: Tensor, t: Tensor | float, x: Tensor) -> Tensor:
        raise NotImplementedError

    def _advance(self, t: Tensor | float) -> tuple[float, float]:
        """(t, t_next) of the current interval; checks the caller follows `timesteps`."""
        if self._index >= len(self.timesteps):
            raise RuntimeError("step called more times than there are timesteps")
        expected = float(self.timesteps[self._index])
        if abs(float(t) - expected) > 1e-6:
            raise ValueError(
                f"step got t={float(t):.6f}, expected timesteps[{self._index}]="
                f"{expected:.6f}: iterate `timesteps` in order"
            )
        self._index += 1
        k = (self._index - 1) // self.order
        return float(self.grid[k]), float(self.grid[k + 1])


class EulerScheduler(FlowScheduler):
    """x <- x + (t_next - t) v: one velocity evaluation per step, error O(1 / steps)."""

    def step(self, velocity: Tensor, t: Tensor | float, x: Tensor) -> Tensor:
        t0, t1 = self._advance(t)
        return x + (t1 - t0) * velocity.to(x.dtype)


class HeunScheduler(FlowScheduler):
    """Heun's second-order method (trapezoid with an Euler predictor), error O(1 / steps^2).

    Each interval takes two velocity evaluations, so `timesteps` lists (t, t_next) per interval
    and `step` alternates predictor and corrector (the diffusers HeunDiscreteScheduler habit).
    """

    order = 2

    def _make_timesteps(self) -> Tensor:
        pairs = torch.stack([self.grid[:-1], self.grid[1:]], dim=1)  # (n, 2)
        self._x = self._v = None
        return pairs.flatten().float()

    def step(self, velocity: Tensor, t: Tensor | float, x: Tensor) -> Tensor:
        predictor = self._index % 2 == 0
        t0, t1 = self._advance(t)
        v = velocity.to(x.dtype)
        if predictor:
            self._x, self._v = x, v
            return x + (t1 - t0) * v
        x_start, v_start = self._x, self._v
        self._x = self._v = None
        return x_start + (t1 - t0) * 0.5 * (v_start + v)


SCHEDULERS: dict[str, type[FlowScheduler]] = {"euler": EulerScheduler, "heun": HeunScheduler}


def make_scheduler(config: FlowConfig) -> FlowScheduler:
    return SCHEDULERS[config.sampler](config.num_steps, config.shift)


def sample_ode(
    velocity: Callable[[Tensor, Tensor], Tensor], x0: Tensor, scheduler: FlowScheduler
) -> Tensor:
    """Integrate dx/dt = velocity(x, t) from noise x0 at t = 0 to t = 1 along `scheduler`."""
    scheduler.set_timesteps(scheduler.num_steps)
    x = x0
    for t in scheduler.timesteps:
        x = scheduler.step(velocity(x, t.expand(x.shape[0]).to(x.device)), t, x)
    return x
