"""Grouped-query self-attention over torch's SDPA, and a preallocated KV cache.

Grouped-query attention (GQA, arXiv 2305.13245): n_kv_heads < n_heads key/value heads, each
shared by n_heads / n_kv_heads query heads; the cache stores only the kv heads.
"""

from __future__ import annotations

import contextlib

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from unimm.model.config import ModelConfig
from unimm.model.layers import PerHeadLayerNorm, RMSNorm, apply_rope
from unimm.model.sink_attention import sink_attention

# On CPU, SDPA's bf16 backward is 2-3x slower than its fp32 backward at this project's shapes
# (T ~ 100, head_dim 32: 170 ms vs 64 ms per layer and batch of 48 on AMD Zen 4), while
# attention is a small share of the step's FLOPs. So under bf16 autocast, attention that
# will be differentiated runs in fp32 and casts back; inference keeps bf16 (its forward is as
# fast). benchmarks/bench_attention_precision.py measures the step with this on and off.
UPCAST_CPU_BF16_ATTENTION_GRAD = True


def upcast_for_backward(q: Tensor) -> bool:
    """Whether attention over q runs in fp32 (UPCAST_CPU_BF16_ATTENTION_GRAD)."""
    return (
        UPCAST_CPU_BF16_ATTENTION_GRAD
        and q.device.type == "cpu"
        and q.dtype == torch.bfloat16
        and q.requires_grad
        and torch.is_grad_enabled()
    )


class KVCache:
    """Keys and values of every layer, preallocated as (n_layers, B, n_kv_heads, max_len, hd).

    Usage: a prefill forward writes positions [0, T0), then each step writes the next T tokens
    (usually one) at `length`; the model advances `length` after all layers wrote. Every row of
    the batch shares `length` (generation left-pads prompts so that rows stay aligned).
    `crop(n)` rolls back to n tokens (run a span against a cached context, then forget it) and
    `select(rows)` keeps a subset or reordering of batch rows.
    `state` holds per-row running values that a recipe carries along with the cache (e.g. how
    many image tokens each row has seen, for image-position embeddings); select() reorders
    them, and crop() refuses to roll back a cache that has any, since it cannot undo them.
    """

    def __init__(
        self,
        n_layers: int,
        batch_size: int,
        n_kv_heads: int,
        max_len: int,
        head_dim: int,
        *,
        device: torch.device | str | None = None,
        dtype: torch.dtype = torch.float32,
    ) -> None:
        shape = (n_layers, batch_size, n_kv_heads, max_len, head_dim)
        self.k = torch.zeros(shape, device=device, dtype=dtype)
        self.v = torch.zeros(shape, device=device, dtype=dtype)
        self.length = 0
        self.state: dict[str, Tensor] = {}  # per-row tensors, first dim = batch

    @property
    def max_len(self) -> int:
        return self.k.shape[3]

    @property
    def batch_size(self) -> int:
        return self.k.shape[1]

    def update(self, layer: int, k: Tensor, v: Tensor) -> tuple[Tensor, Tensor]:
        """Write k, v (B, n_kv_heads, T, hd) at `length`; return all keys/values so far."""
        end = self.length + k.shape[2]
        if end > self.max_len:
            raise ValueError(f"KVCache overflow: {end} tokens > max_len {self.max_len}")
        if k.shape[0] != self.batch_size:
            raise ValueError(f"KVCache holds {self.batch_size} rows, got a batch of {k.shape[0]}")
        self.k[layer, :, :, self.length : end] = k
        self.v[layer, :, :, self.length : end] = v
        return self.k[layer, :, :, :end], self.v[layer, :, :, :end]  # (B, Hkv, end, hd)

    def advance(self, n: int) -> None:
        self.length += n

    def crop(self, length: int) -> None:
        if not 0 <= length <= self.length:
            raise ValueError(f"cannot crop a KVCache of length {self.length} to {length}")
        if self.state and length != self.length:
            raise ValueError(f"cannot crop a KVCache that carries state {sorted(self.state)}")
        self.length = length

    def snapshot(self) -> tuple[int, dict[str, Tensor]]:
        """The cache's length and per-row state, to come back to with `restore`: run a span
        against a cached context several times (masked-diffusion steps over a cached prompt)."""
        return self.length, dict(self.state)

    def restore(self, mark: tuple[int, dict[str, Tensor]]) -> None:
        length, state = mark
        if not 0 <= length <= self.length:
            raise ValueError(f"cannot restore a KVCache of length {self.length} to {length}")
        self.length, self.state = length, dict(state)

    def select(self, rows: Tensor | list[int]) -> None:
        """Keep only these batch rows (in this order), e.g. to drop finished sequences."""
        idx = torch.as_tensor(rows, dtype=torch.long, device=self.k.device)
        self.k = self.k.index_select(1, idx)
        self.v = self.v.index_select(1, idx)
        self.state = {k: v.index_select(0, idx) for k, v in self.state.items()}


