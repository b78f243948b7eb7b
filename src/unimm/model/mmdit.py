"""MM-DiT-style backbone: per-modality weights, one joint attention, adaLN time modulation of
the noised tokens.

SD3's MM-DiT (arXiv 2403.03206, Sec. 4) gives text and image tokens their own weights and lets
them meet in one attention; D-DiT (arXiv 2501.00289) trains it with a diffusion loss on either
side. unimm's mixture of transformer experts (unimm.model.mot) already has that shape: one
expert per modality ("und" = text and markers, "gen" = image slots, clean or noisy), one SDPA
call over the whole sequence. This module adds the DiT time conditioning on top:

- A token may be *noised* (a target image's latents at flow time t, or a target answer's slots
  while they are being unmasked). Each row carries one conditioning vector c, the time
  embedding of its noised segment (DiT conditions per sample). A noised token's pre-attention
  and pre-MLP norms become adaLN, h = norm(x) (1 + scale) + shift, and each sub-layer's output
  is gated by (1 + gate) (DiT arXiv 2212.09748, Sec. 3.2); after the final norm, one more
  (shift, scale) pair.
- adaLN-single (PixArt-alpha arXiv 2310.00426, Sec. 2.3): one linear map per expert turns
  SiLU(c) into the six modulation vectors, shared by every layer, and each layer adds its own
  learned (6, D) table. So the time costs one (D, 6D) matmul per row and forward, not one per
  layer; the per-row vectors are gathered to the tokens (one (K, 6, D) gather per layer).
- Clean tokens (the prompt, a context image) are not modulated at all: they gather a zero
  row, so they pass exactly the MoT's layers whatever the modulation weights.
- Every modulation weight starts at zero with gates of the form (1 + gate), not DiT's
  adaLN-Zero gate: an untrained MM-DiT is then exactly the MoT, which is exactly the dense model
  (the generation expert starts as a copy), and the experts learn their time dependence from
  there.

Legend: B batch, T tokens, K tokens of one expert (flattened over B * T), D width.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from unimm.model.attention import KVCache
from unimm.model.config import ModelConfig
from unimm.model.mot import MoTBlock, MoTTransformer, Routing

EXPERTS = ("und", "gen")
Modulation = tuple[Tensor, ...] | None  # six (K, D) tensors, or None: no token is noised


def modulate(h: Tensor, m: Modulation, i: int) -> Tensor:
    """adaLN on normed h (K, D): h (1 + scale) + shift with (shift, scale) = m[i], m[i + 1]."""
    return h if m is None else h * (1 + m[i + 1]) + m[i]


def gated(y: Tensor, m: Modulation, i: int) -> Tensor:
    """A sub-layer's output y (K, D) scaled by (1 + gate), gate = m[i]."""
    return y if m is None else y * (1 + m[i])


