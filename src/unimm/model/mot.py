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

Legend: B batch, T tokens, K routed tokens of one expert, D width, gen (B, T) bool.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn

from unimm.model.attention import KVCache
from unimm.model.config import ModelConfig
from unimm.model.layers import RMSNorm
from unimm.model.transformer import Block, Transformer


def route(gen: Tensor | None, und: Callable, gen_fn: Callable, *xs: Tensor):
    """Apply `und` to the tokens where gen is False and `gen_fn` where it is True.

    xs: tensors (B, T, ...) aligned with gen (B, T); each function takes the selected tokens
    (K, ...) of every x and returns a tensor or a tuple of tensors (K, ...), which are scattered
    back to (B, T, ...). When one expert has every token (a text decode step, an image span run
    against a cached prompt) it runs on the whole (B, T, ...) tensors: no gather, no scatter.
    """
    if gen is None or not bool(gen.any()):
        return und(*xs)
    if bool(gen.all()):
        return gen_fn(*xs)
    ys_und, ys_gen = und(*(x[~gen] for x in xs)), gen_fn(*(x[gen] for x in xs))
    single = isinstance(ys_und, Tensor)
    if single:
        ys_und, ys_gen = (ys_und,), (ys_gen,)
    outs = []
    for yu, yg in zip(ys_und, ys_gen, strict=True):
        out = yu.new_empty(*gen.shape, *yu.shape[1:])  # (B, T, ...)
        out[~gen] = yu
        out[gen] = yg.to(out.dtype)
        outs.append(out)
    return outs[0] if single else tuple(outs)


class MoTBlock(nn.Module):
    """Two experts, each a whole pre-norm decoder layer's weights (`Block`), one attention."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.und = Block(config)
        self.gen = Block(config)

    def forward(
        self,
        x: Tensor,
        cos: Tensor,
        sin: Tensor,
        gen: Tensor | None,
        *,
        mask: Tensor | None,
        is_causal: bool,
        cache: KVCache | None,
        layer: int,
    ) -> Tensor:
        u, g = self.und, self.gen

        def qkv(e: Block) -> Callable:
            return lambda x, cos, sin: e.attn.project(e.attn_norm(x), cos, sin)

        def mlp(e: Block) -> Callable:
            return lambda x: e.mlp(e.mlp_norm(x))

        q, k, v = route(gen, qkv(u), qkv(g), x, cos, sin)  # (B, T, H|Hkv, hd)
        # The experts share attention: attend() has no weights, either expert's would do.
        y = u.attn.attend(q, k, v, mask=mask, is_causal=is_causal, cache=cache, layer=layer)
        x = x + route(gen, u.attn.wo, g.attn.wo, y)  # (B, T, D)
        return x + route(gen, mlp(u), mlp(g), x)


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
        for i, layer in enumerate(self.layers):
            x = layer(x, cos, sin, gen, mask=mask, is_causal=is_causal, cache=cache, layer=i)
        if cache is not None:
            cache.advance(x.shape[1])
        x = route(gen, self.norm, self.gen_norm, x)  # (B, T, D)
        return x if return_hidden else self.head(x)
