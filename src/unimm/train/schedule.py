"""Learning-rate schedule: linear warm-up, then cosine decay to a floor."""

from __future__ import annotations

import math


def lr_at(progress_step: float, total: int, warmup: int, peak: float, min_ratio: float) -> float:
    if progress_step < warmup:
        return peak * (progress_step + 1) / warmup
    frac = min(1.0, (progress_step - warmup) / max(1, total - warmup))
    return peak * (min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * frac)))
