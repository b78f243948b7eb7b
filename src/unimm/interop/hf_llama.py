"""Hugging Face Llama / Qwen2 / Qwen3 checkpoints <-> the unimm backbone (unimm.model.Transformer).

The three families are the backbone unimm already has (pre-norm RMSNorm, rotate-half RoPE, GQA,
SwiGLU); Qwen2 adds biases on q/k/v (`ModelConfig.qkv_bias`), Qwen3 an RMSNorm over each head's
queries and keys before RoPE, shared by the heads (`ModelConfig.qk_norm`, kind "rms"). The
mapping is explicit, tensor by tensor; anything the backbone cannot express (rope scaling,
sliding windows, MLP or output biases, a head_dim that is not dim / n_heads) is refused by name
instead of silently dropped.

Name map (i = layer; unimm fuses q/k/v into wqkv and gate/up into w13, in that order):
    model.embed_tokens.weight                  tok_embeddings.weight
    model.layers.i.input_layernorm.weight      layers.i.attn_norm.weight
    model.layers.i.self_attn.{q,k,v}_proj.*    layers.i.attn.wqkv.*          (concatenated)
    model.layers.i.self_attn.o_proj.weight     layers.i.attn.wo.weight
    model.layers.i.self_attn.{q,k}_norm.weight layers.i.attn.{q,k}_norm.weight (Qwen3)
    model.layers.i.post_attention_layernorm.w  layers.i.mlp_norm.weight
    model.layers.i.mlp.{gate,up}_proj.weight   layers.i.mlp.w13.weight       (concatenated)
    model.layers.i.mlp.down_proj.weight        layers.i.mlp.w2.weight
    model.norm.weight                          norm.weight
    lm_head.weight                             output.weight (absent when tied)
"""

from __future__ import annotations

from pathlib import Path

import torch

from unimm.checkpoint import write_directory
from unimm.interop.hf_files import HFImportError, read_hf_config, read_hf_weights, write_hf_folder
from unimm.model.config import ModelConfig
from unimm.model.transformer import Transformer

LLM_TYPES = ("llama", "qwen2", "qwen3")
# Buffers some older checkpoints saved; they are recomputed from the config, never weights.
_IGNORED_SUFFIXES = (".rotary_emb.inv_freq",)


def rope_fields(cfg: dict, where: str) -> dict:
    """ModelConfig's RoPE fields from either config style (transformers 5 `rope_parameters`,
    older top-level `rope_theta` + `rope_scaling`); RoPE types unimm lacks are refused."""
    params = {**(cfg.get("rope_scaling") or {}), **(cfg.get("rope_parameters") or {})}
    kind = params.get("rope_type") or params.get("type") or "default"
    out: dict = {"rope_theta": float(params.get("rope_theta", cfg.get("rope_theta", 10000.0)))}
    if kind == "default":
        return out
    if kind not in ("linear", "llama3"):
        raise HFImportError(
            f"{where}: RoPE type {kind!r} is not supported (unimm implements default, linear "
            "and llama3)"
        )
    try:
        out.update(rope_scaling=kind, rope_scaling_factor=float(params["factor"]))
        if kind == "llama3":
            low, high = float(params["low_freq_factor"]), float(params["high_freq_factor"])
            out.update(
                rope_llama3_freq_factors=(low, high),
                rope_original_max_seq_len=int(params["original_max_position_embeddings"]),
            )
    except KeyError as e:
        raise HFImportError(f"{where}: RoPE type {kind!r} needs {e.args[0]!r}") from None
    return out


