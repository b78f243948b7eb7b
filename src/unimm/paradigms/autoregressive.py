"""Autoregressive paradigm: next-token objective and a KV-cached sampler.

Objective: `next_token_loss` (cross-entropy of position t's logits against token t + 1).
Sampler: `generate`, one token per step after a single prefill, with classifier-free guidance
(cond and uncond rows in one batch, logits = u + s (c - u), as in LlamaGen arXiv 2406.06525 and
Janus arXiv 2410.13848), temperature / top-k / top-p, and an allowed-id range so that image
generation draws only image codes (a fixed number of them: max_new_tokens, no stop ids).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Protocol

import torch
import torch.nn.functional as F
from torch import Tensor

from unimm.model.attention import KVCache
from unimm.model.masks import block_causal_mask, input_image_blocks, padding_mask
from unimm.paradigms.guidance import guide
from unimm.paradigms.rng import Rng, categorical, check_rows


class CausalLM(Protocol):
    """What `generate` needs from a model (unimm.model.Transformer satisfies it): hidden states
    from (tokens, positions, mask, cache) and a `head` from hidden states to logits, so that
    the sampler computes logits only for the last position (a recipe with a separate image
    head, as in Janus, exposes that head here)."""

    def __call__(
        self,
        tokens: Tensor,
        positions: Tensor | None = None,
        mask: Tensor | None = None,
        cache: KVCache | None = None,
        return_hidden: bool = False,
    ) -> Tensor: ...

    def head(self, hidden: Tensor) -> Tensor: ...

    def make_cache(
        self, batch_size: int, max_len: int | None = None, dtype: torch.dtype | None = None
    ) -> KVCache: ...


# ----------------------------------------------------------------------------- objective


def next_token_targets(tokens: Tensor, loss_mask: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """Shift a sequence for next-token prediction.

    tokens: (B, T) ids fed to the model. loss_mask: (B, T) bool, True where a token is a target
    (e.g. only the image tokens of a text-to-image sample); None = all tokens.
    Returns targets (B, T) with targets[:, t] = tokens[:, t + 1], and the shifted loss mask
    (False in the last column, which has no next token).
    """
    targets = torch.zeros_like(tokens)
    targets[:, :-1] = tokens[:, 1:]
    if loss_mask is None:
        loss_mask = torch.ones_like(tokens, dtype=torch.bool)
    shifted = torch.zeros_like(loss_mask)
    shifted[:, :-1] = loss_mask[:, 1:]
    return targets, shifted


def next_token_loss(logits: Tensor, targets: Tensor, loss_mask: Tensor | None = None) -> Tensor:
    """Mean cross-entropy over positions where loss_mask is True.

    Targets are ALREADY SHIFTED by the caller: targets[:, t] is the token logits[:, t] predicts
    (use `next_token_targets`). logits (B, T, V) float; targets (B, T) long; loss_mask (B, T)
    bool or None (all positions). With no selected position the loss is 0 (still differentiable),
    so a batch without targets does not poison training with NaN.
    """
    if logits.shape[:-1] != targets.shape:
        raise ValueError(
            f"logits {tuple(logits.shape)} and targets {tuple(targets.shape)} disagree on (B, T)"
        )
    if loss_mask is None:
        return F.cross_entropy(logits.flatten(0, 1).float(), targets.flatten())
    if loss_mask.shape != targets.shape or loss_mask.dtype != torch.bool:
        raise ValueError(f"loss_mask must be a bool tensor of shape {tuple(targets.shape)}")
    # Select first: cross-entropy over only the target rows (often a minority, e.g. image codes).
    per_token = token_losses(logits, targets, loss_mask)  # (N,)
    return per_token.mean() if per_token.numel() else logits.sum() * 0.0


def token_losses(logits: Tensor, targets: Tensor, mask: Tensor) -> Tensor:
    """(N,) cross-entropy of each target where mask (B, T) is True, in row-major order.
    Targets already shifted, as for `next_token_loss`; the softmax runs in fp32 over the
    selected rows only."""
    if mask.shape != targets.shape or mask.dtype != torch.bool:
        raise ValueError(f"mask must be a bool tensor of shape {tuple(targets.shape)}")
    return F.cross_entropy(logits[mask].float(), targets[mask], reduction="none")


# ----------------------------------------------------------------------------- sampler


def _allowed_vector(allowed_ids: range | Tensor, vocab_size: int, device: torch.device) -> Tensor:
    if isinstance(allowed_ids, range):
        ids = torch.arange(allowed_ids.start, allowed_ids.stop, allowed_ids.step, device=device)
    else:
        ids = torch.as_tensor(allowed_ids, device=device).long().flatten()
    if ids.numel() == 0:
        raise ValueError("allowed_ids is empty: nothing could be sampled")
    if ids.min() < 0 or ids.max() >= vocab_size:
        raise ValueError(
            f"allowed_ids must lie in [0, {vocab_size}), got [{int(ids.min())}, {int(ids.max())}]"
        )
    allowed = torch.zeros(vocab_size, dtype=torch.bool, device=device)
    allowed[ids] = True
    return allowed  # (V,)


def sample_next(
    logits: Tensor,
    *,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
    generator: Rng = None,
) -> Tensor:
    """Pick one token per row from logits (B, V): greedy when temperature == 0, otherwise
    temperature, then top-k, then nucleus (top-p, arXiv 1904.09751) filtering. Returns (B,).
    generator: one stream, or `RowGenerators` (one per row, unimm.paradigms.rng)."""
    if temperature == 0:
        return logits.argmax(dim=-1)
    logits = logits.float() / temperature
    if top_k is not None and top_k < logits.shape[-1]:
        kth = logits.topk(top_k, dim=-1).values[:, -1:]  # (B, 1)
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p is not None and top_p < 1.0:
        sorted_logits, order = logits.sort(dim=-1, descending=True)  # (B, V)
        probs = sorted_logits.softmax(dim=-1)
        # Drop a token once the mass before it already reaches top_p (the first always stays).
        drop_sorted = probs.cumsum(dim=-1) - probs >= top_p
        drop = torch.zeros_like(drop_sorted).scatter(-1, order, drop_sorted)
        logits = logits.masked_fill(drop, float("-inf"))
    probs = logits.softmax(dim=-1)  # (B, V)
    return categorical(probs, generator)


@torch.no_grad()
def generate(
    model: CausalLM,
    prompts: list[list[int]],
    max_new_tokens: int,
    *,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
    cfg_scale: float = 1.0,
    uncond_prompts: list[list[int]] | None = None,
    cfg_keep_ids: Iterable[int] | None = None,
    allowed_ids: range | Tensor | None = None,
    stop_ids: Iterable[int] = (),
    generator: Rng = None,
    use_cache: bool = True,
    pad_id: int = 0,
    image_markers: tuple[int, int] | None = None,
) -> list[list[int]]:
    """Continue each prompt by up to max_new_tokens tokens; returns only the new tokens.

    Prompts are left-padded into one batch; padding is masked from attention and each row's
    position ids start at 0 on its first real token, so a row's result does not depend on its
    batch mates. The prompt is prefilled once, then one token per step reuses the KV cache
    (use_cache=False recomputes the whole sequence every step, for tests and benchmarks).

    cfg_scale / uncond_prompts: when uncond_prompts is given (one per prompt), its rows run in
    the same batch and logits = u + cfg_scale * (c - u); both rows receive the sampled token.
    cfg_keep_ids: background-preserving guidance (unimm.paradigms.guidance): these ids' total
    probability comes from the conditional row alone.
    allowed_ids: restrict sampling to these ids (e.g. `range(first_code, first_code + n_codes)`).
    stop_ids: a row stops after emitting one of these (the stop id is included in its output).
    Image generation = allowed_ids + max_new_tokens = codes per image + no stop ids.
    pad_id: any valid id; padded slots are masked, so its value does not change the result.
    image_markers: (<boi>, <eoi>) ids of a model that reads its input images bidirectionally:
    the tokens of each complete image in a prompt attend to each other (masks.block_causal_mask)
    as in that model's training; generated tokens stay causal.
    generator: one stream for the batch, or `RowGenerators` with one generator per prompt (row i
    then samples the same tokens whatever its batch mates; guidance rows draw nothing).
    """
    if not prompts or any(len(p) == 0 for p in prompts):
        raise ValueError("generate needs at least one prompt and every prompt must be non-empty")
    if max_new_tokens < 1:
        raise ValueError(f"max_new_tokens must be >= 1, got {max_new_tokens}")
    if temperature < 0:
        raise ValueError(f"temperature must be >= 0, got {temperature}")
    if top_k is not None and top_k < 1:
        raise ValueError(f"top_k must be >= 1, got {top_k}")
    if top_p is not None and not 0 < top_p <= 1:
        raise ValueError(f"top_p must be in (0, 1], got {top_p}")
    if uncond_prompts is None:
        if cfg_scale != 1.0:
            raise ValueError("cfg_scale != 1 needs uncond_prompts (one per prompt)")
    elif len(uncond_prompts) != len(prompts) or any(len(p) == 0 for p in uncond_prompts):
        raise ValueError(
            f"uncond_prompts must be {len(prompts)} non-empty prompts, one per prompt, "
            f"got {len(uncond_prompts)}"
        )
    check_rows(len(prompts), generator)

    B = len(prompts)
    rows = prompts + (uncond_prompts or [])
    R, P = len(rows), max(len(r) for r in rows)
    total = P + max_new_tokens
    config = getattr(model, "config", None)
    if config is not None and total > config.max_seq_len:
        raise ValueError(
            f"prompt ({P}) + max_new_tokens ({max_new_tokens}) = {total} exceeds "
            f"max_seq_len {config.max_seq_len}"
        )
    device = next(model.parameters()).device if hasattr(model, "parameters") else None

    # Left-pad every row to P; generated slots follow at P, P + 1, ...
    tokens = torch.full((R, total), pad_id, dtype=torch.long, device=device)
    valid = torch.zeros((R, total), dtype=torch.bool, device=device)
    for r, row in enumerate(rows):
        tokens[r, P - len(row) : P] = torch.tensor(row, dtype=torch.long)
        valid[r, P - len(row) :] = True
    positions = (valid.cumsum(dim=1) - 1).clamp(min=0)  # (R, total), 0 at each row's first token
    pad = ~valid

    stops = torch.tensor(sorted(set(stop_ids)), dtype=torch.long, device=device)
    allowed = None
    new = torch.zeros((B, max_new_tokens), dtype=torch.long, device=device)
    lengths = torch.full((B,), max_new_tokens, dtype=torch.long, device=device)
    done = torch.zeros(B, dtype=torch.bool, device=device)

    keep = None
    if cfg_keep_ids is not None:
        keep = torch.zeros(model.config.vocab_size, dtype=torch.bool, device=device)
        keep[torch.as_tensor(list(cfg_keep_ids), dtype=torch.long, device=device)] = True

    def cfg(logits: Tensor) -> Tensor:
        logits = logits.float()  # (R, V)
        if uncond_prompts is not None:
            logits = guide(logits[:B], logits[B:], cfg_scale, keep, allowed)  # (B, V)
        if allowed is not None:
            logits = logits.masked_fill(~allowed, float("-inf"))
        return logits

    def last_logits(
        start: int, end: int, mask: Tensor, cache: KVCache | None
    ) -> Tensor:  # (R, V) for the last of tokens[:, start:end]
        hidden = model(tokens[:, start:end], positions[:, start:end], mask, cache, True)
        return model.head(hidden[:, -1])

    blocks = None
    if image_markers is not None:
        blocks = torch.full((R, total), -1, dtype=torch.long, device=device)
        real = torch.where(valid[:, :P], tokens[:, :P], -1)  # pad_id may be a marker's id
        blocks[:, :P] = input_image_blocks(real, *image_markers)

    def prefix_mask(S: int) -> Tensor:  # (R, 1, S, S) over tokens[:, :S]
        if blocks is None:
            return padding_mask(pad[:, :S])
        return block_causal_mask(blocks[:, :S], pad[:, :S])

    cache = model.make_cache(R, total - 1) if use_cache else None
    logits = last_logits(0, P, prefix_mask(P), cache)
    if allowed_ids is not None:
        allowed = _allowed_vector(allowed_ids, logits.shape[-1], logits.device)
    for t in range(max_new_tokens):
        nxt = sample_next(
            cfg(logits), temperature=temperature, top_k=top_k, top_p=top_p, generator=generator
        )  # (B,)
        new[:, t] = nxt
        if stops.numel():
            hit = torch.isin(nxt, stops) & ~done
            lengths[hit] = t + 1
            done |= hit
            if bool(done.all()):
                break
        if t == max_new_tokens - 1:
            break
        S = P + t + 1  # keys after feeding this token
        tokens[:, S - 1] = nxt.repeat(R // B)
        if cache is not None:
            step_mask = valid[:, None, None, :S]  # (R, 1, 1, S): the new token sees non-padding
            logits = last_logits(S - 1, S, step_mask, cache)
        else:
            logits = last_logits(0, S, prefix_mask(S), None)
    return [row[:n] for row, n in zip(new.tolist(), lengths.tolist(), strict=True)]
