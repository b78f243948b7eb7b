"""Per-target loss weights that count background targets less than object targets.

Most of a scene is background, which every objective learns first and easily (a masked slot
from its neighbours, the next code from the previous one, a flat patch's velocity). Weighting
those targets by w < 1 inside the mean moves the gradient to the objects that prompts ask for
(docs/LOG.md, "Third round of levers": w = 0.3 lowers the AR recipe's object-token loss on
every seed). The optimum of a weighted log-loss is the data's distribution times the weights,
so w far below 1 makes a model under-draw background (0.1 drew stray object codes).
"""

from __future__ import annotations

from torch import Tensor


def background_weighted(targets: Tensor, background: Tensor, weight: float) -> Tensor:
    """Weights over the target positions (`targets`, any shape, bool) that sum to 1, where the
    positions flagged in `background` (same shape, bool) count `weight` and the others 1. With
    weight 1 they are the plain mean's 1 / n; with no target at all they are all 0."""
    w = targets.float()
    w = w.masked_fill(background & targets, weight)
    return w / w.sum().clamp(min=1e-6)
