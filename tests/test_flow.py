"""Flow-matching objective and the ODE schedulers' common contract."""

from __future__ import annotations

import math

import pytest
import torch

from unimm.config import from_dict, to_dict
from unimm.paradigms.flow import (
    EulerScheduler,
    FlowConfig,
    FlowMatching,
    HeunScheduler,
    TimestepEmbedding,
    guided_velocity,
    make_scheduler,
    sample_ode,
    shift_time,
)

SCHEDULER_CLASSES = [EulerScheduler, HeunScheduler]


def test_exact_velocity_has_zero_loss():
    # A data distribution with one point c: the marginal velocity at (x_t, t) is (c - x_t) / (1 - t)
    # exactly, and it equals the conditional target x1 - x0 for every draw.
    fm = FlowMatching(FlowConfig(time_sampling="uniform"))
    g = torch.Generator().manual_seed(0)
    c = torch.randn(1, 8, 6, generator=g, dtype=torch.float64)
    x1 = c.expand(32, 8, 6)
    xt, t, target = fm.noise(x1, g)
    exact = (c - xt) / (1 - t.to(xt.dtype)).view(-1, 1, 1)
    assert fm.loss(exact, target).item() < 1e-20
    assert fm.loss(torch.zeros_like(target), target).item() > 0.5


def test_interpolation_ends():
    x1, x0 = torch.randn(3, 4), torch.randn(3, 4)
    xt, v = FlowMatching.interpolate(x1, x0, torch.tensor([0.0, 1.0, 0.25]))
    assert torch.equal(xt[0], x0[0]) and torch.equal(xt[1], x1[1])
    assert torch.allclose(xt[2], 0.25 * x1[2] + 0.75 * x0[2])
    assert torch.equal(v, x1 - x0)


@pytest.mark.parametrize("kind", ["uniform", "logit_normal"])
def test_time_sampling_in_unit_interval(kind):
    t = FlowMatching(FlowConfig(time_sampling=kind)).sample_time(
        4000, torch.Generator().manual_seed(1)
    )
    assert t.shape == (4000,) and bool(((t > 0) & (t < 1)).all())
    # logit-normal(0, 1) is symmetric about 1/2 and concentrates there
    assert abs(float(t.mean()) - 0.5) < 0.02
    spread = float(t.std())
    assert spread < 0.25 if kind == "logit_normal" else abs(spread - math.sqrt(1 / 12)) < 0.01


@pytest.mark.parametrize("cls", SCHEDULER_CLASSES)
@pytest.mark.parametrize("shift", [1.0, 3.0])
def test_scheduler_contract(cls, shift):
    sched = cls(7, shift)
    assert len(sched.timesteps) == 7 * sched.order
    assert float(sched.timesteps[0]) == 0.0
    assert bool((sched.timesteps[1:] >= sched.timesteps[:-1]).all())
    x = torch.randn(2, 5, 3)
    out = sample_ode(lambda x, t: -x + t[:, None, None], x, sched)
    assert out.shape == x.shape and out.dtype == x.dtype and torch.isfinite(out).all()
    again = cls.from_config(sched.config)
    assert again.config == sched.config and torch.equal(again.timesteps, sched.timesteps)


def test_flow_config_round_trip_and_errors():
    cfg = FlowConfig(sampler="heun", num_steps=5, shift=2.0, time_sampling="uniform")
    assert from_dict(FlowConfig, to_dict(cfg)) == cfg
    sched = make_scheduler(cfg)
    assert isinstance(sched, HeunScheduler) and sched.config == {"num_steps": 5, "shift": 2.0}
    for bad in ({"num_steps": 0}, {"shift": 0.0}, {"sampler": "rk4"}):
        with pytest.raises(ValueError):
            FlowConfig(**bad)


def test_step_must_follow_timesteps():
    sched = EulerScheduler(4)
    with pytest.raises(ValueError, match="timesteps"):
        sched.step(torch.zeros(1), 0.5, torch.zeros(1))
    for t in sched.timesteps:
        sched.step(torch.zeros(1), t, torch.zeros(1))
    with pytest.raises(RuntimeError):
        sched.step(torch.zeros(1), 1.0, torch.zeros(1))


def test_shift_keeps_ends_and_moves_toward_noise():
    t = torch.tensor([0.0, 0.5, 1.0], dtype=torch.float64)
    s = shift_time(t, 3.0)
    assert s[0] == 0.0 and s[2] == 1.0 and s[1] < 0.5
    assert torch.equal(shift_time(t, 1.0), t)


@pytest.mark.parametrize("cls,order", [(EulerScheduler, 1), (HeunScheduler, 2)])
def test_converges_to_exact_linear_flow(cls, order):
    # dx/dt = a x + b has x(1) = e^a x0 + b (e^a - 1) / a.
    a, b = -1.3, 0.7
    x0 = torch.randn(4, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    exact = math.exp(a) * x0 + b * (math.exp(a) - 1) / a
    errors = []
    for n in (10, 100, 1000):
        out = sample_ode(lambda x, t: a * x + b, x0, cls(n))
        errors.append(float((out - exact).abs().max()))
    assert errors[-1] < (2e-3 if order == 1 else 1e-6)
    # error falls by ~10^order per 10x steps
    assert errors[0] / errors[1] > 10**order * 0.7 and errors[1] / errors[2] > 10**order * 0.7


def test_cfg_combination():
    c, u = torch.tensor([2.0]), torch.tensor([1.0])
    assert guided_velocity(c, u, 1.0) == c and guided_velocity(c, u, 0.0) == u
    assert guided_velocity(c, u, 3.0) == 4.0


def test_timestep_embedding_distinguishes_times():
    emb = TimestepEmbedding(16)
    out = emb(torch.tensor([0.0, 0.5, 1.0]))
    assert out.shape == (3, 16) and not torch.allclose(out[0], out[1])
