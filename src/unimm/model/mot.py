"""Mixture of transformer experts (MoT): one expert of weights per modality, one attention.

BAGEL (arXiv 2505.14683, Sec. 2) builds on Mixture-of-Transformers (arXiv 2411.04996): every
layer holds two copies of a decoder layer's weights (attention norm, q/k/v projections, q/k
norms, output projection, MLP norm, SwiGLU) and each token uses the copy of its modality:
generation tokens (the noisy VAE latents of an image being generated) the generation expert,
everything else (text, markers, understanding/ViT tokens) the understanding expert. Attention
itself is shared: queries, keys and values of both experts' tokens are scattered back into
sequence order and attend in one SDPA call, under whatever mask the caller passes, so the KV
cache holds both kinds of keys and the layer is a dense layer whenever one expert is idle.
The final norm is per expert too (BAGEL's `norm` / `norm_moe_gen`). The generation expert
starts as a copy of the understanding expert, as in BAGEL (both from the LLM there).

Every token passes exactly one expert, so a token's active parameters equal a dense
`Transformer`'s with the same ModelConfig (`num_active_params`); the total is about twice the
layers' weights.

Legend: B batch, T tokens, K tokens of one expert (flattened over B * T), D width, gen (B, T)
bool.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from unimm.model.attention import KVCache
from unimm.model.config import ModelConfig
from unimm.model.layers import RMSNorm
from unimm.model.transformer import Block, Transformer


class Routing:
    """Which tokens each expert takes, worked out once per forward and shared by all layers.

    The residual stream stays split between the experts through the whole network, (K_und, D)
    and (K_gen, D) in flattened (B * T) order; only attention needs sequence order, so each
    layer merges one tensor (the fused q/k/v) and splits one (the heads' outputs).
    """

    def __init__(self, gen: Tensor) -> None:
        self.shape = gen.shape  # (B, T)
        flat = gen.reshape(-1)
        self.und = (~flat).nonzero().squeeze(1)  # (K_und,) flat token indices
        self.gen = flat.nonzero().squeeze(1)  # (K_gen,)

    def split(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """(B, T, ...) -> (K_und, ...), (K_gen, ...)."""
        flat = x.reshape(-1, *x.shape[2:])
        return flat.index_select(0, self.und), flat.index_select(0, self.gen)

    def merge(self, x_und: Tensor, x_gen: Tensor) -> Tensor:
        """(K_und, ...), (K_gen, ...) -> (B, T, ...) in sequence order."""
        out = x_und.new_empty(self.shape.numel(), *x_und.shape[1:])
        out = out.index_copy(0, self.und, x_und).index_copy(0, self.gen, x_gen.to(out.dtype))
        return out.view(*self.shape, *x_und.shape[1:])


class MoTBlock(nn.Module):
    """Two experts, each a whole pre-norm decoder layer's weights (`Block`), one attention.
    When one expert has every token its `Block` runs as it is (a dense layer)."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        if config.attention_sink and config.attention_sink_kind != "logit":
            # a null key is one more key of the shared attention, so it could not be an
            # expert's own weight the way a per-token logit is
            raise ValueError(
                "experts that share one attention take model.attention_sink_kind='logit', got "
                f"{config.attention_sink_kind!r}"
            )
        self.und = Block(config)
        self.gen = Block(config)

    def token_sinks(self, routing: Routing, n_und: int, n_gen: int) -> Tensor | None:
        """Each token's expert's attention sinks (B, T, H), or None without sinks: the experts
        share attention, and the sinks are its only weights."""
        if self.und.attn.sink is None:
            return None
        und, gen = self.und.attn.sink, self.gen.attn.sink
        return routing.merge(und.expand(n_und, -1), gen.expand(n_gen, -1))

    def forward(
        self,
        x_und: Tensor,
        x_gen: Tensor,
        rope: tuple[tuple[Tensor, Tensor], tuple[Tensor, Tensor]],
        routing: Routing,
        *,
        mask: Tensor | None,
        is_causal: bool,
        cache: KVCache | None,
        layer: int,
    ) -> tuple[Tensor, Tensor]:
        """x_und (K_und, D), x_gen (K_gen, D); rope: each expert's (cos, sin) (K, 1, hd)."""
        u, g = self.und, self.gen
        qkv = routing.merge(
            torch.cat(u.attn.project(u.attn_norm(x_und), *rope[0]), dim=-2),
            torch.cat(g.attn.project(g.attn_norm(x_gen), *rope[1]), dim=-2),
        )  # (B, T, H + 2 Hkv, hd)
        a = u.attn
        q, k, v = qkv.split([a.n_heads, a.n_kv_heads, a.n_kv_heads], dim=-2)
        sink = self.token_sinks(routing, len(x_und), len(x_gen))
        y_und, y_gen = routing.split(
            a.attend(q, k, v, mask=mask, is_causal=is_causal, cache=cache, layer=layer, sink=sink)
        )  # (K, H * hd) each
        x_und = x_und + u.attn.wo(y_und)
        x_gen = x_gen + g.attn.wo(y_gen)
        return x_und + u.mlp(u.mlp_norm(x_und)), x_gen + g.mlp(g.mlp_norm(x_gen))


class MoTTransformer(Transformer):
    """`Transformer` with `MoTBlock` layers; forward takes `gen`, the generation tokens."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__(config)
        self.gen_norm = RMSNorm(config.dim, eps=config.norm_eps)
        self.init_weights()

    def make_layer(self, config: ModelConfig) -> nn.Module:
        return MoTBlock(config)

    @torch.no_grad()
    def init_weights(self) -> None:
        """The dense initialisation for the understanding expert, then the generation expert
        as its copy (BAGEL initialises both from the same LLM)."""
        super().init_weights()
        for layer in self.layers:
            layer.gen.load_state_dict(layer.und.state_dict())
        if hasattr(self, "gen_norm"):  # built after the layers
            self.gen_norm.load_state_dict(self.norm.state_dict())

    def expert_params(self, expert: str) -> list[nn.Parameter]:
        """The parameters only tokens of `expert` ("und" or "gen") use."""
        if expert not in ("und", "gen"):
            raise ValueError(f"expert must be 'und' or 'gen', got {expert!r}")
        norm = self.gen_norm if expert == "gen" else self.norm
        return [p for layer in self.layers for p in getattr(layer, expert).parameters()] + list(
            norm.parameters()
        )

    def num_active_params(self, non_embedding: bool = True) -> int:
        """Parameters one token uses: everything but the other expert (both experts have the
        same size, so this is the same for a text and an image token)."""
        return self.num_params(non_embedding) - sum(p.numel() for p in self.expert_params("gen"))

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
    ) -> Tensor:
        """As `Transformer.forward`; gen (B, T) bool marks the tokens of the generation expert
        (None: every token is an understanding token)."""
        x, cos, sin, mask, is_causal = self.prepare(tokens, embeds, positions, mask, cache)
        if gen is not None and (gen.dtype != torch.bool or gen.shape != x.shape[:2]):
            raise ValueError(f"gen must be a (B, T) = {tuple(x.shape[:2])} bool tensor")
        attn = {"mask": mask, "is_causal": is_causal, "cache": cache}
        n_gen = 0 if gen is None else int(gen.sum())
        if n_gen == 0 or n_gen == gen.numel():
            # One expert has every token (a text decode step, an image span against a cached
            # prompt): its layers are dense layers.
            expert = "gen" if n_gen else "und"
            for i, layer in enumerate(self.layers):
                x = getattr(layer, expert)(x, cos, sin, layer=i, **attn)
            x = (self.gen_norm if n_gen else self.norm)(x)
        else:
            routing = Routing(gen)
            x_und, x_gen = routing.split(x)
            cos_und, cos_gen = routing.split(cos)
            sin_und, sin_gen = routing.split(sin)
            rope = ((cos_und, sin_und), (cos_gen, sin_gen))
            for i, layer in enumerate(self.layers):
                x_und, x_gen = layer(x_und, x_gen, rope, routing, layer=i, **attn)
            x = routing.merge(self.norm(x_und), self.gen_norm(x_gen))  # (B, T, D)
        if cache is not None:
            cache.advance(x.shape[1])
        return x if return_hidden else self.head(x)
