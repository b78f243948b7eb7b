"""Muon for the transformer's weight matrices, AdamW for everything else, as one optimizer.

Muon (Jordan et al. 2024; "Muon is Scalable for LLM Training", arXiv 2502.16982) replaces each
hidden matrix's update by the orthogonalised momentum (a few Newton-Schulz iterations), so every
direction of the matrix moves at the same rate. Embeddings, output heads, gains and biases keep
AdamW, as in those papers. The update is scaled by 0.2 * sqrt(max(A, B)) (Moonshot's rule,
torch.optim.Muon's "match_rms_adamw") so that the AdamW learning rate and schedule carry over.

One torch.optim.Optimizer (not two) so that the trainer's schedule, clipping and the
training-state checkpoints (train/state.py) treat it like AdamW; tests/test_muon.py checks each
kind of group step for step against torch.optim.Muon and torch.optim.AdamW.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import torch
from torch import Tensor
from torch.optim.adamw import adamw

# Quintic Newton-Schulz coefficients tuned for fast convergence near 0 (Keller Jordan's Muon;
# torch.optim.Muon's defaults).
NS_COEFFICIENTS = (3.4445, -4.775, 2.0315)


def orthogonalise(g: Tensor, steps: int = 5, eps: float = 1e-7) -> Tensor:
    """About U S' V^T for g = U S V^T, S' near 1, by Newton-Schulz iterations in bf16: the
    iteration tolerates bf16's rounding (it only pushes singular values towards 1), and bf16
    matmuls are 2-7x the fp32 rate on the CPUs this project runs on.

    g is one matrix (A, B) or a stack of them (N, A, B), each orthogonalised on its own: one
    batched matmul per iteration for a stack of same-shape matrices costs about half what N
    separate ones do for this project's small matrices (benchmarks/bench_muon.py)."""
    if g.ndim == 2:
        return orthogonalise(g[None], steps, eps)[0]
    a, b, c = NS_COEFFICIENTS
    x = g.bfloat16()
    transposed = x.shape[-2] > x.shape[-1]
    if transposed:  # iterate on the wide side: the Gram matrix is the smaller one
        x = x.mT
    x = x / x.norm(dim=(-2, -1), keepdim=True).clamp(min=eps)  # spectral <= Frobenius = 1
    for _ in range(steps):
        gram = x @ x.mT
        x = torch.baddbmm(x, torch.baddbmm(gram, gram, gram, beta=b, alpha=c), x, beta=a)
    return x.mT if transposed else x


def orthogonalise_all(updates: list[Tensor], steps: int = 5) -> list[Tensor]:
    """orthogonalise() of every matrix in `updates`, batched: matrices of one shape (up to a
    transpose, which commutes with the iteration) go through it as one stack."""
    tall = [u.shape[0] > u.shape[1] for u in updates]
    wide = [u.mT if t else u for u, t in zip(updates, tall)]
    by_shape: dict[tuple, list[int]] = {}
    for i, u in enumerate(wide):
        by_shape.setdefault((tuple(u.shape), u.dtype, u.device), []).append(i)
    out: list[Tensor] = list(updates)
    for idx in by_shape.values():
        done = orthogonalise(torch.stack([wide[i] for i in idx]), steps)
        for i, o in zip(idx, done):
            out[i] = o.mT if tall[i] else o
    return out


class MuonAdamW(torch.optim.Optimizer):
    """Param groups with use_muon=True take Muon steps (2-D parameters only), the others AdamW.

    Group keys: lr, weight_decay (decoupled, both kinds), betas and eps (AdamW), momentum,
    nesterov and ns_steps (Muon).
    """

    def __init__(
        self,
        groups: Iterable[dict],
        lr: float,
        betas: tuple[float, float] = (0.9, 0.95),
        eps: float = 1e-8,
        momentum: float = 0.95,
        ns_steps: int = 5,
    ) -> None:
        defaults = dict(
            lr=lr,
            betas=betas,
            eps=eps,
            weight_decay=0.0,
            momentum=momentum,
            nesterov=True,
            ns_steps=ns_steps,
            use_muon=False,
        )
        super().__init__(list(groups), defaults)
        for group in self.param_groups:
            if group["use_muon"] and any(p.ndim != 2 for p in group["params"]):
                raise ValueError("Muon groups take 2-D parameters (weight matrices) only")

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            params = [p for p in group["params"] if p.grad is not None]
            if group["use_muon"]:
                self._muon_step(group, params)
            else:
                self._adamw_step(group, params)
        return loss

    def _muon_step(self, group: dict, params: list[Tensor]) -> None:
        lr, wd, mu = group["lr"], group["weight_decay"], group["momentum"]
        updates = []
        for p in params:
            state = self.state[p]
            if "momentum_buffer" not in state:
                state["momentum_buffer"] = torch.zeros_like(p)
            buf = state["momentum_buffer"]
            buf.lerp_(p.grad, 1 - mu)
            updates.append(p.grad.lerp(buf, mu) if group["nesterov"] else buf)
        for p, update in zip(params, orthogonalise_all(updates, group["ns_steps"])):
            p.mul_(1 - lr * wd)
            p.add_(update.to(p.dtype), alpha=-lr * 0.2 * math.sqrt(max(p.shape)))

    def _adamw_step(self, group: dict, params: list[Tensor]) -> None:
        exp_avgs, exp_avg_sqs, steps = [], [], []
        for p in params:
            state = self.state[p]
            if "step" not in state:
                state["step"] = torch.tensor(0.0)
                state["exp_avg"] = torch.zeros_like(p)
                state["exp_avg_sq"] = torch.zeros_like(p)
            exp_avgs.append(state["exp_avg"])
            exp_avg_sqs.append(state["exp_avg_sq"])
            steps.append(state["step"])
        beta1, beta2 = group["betas"]
        adamw(
            params,
            [p.grad for p in params],
            exp_avgs,
            exp_avg_sqs,
            [],
            steps,
            foreach=False,
            amsgrad=False,
            beta1=beta1,
            beta2=beta2,
            lr=group["lr"],
            weight_decay=group["weight_decay"],
            eps=group["eps"],
            maximize=False,
        )