class MMDiTBlock(MoTBlock):
    """`MoTBlock` whose noised tokens are modulated: shift/scale before attention and MLP, a
    gate after each. Order of the six vectors: DiT's (shift, scale, gate) for attention, then
    for the MLP."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__(config)
        # This layer's adaLN-single table per expert, added to the shared modulation. Stored
        # flat, (6 D,): it is a set of biases, so the trainer gives it no weight decay and
        # train.optimizer=muon no orthogonalised (matrix) update.
        self.table = nn.ParameterDict(
            {e: nn.Parameter(torch.zeros(6 * config.dim)) for e in EXPERTS}
        )

    def layer_modulation(self, shared: tuple[Tensor, Tensor] | None, expert: str) -> Modulation:
        """shared = ((B, 6, D) each row's modulation, (K,) row of each noised token, B at
        clean tokens) -> six (K, D) vectors of this layer, zero at clean tokens."""
        if shared is None:
            return None
        m, rows = shared
        table = m + self.table[expert].view(m.shape[1:])  # (B, 6, D)
        table = torch.cat([table, m.new_zeros(1, *m.shape[1:])])  # (B + 1, 6, D)
        return table.index_select(0, rows).unbind(1)

    def forward(
        self,
        x_und: Tensor,
        x_gen: Tensor,
        rope: tuple[tuple[Tensor, Tensor], tuple[Tensor, Tensor]],
        routing: Routing,
        shared: tuple[tuple[Tensor, Tensor] | None, tuple[Tensor, Tensor] | None] = (None, None),
        *,
        mask: Tensor | None,
        is_causal: bool,
        cache: KVCache | None,
        layer: int,
    ) -> tuple[Tensor, Tensor]:
        """x_und (K_und, D), x_gen (K_gen, D); shared: each expert's modulation inputs (see
        `layer_modulation`), None where it has no noised token."""
        u, g = self.und, self.gen
        mu, mg = self.layer_modulation(shared[0], "und"), self.layer_modulation(shared[1], "gen")
        qkv = routing.merge(
            torch.cat(u.attn.project(modulate(u.attn_norm(x_und), mu, 0), *rope[0]), dim=-2),
            torch.cat(g.attn.project(modulate(g.attn_norm(x_gen), mg, 0), *rope[1]), dim=-2),
        )  # (B, T, H + 2 Hkv, hd)
        a = u.attn
        q, k, v = qkv.split([a.n_heads, a.n_kv_heads, a.n_kv_heads], dim=-2)
        sink = self.token_sinks(routing, len(x_und), len(x_gen))
        y_und, y_gen = routing.split(
            a.attend(q, k, v, mask=mask, is_causal=is_causal, cache=cache, layer=layer, sink=sink)
        )  # (K, H * hd) each
        x_und = x_und + gated(u.attn.wo(y_und), mu, 2)
        x_gen = x_gen + gated(g.attn.wo(y_gen), mg, 2)
        x_und = x_und + gated(u.mlp(modulate(u.mlp_norm(x_und), mu, 3)), mu, 5)
        x_gen = x_gen + gated(g.mlp(modulate(g.mlp_norm(x_gen), mg, 3)), mg, 5)
        return x_und, x_gen


class MMDiTTransformer(MoTTransformer):
    """`MoTTransformer` with adaLN time modulation; forward takes `gen` (the image tokens),
    `cond` (per-token time embeddings) and `noised` (which tokens they modulate)."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__(config)
        D = config.dim
        # adaLN-single: one map per expert from SiLU(c) to the six vectors of every layer,
        # and one to the final (shift, scale).
        self.time_mod = nn.ModuleDict({e: nn.Linear(D, 6 * D) for e in EXPERTS})
        self.final_mod = nn.ModuleDict({e: nn.Linear(D, 2 * D) for e in EXPERTS})
        with torch.no_grad():
            for p in [*self.time_mod.parameters(), *self.final_mod.parameters()]:
                p.zero_()

    def make_layer(self, config: ModelConfig) -> nn.Module:
        return MMDiTBlock(config)

    @torch.no_grad()
    def init_weights(self) -> None:
        """The MoT's initialisation, then every modulation weight at zero (module docstring)."""
        super().init_weights()
        for name, p in self.named_parameters():
            if ".table." in name or name.startswith(("time_mod.", "final_mod.")):
                p.zero_()

    def expert_params(self, expert: str) -> list[nn.Parameter]:
        """The MoT's expert weights plus that expert's modulation (its tables and maps)."""
        own = super().expert_params(expert)
        tables = [layer.table[expert] for layer in self.layers]
        maps = list(self.time_mod[expert].parameters()) + list(self.final_mod[expert].parameters())
        return own + tables + maps

    def forward(
        self,
        tokens: Tensor | None,
        positions: Tensor | None = None,
        mask: Tensor | None = None,
        cache: KVCache | None = None,
        return_hidden: bool = False,
        *,
        embeds: Tensor | None = None,
        gen: Tensor | None = None,
        cond: Tensor | None = None,
        noised: Tensor | None = None,
    ) -> Tensor:
        """As `MoTTransformer.forward`; cond (B, D) each row's conditioning vector (the time
        embedding of its noised segment: DiT conditions per sample) and noised (B, T) bool the
        tokens it modulates; None: no token is noised (the MoT exactly)."""
        x, cos, sin, mask, is_causal = self.prepare(tokens, embeds, positions, mask, cache)
        B, T, D = x.shape
        if gen is None:
            gen = torch.zeros(B, T, dtype=torch.bool, device=x.device)
        if gen.dtype != torch.bool or gen.shape != (B, T):
            raise ValueError(f"gen must be a (B, T) = {(B, T)} bool tensor")
        if (cond is None) != (noised is None):
            raise ValueError("pass cond and noised together")
        if cond is not None and (cond.shape != (B, D) or noised.shape != (B, T)):
            raise ValueError(f"cond must be (B, D) = {(B, D)} and noised (B, T) = {(B, T)}")
        routing = Routing(gen)
        x_und, x_gen = routing.split(x)
        cos_und, cos_gen = routing.split(cos)
        sin_und, sin_gen = routing.split(sin)
        rope = ((cos_und, sin_und), (cos_gen, sin_gen))
        shared: list[tuple[Tensor, Tensor] | None] = [None, None]
        final: list[Modulation] = [None, None]
        if cond is not None:
            # Modulation is computed per row and gathered per token; clean tokens gather the
            # zero row B, so they see exactly none of it.
            row = torch.arange(B, device=x.device)[:, None].expand(B, T)
            rows = routing.split(torch.where(noised, row, B))  # (K,) per expert
            c = F.silu(cond)  # (B, D)
            for e, (name, r) in enumerate(zip(EXPERTS, rows, strict=True)):
                if not bool((r < B).any()):
                    continue  # no noised token of this expert: its layers stay the MoT's
                shared[e] = (self.time_mod[name](c).unflatten(-1, (6, D)), r)
                f = self.final_mod[name](c).unflatten(-1, (2, D))  # (B, 2, D)
                f = torch.cat([f, f.new_zeros(1, 2, D)]).index_select(0, r)  # (K, 2, D)
                final[e] = f.unbind(1)
        attn = {"mask": mask, "is_causal": is_causal, "cache": cache}
        for i, layer in enumerate(self.layers):
            x_und, x_gen = layer(x_und, x_gen, rope, routing, tuple(shared), layer=i, **attn)
        x = routing.merge(
            modulate(self.norm(x_und), final[0], 0), modulate(self.gen_norm(x_gen), final[1], 0)
        )  # (B, T, D)
        if cache is not None:
            cache.advance(T)
        return x if return_hidden else self.head(x)