def model_config_from_hf(cfg: dict, where: str = "config.json") -> ModelConfig:
    """A transformers LlamaConfig / Qwen2Config / Qwen3Config dict -> the equivalent
    ModelConfig."""
    kind = cfg.get("model_type")
    if kind not in LLM_TYPES:
        raise HFImportError(f"{where}: model_type {kind!r} is not one of {list(LLM_TYPES)}")
    refuse = {
        "hidden_act": (cfg.get("hidden_act", "silu"), "silu"),
        "mlp_bias": (cfg.get("mlp_bias", False), False),
        "attention_bias": (cfg.get("attention_bias", False), False),
        "use_sliding_window": (cfg.get("use_sliding_window", False), False),
        "pretraining_tp": (cfg.get("pretraining_tp", 1), 1),
    }
    for key, (got, want) in refuse.items():
        if got != want:
            raise HFImportError(f"{where}: {key}={got!r} is not supported (unimm needs {want!r})")
    try:
        dim, n_heads = int(cfg["hidden_size"]), int(cfg["num_attention_heads"])
        head_dim = cfg.get("head_dim") or dim // n_heads
        if head_dim * n_heads != dim:
            raise HFImportError(
                f"{where}: head_dim={head_dim} with {n_heads} heads != hidden_size={dim}; "
                "unimm needs head_dim = hidden_size / num_attention_heads"
            )
        return ModelConfig(
            vocab_size=int(cfg["vocab_size"]),
            dim=dim,
            n_layers=int(cfg["num_hidden_layers"]),
            n_heads=n_heads,
            n_kv_heads=int(cfg.get("num_key_value_heads") or n_heads),
            hidden_dim=int(cfg["intermediate_size"]),
            max_seq_len=int(cfg.get("max_position_embeddings", 2048)),
            **rope_fields(cfg, where),
            norm_eps=float(cfg.get("rms_norm_eps", 1e-6)),
            tie_embeddings=bool(cfg.get("tie_word_embeddings", False)),
            qkv_bias=kind == "qwen2",
            qk_norm=kind == "qwen3",
        )
    except KeyError as e:
        raise HFImportError(f"{where}: missing key {e.args[0]!r}") from None


class _Consumer:
    """Takes tensors out of a name -> tensor dict by name with shape checks, so that leftovers
    (tensors nobody mapped) can be reported at the end instead of silently ignored."""

    def __init__(self, tensors: dict[str, torch.Tensor], where: str) -> None:
        self.left = dict(tensors)
        self.where = where

    def take(self, name: str, shape: tuple[int, ...]) -> torch.Tensor:
        if name not in self.left:
            raise HFImportError(f"{self.where}: missing tensor {name} (expected shape {shape})")
        t = self.left.pop(name)
        if tuple(t.shape) != tuple(shape):
            raise HFImportError(
                f"{self.where}: tensor {name} has shape {tuple(t.shape)}, "
                f"the config implies {shape}"
            )
        return t

    def finish(self, ignore: tuple[str, ...] = ()) -> None:
        extra = sorted(k for k in self.left if not k.endswith(_IGNORED_SUFFIXES + ignore))
        if extra:
            more = f" and {len(extra) - 5} more" if len(extra) > 5 else ""
            raise HFImportError(
                f"{self.where}: tensors the unimm backbone has no place for: {extra[:5]}{more}"
            )


