"""Attention-mask policies as dense boolean masks (True = the query may attend to the key).

Shapes: masks for a batch are (B, 1, T, S) so they broadcast over heads in SDPA; T queries are
the last T of S keys (S > T when a KV cache holds earlier tokens). Every policy keeps each
query's own key open, so no row is fully masked (a fully masked row makes softmax NaN, e.g. for
padding queries).

Policies and the recipes that use them (shared/RECIPES.md):
- causal: Chameleon, Janus, JanusFlow, MetaQuery (+ padding)
- block_causal ("omni"): causal plus full attention inside each image block (Transfusion
  arXiv 2408.11039, Show-o arXiv 2408.12528)
- full: bidirectional among non-padding tokens (MMaDA arXiv 2505.15809, D-DiT)
"""

from __future__ import annotations

import torch
from torch import Tensor


def causal_mask(T: int, S: int | None = None, device: torch.device | str | None = None) -> Tensor:
    """(T, S): query i (the (S - T + i)-th key) sees keys 0 .. S - T + i."""
    S = T if S is None else S
    if S < T:
        raise ValueError(f"causal_mask needs S >= T, got T={T}, S={S}")
    q = torch.arange(T, device=device)[:, None] + (S - T)
    k = torch.arange(S, device=device)[None, :]
    return k <= q  # (T, S)


def keep_diagonal(mask: Tensor) -> Tensor:
    """Open each query's own key (query i is key S - T + i) so no row is fully masked."""
    T, S = mask.shape[-2:]
    diag = torch.zeros(T, S, dtype=torch.bool, device=mask.device)
    diag[torch.arange(T), torch.arange(S - T, S)] = True
    return mask | diag


def padding_mask(pad: Tensor, mask: Tensor | None = None) -> Tensor:
    """Combine a policy with padding: padding keys are never seen.

    pad: (B, S) bool, True at padding tokens. mask: (T, S) or (B, 1, T, S) policy; None = causal
    over S. Returns (B, 1, T, S) with diagonals kept (padding queries see only themselves).
    """
    if pad.dtype != torch.bool or pad.ndim != 2:
        raise ValueError(f"pad must be a (B, S) bool tensor, got {pad.dtype} {tuple(pad.shape)}")
    S = pad.shape[1]
    if mask is None:
        mask = causal_mask(S, device=pad.device)
    if mask.shape[-1] != S:
        raise ValueError(f"mask has {mask.shape[-1]} keys but pad has {S}")
    return keep_diagonal(mask & ~pad[:, None, None, :])  # (B, 1, T, S)


def block_causal_mask(block_ids: Tensor, pad: Tensor | None = None) -> Tensor:
    """Causal everywhere, plus full attention among tokens of the same image block.

    block_ids: (B, T) int; -1 for tokens outside any block (text, markers), otherwise an id
    unique to the block within its row (e.g. 0, 1, ... per image). pad: (B, T) bool or None.
    Returns (B, 1, T, T).
    """
    if block_ids.ndim != 2 or block_ids.is_floating_point():
        raise ValueError(f"block_ids must be (B, T) integers, got {tuple(block_ids.shape)}")
    T = block_ids.shape[1]
    same_block = (block_ids[:, :, None] == block_ids[:, None, :]) & (block_ids[:, :, None] >= 0)
    mask = causal_mask(T, device=block_ids.device) | same_block  # (B, T, T)
    mask = mask[:, None]  # (B, 1, T, T)
    if pad is None:
        return keep_diagonal(mask)
    return padding_mask(pad, mask)


def input_image_blocks(tokens: Tensor, boi_id: int, eoi_id: int) -> Tensor:
    """(B, T) ids -> (B, T) block ids of the complete images in them: the k-th image's tokens
    between its <boi> and <eoi> get k (from 1), everything else -1. An image opened but not
    closed in `tokens` (one being generated) is no block: its codes stay causal."""
    opens = (tokens == boi_id).long().cumsum(1)
    closes = (tokens == eoi_id).long().cumsum(1)
    # an image is complete when its <eoi> is in `tokens` too
    total_closes = closes[:, -1:]
    inside = (opens > closes) & (tokens != boi_id) & (opens <= total_closes)
    return torch.where(inside, opens, torch.full_like(opens, -1))


def full_mask(pad: Tensor) -> Tensor:
    """Bidirectional attention among non-padding tokens. pad: (B, T) bool -> (B, 1, T, T)."""
    T = pad.shape[-1]
    return padding_mask(pad, torch.ones(T, T, dtype=torch.bool, device=pad.device))
