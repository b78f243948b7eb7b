"""Exponential moving average of the trainable weights, for generation (e.g. DiT, Peebles & Xie
2022, sample from EMA weights with decay 0.9999). Kept on CPU in fp32 as full tensors, so it
reads the same under DDP and FSDP2 (where it is updated from gathered full weights)."""

from __future__ import annotations

import torch


class EMA:
    def __init__(self, weights: dict[str, torch.Tensor], decay: float):
        self.decay = decay
        self.shadow = {k: v.detach().float().cpu().clone() for k, v in weights.items()}

    @torch.no_grad()
    def update(self, weights: dict[str, torch.Tensor]) -> None:
        for k, v in weights.items():
            self.shadow[k].lerp_(v.detach().float().cpu(), 1.0 - self.decay)

    def state_dict(self) -> dict[str, torch.Tensor]:
        return self.shadow

    def load_state_dict(self, sd: dict[str, torch.Tensor]) -> None:
        missing = set(self.shadow) - set(sd)
        if missing:
            raise ValueError(f"EMA checkpoint lacks {sorted(missing)[:3]}")
        self.shadow = {k: sd[k].float().clone() for k in self.shadow}
