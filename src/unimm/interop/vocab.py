"""Growing (or trimming) a pretrained backbone's vocabulary, e.g. to append image codes.

New rows start at the mean of the existing rows plus small Gaussian noise (Hewitt, "Initializing
new word embeddings for pretrained language models", 2021): at the mean, a new output row gives
every context about the average logit, so the new tokens neither swamp nor vanish from the
pretrained distribution, and the noise breaks the symmetry between new tokens so they can learn
apart. Rows that already exist are copied exactly.
"""

from __future__ import annotations

from dataclasses import replace

import torch

from unimm.interop.hf_llama import build_backbone
from unimm.model.transformer import Transformer


@torch.no_grad()
def _grow(rows: torch.Tensor, n: int, noise: float, generator: torch.Generator) -> torch.Tensor:
    if n <= rows.shape[0]:
        return rows[:n].clone()
    mean = rows.float().mean(0)  # (D,)
    std = rows.float().std(0)  # (D,) per-dimension spread, so the noise is "small" per column
    extra = n - rows.shape[0]
    new = mean + noise * std * torch.randn(extra, rows.shape[1], generator=generator)
    return torch.cat([rows, new.to(rows.dtype)])  # (n, D)


@torch.no_grad()
def resize_vocabulary(
    model: Transformer, vocab_size: int, noise: float = 0.01, seed: int = 0
) -> Transformer:
    """A new Transformer with `vocab_size` rows in its embedding and output head: ids below
    min(old, new) keep their rows; added ids get mean + noise * std rows (see module docstring);
    with a smaller vocab_size the last rows are dropped (e.g. a checkpoint's padding rows)."""
    if vocab_size <= 0:
        raise ValueError(f"vocab_size must be positive, got {vocab_size}")
    generator = torch.Generator().manual_seed(seed)
    c = replace(model.config, vocab_size=vocab_size)
    state = dict(model.state_dict())
    emb = state["tok_embeddings.weight"]
    state["tok_embeddings.weight"] = _grow(emb, vocab_size, noise, generator)
    if c.tie_embeddings:
        state["output.weight"] = state["tok_embeddings.weight"]
    else:
        state["output.weight"] = _grow(state["output.weight"], vocab_size, noise, generator)
    out = build_backbone(c, state, dtype=model.tok_embeddings.weight.dtype)
    return out.train(model.training)