def backbone_state_from_hf(
    tensors: dict[str, torch.Tensor],
    c: ModelConfig,
    where: str,
    prefix: str = "model.",
    head: str = "lm_head.weight",
    qk_norm: str | None = None,
    ignore: tuple[str, ...] = (),
) -> dict[str, torch.Tensor]:
    """The unimm Transformer state dict from Llama-layout tensors named `prefix...`.

    qk_norm: the q/k norm tensor names inside self_attn ("q_norm"/"k_norm") for families that
    have one (Chameleon, Qwen3); their values are taken as they are, shaped like the unimm
    backbone's: a weight and a bias per head (qk_norm_kind "layer_per_head", Chameleon) or one
    weight shared by the heads ("rms", Qwen3).
    """
    src = _Consumer(tensors, where)
    D, hd, H, Hkv, F = c.dim, c.head_dim, c.n_heads, c.n_kv_heads, c.hidden_dim
    out = {"tok_embeddings.weight": src.take(f"{prefix}embed_tokens.weight", (c.vocab_size, D))}
    for i in range(c.n_layers):
        p, a = f"{prefix}layers.{i}.", f"{prefix}layers.{i}.self_attn."
        q = src.take(a + "q_proj.weight", (H * hd, D))
        k = src.take(a + "k_proj.weight", (Hkv * hd, D))
        v = src.take(a + "v_proj.weight", (Hkv * hd, D))
        out[f"layers.{i}.attn.wqkv.weight"] = torch.cat([q, k, v])
        if c.qkv_bias:
            bq = src.take(a + "q_proj.bias", (H * hd,))
            bk = src.take(a + "k_proj.bias", (Hkv * hd,))
            bv = src.take(a + "v_proj.bias", (Hkv * hd,))
            out[f"layers.{i}.attn.wqkv.bias"] = torch.cat([bq, bk, bv])
        out[f"layers.{i}.attn.wo.weight"] = src.take(a + "o_proj.weight", (D, H * hd))
        if qk_norm is not None:
            per_head = c.qk_norm_kind == "layer_per_head"
            for which in ("q", "k"):
                for param in ("weight", "bias") if per_head else ("weight",):
                    name = f"{a}{which}_norm.{param}"
                    shape = (H if which == "q" else Hkv, hd) if per_head else (hd,)
                    out[f"layers.{i}.attn.{which}_norm.{param}"] = src.take(name, shape)
        out[f"layers.{i}.attn_norm.weight"] = src.take(p + "input_layernorm.weight", (D,))
        out[f"layers.{i}.mlp_norm.weight"] = src.take(p + "post_attention_layernorm.weight", (D,))
        gate = src.take(p + "mlp.gate_proj.weight", (F, D))
        up = src.take(p + "mlp.up_proj.weight", (F, D))
        out[f"layers.{i}.mlp.w13.weight"] = torch.cat([gate, up])
        out[f"layers.{i}.mlp.w2.weight"] = src.take(p + "mlp.down_proj.weight", (D, F))
    out["norm.weight"] = src.take(f"{prefix}norm.weight", (D,))
    if c.tie_embeddings:
        if head in src.left:  # some tied checkpoints store the head too: it must be the same
            lm = src.take(head, (c.vocab_size, D))
            if not torch.equal(lm, out["tok_embeddings.weight"]):
                raise HFImportError(
                    f"{where}: tie_word_embeddings is true but {head} differs from the embedding"
                )
        out["output.weight"] = out["tok_embeddings.weight"]
    else:
        out["output.weight"] = src.take(head, (c.vocab_size, D))
    src.finish(ignore)
    return out


def build_backbone(
    config: ModelConfig, state: dict[str, torch.Tensor], dtype: torch.dtype = torch.float32
) -> Transformer:
    """A Transformer holding `state`, built on the meta device so no random init is wasted."""
    with torch.device("meta"):
        model = Transformer(config)
    state = {k: v.to(dtype) for k, v in state.items()}
    model.load_state_dict(state, strict=True, assign=True)
    if config.tie_embeddings:
        model.output.weight = model.tok_embeddings.weight  # assign=True replaced the shared one
    return model


def load_hf_llm(directory: str | Path, dtype: torch.dtype = torch.float32) -> Transformer:
    """A Hugging Face Llama, Qwen2 or Qwen3 folder (config.json + safetensors, sharded or not) ->
    the unimm backbone, with identical outputs (up to float rounding)."""
    directory = Path(directory)
    cfg = read_hf_config(directory)
    config = model_config_from_hf(cfg, str(directory / "config.json"))
    qk_norm = "q_norm" if config.qk_norm else None
    state = backbone_state_from_hf(
        read_hf_weights(directory), config, str(directory), qk_norm=qk_norm
    )
    return build_backbone(config, state, dtype).eval()


# ----------------------------------------------------------------------------- export


