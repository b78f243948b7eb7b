"""The backbone's configuration and its named presets.

Presets are plain functions in a dict (DiT / torchtitan habit); variants come from keyword
overrides or `dataclasses.replace`, e.g. `MODEL_PRESETS["small"](vocab_size=4096)`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, fields
from typing import Any, Literal


def _swiglu_hidden(dim: int, multiple_of: int = 64) -> int:
    # SwiGLU has three matrices instead of two, so 8/3 * dim keeps the MLP's parameter count equal
    # to a 4 * dim GELU MLP (Shazeer, arXiv 2002.05202); round up so GEMMs tile cleanly.
    hidden = int(8 * dim / 3)
    return multiple_of * ((hidden + multiple_of - 1) // multiple_of)


@dataclass(kw_only=True, slots=True)
class ModelConfig:
    """A decoder-only transformer: RMSNorm, 1-D RoPE, grouped-query attention, SwiGLU.

    hidden_dim None means about 8/3 * dim rounded up to a multiple of 64 (resolved at creation).
    n_kv_heads None means plain multi-head attention (n_kv_heads = n_heads).
    """

    vocab_size: int
    dim: int = 256
    n_layers: int = 6
    n_heads: int = 8
    n_kv_heads: int | None = None
    hidden_dim: int | None = None
    max_seq_len: int = 2048
    rope_theta: float = 10000.0
    norm_eps: float = 1e-5
    qk_norm: bool = False  # RMSNorm on queries and keys per head; Chameleon uses it for stability
    # "rms": one RMSNorm shared by all heads. "layer_per_head": LayerNorm with a gain and bias
    # per head, as in the released Chameleon weights (imported by unimm.interop.hf_chameleon).
    qk_norm_kind: Literal["rms", "layer_per_head"] = "rms"
    # A learned attention sink per head (gpt-oss; softmax off by one): each query's softmax
    # also weighs a null key of logit `sink` and value zero, so a head whose keys all score low
    # outputs about nothing. Plain softmax must spread its weight somewhere, and "is there a
    # red circle?" then needs the attended value compared against the question; with the sink,
    # whether anything matched is the output's size (unimm.model.attention.Attention.attend).
    attention_sink: bool = False
    # How the null key scores. "logit": a learned logit per head, the same for every query; the
    # output is attention's times sigmoid(lse - sink), lse from the CPU flash kernel with its
    # gradient folded into the kernel's backward (unimm.model.sink_attention; about 1.1x a
    # training step). "key": a learned key vector per kv head, scored q . k_null like any key
    # and prepended to the keys, so plain SDPA computes it (about 1.0x a step; dense backbones
    # only, since experts that share attention need per-token logits).
    attention_sink_kind: Literal["logit", "key"] = "logit"
    # 2-D RoPE for image tokens (M-RoPE, Qwen2-VL arXiv 2409.12191; LlamaGen rotates its image
    # tokens in 2-D too): the first 2 * rope_2d_pairs rotation pairs of every head (the highest
    # frequencies) alternate between a token's row and column position ids, the rest keep its
    # sequence position. Positions then come as (B, T, 3) = (sequence, row, column); a text
    # token has all three equal, so text attends exactly as under 1-D RoPE. Why: under 1-D RoPE
    # the cell above is 8 positions back and the one to the left 1, so "is there a red code to
    # my left, in any row?" has no single rotation; with row and column on their own pairs it
    # does. 0 = 1-D RoPE. The recipe builds the positions (unimm.recipes.chameleon).
    rope_2d_pairs: int = 0
    tie_embeddings: bool = False
    qkv_bias: bool = False  # biases on the q/k/v projections (Qwen2 has them, Llama does not)
    # RoPE frequency scaling for longer contexts than pretraining saw (imported checkpoints):
    # "linear" divides every frequency by rope_scaling_factor (position interpolation, arXiv
    # 2306.15595); "llama3" divides only the low frequencies and blends the middle band, as in
    # Llama 3.1 (arXiv 2407.21783), using rope_llama3_freq_factors = (low, high) and
    # rope_original_max_seq_len.
    rope_scaling: Literal["none", "linear", "llama3"] = "none"
    rope_scaling_factor: float = 1.0
    rope_llama3_freq_factors: tuple[float, float] = (1.0, 4.0)
    rope_original_max_seq_len: int = 8192

    def __post_init__(self) -> None:
        if self.n_kv_heads is None:
            self.n_kv_heads = self.n_heads
        if self.hidden_dim is None:
            self.hidden_dim = _swiglu_hidden(self.dim)
        positive = {
            "vocab_size": self.vocab_size,
            "dim": self.dim,
            "n_layers": self.n_layers,
            "n_heads": self.n_heads,
            "n_kv_heads": self.n_kv_heads,
            "hidden_dim": self.hidden_dim,
            "max_seq_len": self.max_seq_len,
        }
        for name, value in positive.items():
            if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
                raise ValueError(f"ModelConfig.{name} must be a positive int, got {value!r}")
        if self.dim % self.n_heads:
            raise ValueError(
                f"ModelConfig.dim ({self.dim}) must be divisible by n_heads ({self.n_heads})"
            )
        if self.n_heads % self.n_kv_heads:
            raise ValueError(
                f"ModelConfig.n_heads ({self.n_heads}) must be divisible by "
                f"n_kv_heads ({self.n_kv_heads}) for grouped-query attention"
            )
        if self.head_dim % 2:
            raise ValueError(f"head_dim = dim / n_heads must be even for RoPE, got {self.head_dim}")
        if self.rope_theta <= 0:
            raise ValueError(f"ModelConfig.rope_theta must be > 0, got {self.rope_theta}")
        self.rope_llama3_freq_factors = tuple(float(x) for x in self.rope_llama3_freq_factors)
        if self.rope_scaling not in ("none", "linear", "llama3"):
            raise ValueError(
                f"ModelConfig.rope_scaling must be none, linear or llama3, got "
                f"{self.rope_scaling!r}"
            )
        low, high = self.rope_llama3_freq_factors
        if self.rope_scaling_factor <= 0 or not 0 < low < high:
            raise ValueError(
                "ModelConfig needs rope_scaling_factor > 0 and 0 < low < high in "
                f"rope_llama3_freq_factors, got {self.rope_scaling_factor}, {(low, high)}"
            )
        if self.attention_sink_kind not in ("logit", "key"):
            raise ValueError(
                f"ModelConfig.attention_sink_kind must be 'logit' or 'key', "
                f"got {self.attention_sink_kind!r}"
            )
        if self.qk_norm_kind not in ("rms", "layer_per_head"):
            raise ValueError(
                f"ModelConfig.qk_norm_kind must be 'rms' or 'layer_per_head', "
                f"got {self.qk_norm_kind!r}"
            )
        if self.norm_eps <= 0:
            raise ValueError(f"ModelConfig.norm_eps must be > 0, got {self.norm_eps}")
        if not 0 <= 2 * self.rope_2d_pairs <= self.head_dim // 2:
            raise ValueError(
                f"ModelConfig.rope_2d_pairs must be in [0, head_dim / 4 = {self.head_dim // 4}] "
                f"(a row and a column pair each, out of head_dim / 2), got {self.rope_2d_pairs}"
            )

    @property
    def head_dim(self) -> int:
        return self.dim // self.n_heads

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ModelConfig:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(
                f"unknown ModelConfig keys: {', '.join(unknown)} "
                f"(known: {', '.join(sorted(known))})"
            )
        return cls(**d)


def tiny(**overrides: Any) -> ModelConfig:
    """For tests: runs a step in milliseconds."""
    base: dict[str, Any] = dict(
        vocab_size=64, dim=32, n_layers=2, n_heads=4, n_kv_heads=2, max_seq_len=256
    )
    return ModelConfig(**{**base, **overrides})


def small(**overrides: Any) -> ModelConfig:
    """For the CPU quickstart: about 4.4M non-embedding parameters."""
    base: dict[str, Any] = dict(
        vocab_size=4096, dim=256, n_layers=6, n_heads=8, n_kv_heads=4, max_seq_len=1024
    )
    return ModelConfig(**{**base, **overrides})


def base(**overrides: Any) -> ModelConfig:
    """A GPU-sized starting point: about 35M non-embedding parameters."""
    base_: dict[str, Any] = dict(
        vocab_size=16384, dim=512, n_layers=12, n_heads=8, n_kv_heads=4, max_seq_len=2048
    )
    return ModelConfig(**{**base_, **overrides})


MODEL_PRESETS: dict[str, Callable[..., ModelConfig]] = {"tiny": tiny, "small": small, "base": base}
