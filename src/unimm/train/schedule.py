"""Learning-rate schedule: linear warm-up, then cosine decay to a floor; and how much of its
budget (steps, seconds, tokens or FLOPs, whichever runs out first) a run has spent, which the
schedule follows so that the learning rate has annealed when any budget stops training."""

from __future__ import annotations

import math

from torch import nn

from unimm.train.config import TrainConfig


def lr_at(progress_step: float, total: int, warmup: int, peak: float, min_ratio: float) -> float:
    if progress_step < warmup:
        return peak * (progress_step + 1) / warmup
    frac = min(1.0, (progress_step - warmup) / max(1, total - warmup))
    return peak * (min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * frac)))


def flop_parameters(model: nn.Module) -> int:
    """The parameters one token's training step multiplies through: the trained ones, less
    those a token skips (the other modality's tower in D-DiT, the idle expert in BAGEL's
    mixture), which a recipe reports as parameters - active_parameters in describe()."""
    trained = sum(p.numel() for p in model.parameters() if p.requires_grad)
    describe = getattr(model, "describe", None)
    if describe is None:
        return trained
    d = describe()
    idle = d["parameters"] - d.get("active_parameters", d["parameters"])
    return trained - idle


def token_budget(cfg: TrainConfig, flop_params: int) -> float | None:
    """The training tokens train.max_tokens and train.max_flops allow (the smaller); None when
    neither is set. FLOPs are 6 x active trained parameters x tokens (forward 2, backward 4 per
    parameter and token; flop_parameters), so a FLOP budget is a token budget that shrinks as
    the model grows."""
    budgets = []
    if cfg.max_tokens is not None:
        budgets.append(float(cfg.max_tokens))
    if cfg.max_flops is not None:
        budgets.append(cfg.max_flops / (6 * max(flop_params, 1)))
    return min(budgets) if budgets else None


def budget_spent(
    cfg: TrainConfig, steps_done: int, seconds: float, tokens: float, tokens_allowed: float | None
) -> float:
    """The fraction of its budget a run has spent: the largest of steps, seconds and tokens,
    each over its limit (1.0 or more: training is over)."""
    spent = steps_done / cfg.steps
    if cfg.max_seconds:
        spent = max(spent, seconds / cfg.max_seconds)
    if tokens_allowed:
        spent = max(spent, tokens / tokens_allowed)
    return spent


def expected_steps(cfg: TrainConfig, steps_done: int, spent: float) -> int:
    """The step a run ends at if it keeps its pace: train.steps, or fewer when its clock or
    token budget runs out first (`spent`: budget_spent). The progress bar's total, so that its
    ETA is the clock's and not that of a step count the run will never reach."""
    if spent <= 0:
        return cfg.steps
    return min(cfg.steps, max(steps_done, round(steps_done / spent)))