def hf_config_from_model(c: ModelConfig, dtype: torch.dtype = torch.float32) -> dict:
    """The transformers config dict for a backbone: Qwen3 when it has the q/k norm, Qwen2 when
    it has q/k/v biases, else Llama."""
    if c.qk_norm and (c.qk_norm_kind != "rms" or c.qkv_bias):
        raise HFImportError(
            "a backbone with a per-head q/k LayerNorm, or with q/k norms and q/k/v biases, has no "
            "Llama/Qwen2/Qwen3 equivalent; export refused"
        )
    if c.attention_sink:
        raise HFImportError(
            "a backbone with attention sinks (model.attention_sink) has no Llama/Qwen2/Qwen3 "
            "equivalent; export refused"
        )
    if c.rope_2d_pairs:
        raise HFImportError(
            "a backbone with 2-D RoPE for image codes (model.rope_2d_pairs) has no Llama/Qwen2/"
            "Qwen3 equivalent (their RoPE is 1-D); export refused"
        )
    kind = "qwen3" if c.qk_norm else "qwen2" if c.qkv_bias else "llama"
    rope: dict = {"rope_type": "default", "rope_theta": c.rope_theta}
    if c.rope_scaling != "none":
        rope.update(rope_type=c.rope_scaling, factor=c.rope_scaling_factor)
    if c.rope_scaling == "llama3":
        low, high = c.rope_llama3_freq_factors
        rope.update(
            low_freq_factor=low,
            high_freq_factor=high,
            original_max_position_embeddings=c.rope_original_max_seq_len,
        )
    cfg = {
        "architectures": [
            {"llama": "LlamaForCausalLM", "qwen2": "Qwen2ForCausalLM", "qwen3": "Qwen3ForCausalLM"}[
                kind
            ]
        ],  # fmt: skip
        "model_type": kind,
        "vocab_size": c.vocab_size,
        "hidden_size": c.dim,
        "intermediate_size": c.hidden_dim,
        "num_hidden_layers": c.n_layers,
        "num_attention_heads": c.n_heads,
        "num_key_value_heads": c.n_kv_heads,
        "head_dim": c.head_dim,
        "hidden_act": "silu",
        "max_position_embeddings": c.max_seq_len,
        "rms_norm_eps": c.norm_eps,
        # Both spellings, so that older and newer transformers read the same RoPE.
        "rope_theta": c.rope_theta,
        "rope_parameters": rope,
        "rope_scaling": None if c.rope_scaling == "none" else rope,
        "tie_word_embeddings": c.tie_embeddings,
        "dtype": str(dtype).removeprefix("torch."),
    }
    if kind == "llama":
        cfg.update(attention_bias=False, mlp_bias=False)
    else:
        cfg.update(use_sliding_window=False)
    if kind == "qwen3":
        cfg.update(attention_bias=False)
    return cfg


def hf_state_from_backbone(model: Transformer) -> dict[str, torch.Tensor]:
    c = model.config
    s = model.state_dict()
    q_dim, kv_dim = c.n_heads * c.head_dim, c.n_kv_heads * c.head_dim
    out = {"model.embed_tokens.weight": s["tok_embeddings.weight"]}
    for i in range(c.n_layers):
        p, a = f"model.layers.{i}.", f"model.layers.{i}.self_attn."
        for part in ("weight", "bias") if c.qkv_bias else ("weight",):
            q, k, v = s[f"layers.{i}.attn.wqkv.{part}"].split([q_dim, kv_dim, kv_dim])
            out.update({f"{a}q_proj.{part}": q, f"{a}k_proj.{part}": k, f"{a}v_proj.{part}": v})
        out[a + "o_proj.weight"] = s[f"layers.{i}.attn.wo.weight"]
        if c.qk_norm:
            out[a + "q_norm.weight"] = s[f"layers.{i}.attn.q_norm.weight"]
            out[a + "k_norm.weight"] = s[f"layers.{i}.attn.k_norm.weight"]
        out[p + "input_layernorm.weight"] = s[f"layers.{i}.attn_norm.weight"]
        out[p + "post_attention_layernorm.weight"] = s[f"layers.{i}.mlp_norm.weight"]
        gate, up = s[f"layers.{i}.mlp.w13.weight"].split(c.hidden_dim)
        out.update({p + "mlp.gate_proj.weight": gate, p + "mlp.up_proj.weight": up})
        out[p + "mlp.down_proj.weight"] = s[f"layers.{i}.mlp.w2.weight"]
    out["model.norm.weight"] = s["norm.weight"]
    if not c.tie_embeddings:
        out["lm_head.weight"] = s["output.weight"]
    return {k: v.detach().contiguous() for k, v in out.items()}


def export_hf_llm(
    model: Transformer, directory: str | Path, max_shard_bytes: int | None = None
) -> Path:
    """Write the backbone as a Hugging Face folder that `AutoModelForCausalLM.from_pretrained`
    loads (LlamaForCausalLM; Qwen2ForCausalLM when the backbone has q/k/v biases,
    Qwen3ForCausalLM when it has the q/k norm).
    Recipe-specific parts around the backbone (e.g. Chameleon's 2-D image-position embedding)
    are not part of a Llama and are not exported."""
    config = hf_config_from_model(model.config, model.tok_embeddings.weight.dtype)
    tensors = hf_state_from_backbone(model)
    return write_directory(
        directory, lambda tmp: write_hf_folder(tmp, config, tensors, max_shard_bytes)
    )
