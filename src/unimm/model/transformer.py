"""The backbone: a pre-norm decoder-only transformer (Llama-style), single-device.

Parallelism, activation checkpointing and torch.compile are applied from outside by the
trainer. For large models build on the meta device, then materialise:

    with torch.device("meta"):
        model = Transformer(config)
    model.to_empty(device="cuda")
    model.init_weights()
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from unimm.model.attention import Attention, KVCache
from unimm.model.config import ModelConfig
from unimm.model.layers import (
    PerHeadLayerNorm,
    RMSNorm,
    SwiGLU,
    rope_axes,
    rope_cos_sin,
    scaled_inv_freq,
)
from unimm.model.masks import causal_mask


class Block(nn.Module):
    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.attn_norm = RMSNorm(config.dim, eps=config.norm_eps)
        self.attn = Attention(config)
        self.mlp_norm = RMSNorm(config.dim, eps=config.norm_eps)
        self.mlp = SwiGLU(config.dim, config.hidden_dim)

    def forward(self, x: Tensor, cos: Tensor, sin: Tensor, **attn_kwargs: object) -> Tensor:
        x = x + self.attn(self.attn_norm(x), cos, sin, **attn_kwargs)  # (B, T, D)
        return x + self.mlp(self.mlp_norm(x))


class Transformer(nn.Module):
    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.config = config
        self.tok_embeddings = nn.Embedding(config.vocab_size, config.dim)
        self.layers = nn.ModuleList(self.make_layer(config) for _ in range(config.n_layers))
        self.norm = RMSNorm(config.dim, eps=config.norm_eps)
        self.output = nn.Linear(config.dim, config.vocab_size, bias=False)
        if config.tie_embeddings:
            self.output.weight = self.tok_embeddings.weight
        self.init_weights()

    def make_layer(self, config: ModelConfig) -> nn.Module:
        """One decoder layer; subclasses swap in their own (unimm.model.mot)."""
        return Block(config)

    @torch.no_grad()
    def init_weights(self) -> None:
        """Normal(0, 0.02) everywhere; residual output projections (attn.wo, mlp.w2) scaled by
        1 / sqrt(2 n_layers) so the residual stream's variance does not grow with depth
        (GPT-2, Radford et al. 2019). Works after `to_empty` from the meta device."""
        out_std = 0.02 / math.sqrt(2 * self.config.n_layers)
        for name, p in self.named_parameters():
            if p.ndim >= 2:
                is_out = name.endswith("attn.wo.weight") or name.endswith("mlp.w2.weight")
                nn.init.normal_(p, mean=0.0, std=out_std if is_out else 0.02)
            elif name.endswith(".bias"):
                nn.init.zeros_(p)
        for m in self.modules():
            if isinstance(m, RMSNorm | PerHeadLayerNorm):
                m.reset_parameters()

    def num_params(self, non_embedding: bool = True) -> int:
        """Parameter count; non_embedding excludes the token embedding and the output head."""
        n = sum(p.numel() for p in self.parameters())
        if non_embedding:
            n -= self.tok_embeddings.weight.numel()
            if not self.config.tie_embeddings:
                n -= self.output.weight.numel()
        return n

    def num_active_params(self, non_embedding: bool = True) -> int:
        """Parameters one token passes through: all of them in a dense model (unimm.model.mot
        routes each token to one of two experts)."""
        return self.num_params(non_embedding)

    def make_cache(
        self, batch_size: int, max_len: int | None = None, dtype: torch.dtype | None = None
    ) -> KVCache:
        c = self.config
        ref = self.tok_embeddings.weight
        return KVCache(
            c.n_layers,
            batch_size,
            c.n_kv_heads,
            max_len or c.max_seq_len,
            c.head_dim,
            device=ref.device,
            dtype=dtype or ref.dtype,
        )

    def head(self, hidden: Tensor) -> Tensor:
        """Logits from final hidden states: (B, T, D) -> (B, T, V)."""
        return self.output(hidden)

    def forward(
        self,
        tokens: Tensor | None,
        positions: Tensor | None = None,
        mask: Tensor | None = None,
        cache: KVCache | None = None,
        return_hidden: bool = False,
        *,
        embeds: Tensor | None = None,
    ) -> Tensor:
        """tokens (B, T) ids, or embeds (B, T, D) for recipes that embed inputs themselves.

        positions: (B, T) RoPE ids; None = consecutive, continuing after the cache. With
          config.rope_2d_pairs, (B, T, 3) ids (sequence, row, column) instead.
        mask: bool, broadcastable to (B, 1, T, S) with S = cached + T keys; True = may attend.
          None = causal. Build masks with unimm.model.masks.
        cache: written at cache.length and advanced by T.
        return_hidden: return the final-normed hidden states (B, T, D) instead of logits, so a
          recipe can apply its own heads (or `self.head` on a subset of positions).
        """
        x, cos, sin, mask, is_causal = self.prepare(tokens, embeds, positions, mask, cache)
        for i, layer in enumerate(self.layers):
            x = layer(x, cos, sin, mask=mask, is_causal=is_causal, cache=cache, layer=i)
        if cache is not None:
            cache.advance(x.shape[1])
        x = self.norm(x)  # (B, T, D)
        return x if return_hidden else self.head(x)

    def prepare(
        self,
        tokens: Tensor | None,
        embeds: Tensor | None,
        positions: Tensor | None,
        mask: Tensor | None,
        cache: KVCache | None,
    ) -> tuple[Tensor, Tensor, Tensor, Tensor | None, bool]:
        """What every layer needs, from `forward`'s arguments: inputs x (B, T, D), the RoPE
        tables, the checked mask and whether SDPA may take its own causal path."""
        if (tokens is None) == (embeds is None):
            raise ValueError("pass exactly one of tokens (B, T) or embeds (B, T, D)")
        x = self.tok_embeddings(tokens) if embeds is None else embeds  # (B, T, D)
        if x.ndim != 3 or x.shape[-1] != self.config.dim:
            raise ValueError(f"expected (B, T, {self.config.dim}) inputs, got {tuple(x.shape)}")
        B, T, _ = x.shape
        past = cache.length if cache is not None else 0
        c = self.config
        if positions is None:
            positions = torch.arange(past, past + T, device=x.device).expand(B, T)
        # (B, T, 3) only under 2-D RoPE; (B, T) ids there mean all three axes equal (text)
        shapes = [(B, T), (B, T, 3)] if c.rope_2d_pairs else [(B, T)]
        if positions.shape not in shapes:
            raise ValueError(
                f"positions must be {' or '.join(map(str, shapes))}, got {tuple(positions.shape)}"
            )
        inv_freq = None
        if c.rope_scaling != "none":
            inv_freq = scaled_inv_freq(
                c.head_dim,
                c.rope_theta,
                c.rope_scaling,
                c.rope_scaling_factor,
                c.rope_llama3_freq_factors,
                c.rope_original_max_seq_len,
            )
        axes = None
        if positions.ndim == 3:
            axes = rope_axes(c.head_dim, c.rope_2d_pairs)
        cos, sin = rope_cos_sin(positions, c.head_dim, c.rope_theta, inv_freq, axes)
        kind = x.device.type  # autocast exists for cpu/cuda/..., not e.g. the meta device
        if torch.amp.is_autocast_available(kind) and torch.is_autocast_enabled(kind):
            # Rotate in the autocast dtype: q/k arrive in bf16, and fp32 tables would promote
            # every rotation to fp32 and back (angles themselves are still computed in fp32).
            dtype = torch.get_autocast_dtype(kind)
            cos, sin = cos.to(dtype), sin.to(dtype)

        is_causal = False
        if mask is not None:
            if mask.dtype != torch.bool:
                raise ValueError(f"mask must be bool (True = may attend), got {mask.dtype}")
            if tuple(mask.shape[-2:]) != (T, past + T):
                raise ValueError(
                    f"mask must end in (T, S) = {(T, past + T)}, got {tuple(mask.shape)}"
                )
        elif past == 0:
            is_causal = T > 1  # SDPA's own causal path skips the masked half of the work
        elif T > 1:
            mask = causal_mask(T, past + T, device=x.device)  # (T, S), aligned bottom-right

        return x, cos, sin, mask, is_causal