def log_normaliser(q: Tensor, k: Tensor, mask: Tensor | None, is_causal: bool) -> Tensor:
    """log sum_j exp(q . k_j / sqrt(hd)) over the keys each query may see, as SDPA masks them
    (is_causal: top-left aligned, query i sees keys 0..i): q (B, H, T, hd), k (B, Hkv, S, hd)
    -> (B, H, T, 1). SDPA does not return it; recomputing the scores costs one more QK^T."""
    if k.shape[1] != q.shape[1]:
        k = k.repeat_interleave(q.shape[1] // k.shape[1], dim=1)
    scores = (q @ k.transpose(-1, -2)) * q.shape[-1] ** -0.5  # (B, H, T, S)
    if is_causal:
        T, S = scores.shape[-2:]
        seen = torch.ones(T, S, dtype=torch.bool, device=q.device).tril()
        scores = scores.masked_fill(~seen, float("-inf"))
    elif mask is not None:
        scores = (
            scores.masked_fill(~mask, float("-inf")) if mask.dtype == torch.bool else scores + mask
        )
    return scores.logsumexp(-1, keepdim=True)


def gate_by_recomputed_sink(
    y: Tensor, q: Tensor, k: Tensor, sink: Tensor, mask: Tensor | None, is_causal: bool
) -> Tensor:
    """Attention's output y (B, H, T, hd) as if a null key of logit `sink` ((H,) per head or
    (B, T, H) per token) and value zero had been among the keys: softmax with it = plain
    softmax x Z / (Z + e^sink), the normaliser Z recomputed (log_normaliser). The path off the
    CPU, and the reference for the fused kernel (unimm.model.sink_attention)."""
    lse = log_normaliser(q, k, mask, is_causal)  # (B, H, T, 1)
    sink = sink.view(1, -1, 1) if sink.dim() == 1 else sink.transpose(1, 2)  # (B|1, H, T|1)
    return y * torch.sigmoid(lse - sink.to(lse.dtype).unsqueeze(-1))


def prepend_null_key(
    q: Tensor, k: Tensor, v: Tensor, null_key: Tensor, mask: Tensor | None, is_causal: bool
) -> tuple[Tensor, Tensor, Tensor, Tensor | None]:
    """Put a null key (Hkv, hd) of value zero before the keys k, v (B, Hkv, S, hd), visible to
    every query. Under is_causal (top-left aligned) a zero query row goes before q too, so
    that query i still sees keys 0..i and SDPA keeps its causal path; the caller drops that
    row's output. A mask gains a visible first column."""
    B, Hkv, _, hd = k.shape
    k = torch.cat([null_key.to(k.dtype).view(1, Hkv, 1, hd).expand(B, -1, -1, -1), k], dim=2)
    v = torch.cat([v.new_zeros(B, Hkv, 1, hd), v], dim=2)
    if is_causal:
        q = torch.cat([q.new_zeros(B, q.shape[1], 1, hd), q], dim=2)
    elif mask is not None:
        visible = True if mask.dtype == torch.bool else 0.0
        mask = torch.cat([mask.new_full((*mask.shape[:-1], 1), visible), mask], dim=-1)
    return q, k, v, mask


class Attention(nn.Module):
    """Causal-or-masked self-attention with a fused q/k/v projection and optional QK-norm."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.n_heads = config.n_heads
        self.n_kv_heads = config.n_kv_heads
        self.head_dim = config.head_dim
        q_dim, kv_dim = self.n_heads * self.head_dim, self.n_kv_heads * self.head_dim
        # One matmul for q, k and v: fewer, larger GEMMs are faster on CPU and GPU alike.
        self.wqkv = nn.Linear(config.dim, q_dim + 2 * kv_dim, bias=config.qkv_bias)
        self.wo = nn.Linear(q_dim, config.dim, bias=False)
        self.qk_norm = config.qk_norm
        if config.qk_norm:
            # QK-norm keeps attention logits bounded (Chameleon, arXiv 2405.09818, section 2.3).
            if config.qk_norm_kind == "layer_per_head":
                self.q_norm = PerHeadLayerNorm(self.n_heads, self.head_dim)
                self.k_norm = PerHeadLayerNorm(self.n_kv_heads, self.head_dim)
            else:
                self.q_norm = RMSNorm(self.head_dim, eps=config.norm_eps)
                self.k_norm = RMSNorm(self.head_dim, eps=config.norm_eps)
        # config.attention_sink: the null key's logit per head, or its key per kv head; zero
        # (either way a logit of 0 for every query at the start) is softmax off by one
        self.sink = self.null_key = None
        if config.attention_sink and config.attention_sink_kind == "logit":
            self.sink = nn.Parameter(torch.zeros(self.n_heads))
        elif config.attention_sink:
            self.null_key = nn.Parameter(torch.zeros(self.n_kv_heads, self.head_dim))

    def project(self, x: Tensor, cos: Tensor, sin: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Queries, keys and values of x (..., D), normed and rotated: (..., H, hd), (..., Hkv,
        hd), (..., Hkv, hd). Any leading dims, with cos/sin (..., 1, hd) aligned to them, so a
        mixture of experts can project its tokens' subsets with each expert's weights."""
        H, Hkv = self.n_heads, self.n_kv_heads
        qkv = self.wqkv(x).view(*x.shape[:-1], H + 2 * Hkv, self.head_dim)  # (..., H + 2 Hkv, hd)
        if self.qk_norm:
            q = apply_rope(self.q_norm(qkv[..., :H, :]), cos, sin)  # (..., H, hd)
            k = apply_rope(self.k_norm(qkv[..., H : H + Hkv, :]), cos, sin)  # (..., Hkv, hd)
        else:
            # Rotate queries and keys in one pass: half the elementwise kernel launches.
            qk = apply_rope(qkv[..., : H + Hkv, :], cos, sin)  # (..., H + Hkv, hd)
            q, k = qk[..., :H, :], qk[..., H:, :]
        return q, k, qkv[..., H + Hkv :, :]

    def attend(
        self,
        q: Tensor,
        k: Tensor,
        v: Tensor,
        *,
        mask: Tensor | None,
        is_causal: bool,
        cache: KVCache | None,
        layer: int,
        sink: Tensor | None = None,
    ) -> Tensor:
        """Attention of q (B, T, H, hd) over k, v (B, T, Hkv, hd) and the cache's keys; returns
        the heads' outputs (B, T, H * hd) before the output projection. Its only weights are
        the sinks (config.attention_sink): self.sink per head or self.null_key per kv head, or
        `sink` (B, T, H) per token where experts share one attention (unimm.model.mot)."""
        B, T = q.shape[:2]
        q, k, v = q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)  # (B, H|Hkv, T, hd)
        if cache is not None:
            k, v = cache.update(layer, k.to(cache.k.dtype), v.to(cache.v.dtype))
            k, v = k.to(q.dtype), v.to(q.dtype)  # (B, Hkv, S, hd)
        dtype = q.dtype
        upcast = upcast_for_backward(q)
        if upcast:
            q, k, v = q.float(), k.float(), v.float()
        # CPU autocast would cast fp32 inputs of SDPA back to bf16: step out of it to upcast.
        with torch.autocast("cpu", enabled=False) if upcast else contextlib.nullcontext():
            if self.null_key is not None:
                q, k, v, mask = prepend_null_key(q, k, v, self.null_key, mask, is_causal)
            sink = self.sink if sink is None else sink  # (H,) or (B, T, H), or None
            if sink is not None and q.device.type == "cpu":
                y = sink_attention(q, k, v, sink, mask, is_causal)  # one fused kernel
            else:
                y = F.scaled_dot_product_attention(
                    q,
                    k,
                    v,
                    attn_mask=mask,
                    is_causal=is_causal,
                    enable_gqa=self.n_kv_heads != self.n_heads,
                )  # (B, H, T, hd), or T + 1 rows with the null key under is_causal
                if sink is not None:
                    y = gate_by_recomputed_sink(y, q, k, sink, mask, is_causal)
            if self.null_key is not None and is_causal:
                y = y[:, :, 1:]
        return y.to(dtype).transpose(1, 2).reshape(B, T, -1)

    def forward(
        self,
        x: Tensor,
        cos: Tensor,
        sin: Tensor,
        *,
        mask: Tensor | None,
        is_causal: bool,
        cache: KVCache | None,
        layer: int,
    ) -> Tensor:
        q, k, v = self.project(x, cos, sin)  # x (B, T, D)
        y = self.attend(q, k, v, mask=mask, is_causal=is_causal, cache=cache, layer=layer)
        return self.wo(y)  # (B, T, D)
