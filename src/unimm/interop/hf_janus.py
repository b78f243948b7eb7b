"""Hugging Face `JanusForConditionalGeneration` (Janus / Janus-Pro) checkpoints in unimm.

Janus (arXiv 2410.13848) decouples the two image paths around one Llama: understanding reads
SigLIP features through an MLP aligner into `<image>` placeholder slots; generation predicts
VQ codes with its own embedding, aligner MLP and head, outside the text vocabulary.

What runs where:
- the Llama language model -> the unimm backbone (the Llama name map of unimm.interop.hf_llama
  under `model.language_model.`), so text logits and text decoding are unimm's own;
- the generation embedding, aligner and head -> small unimm modules (`JanusImageHead`), so image
  generation is unimm's KV-cached sampler with classifier-free guidance;
- the SigLIP vision tower + its aligner and the VQ encoder/decoder are transformers' own modules
  built from the folder's sub-configs and given its tensors (safetensors only).

`HFJanus` keeps Janus's own ids and prompt format (inference only). To get a trainable unimm
model, import the folder into the janus recipe instead: unimm.interop.hf_janus_recipe
(`unimm import SRC DEST --kind janus`, `JanusModel.from_pretrained(SRC)`).
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from unimm.interop.hf_files import HFImportError, read_hf_config, read_hf_weights
from unimm.interop.hf_llama import backbone_state_from_hf, build_backbone, model_config_from_hf
from unimm.model.attention import KVCache
from unimm.model.transformer import Transformer
from unimm.paradigms.autoregressive import generate

LM_PREFIX = "model.language_model."
PREFIXES = {
    "vision": "model.vision_model.",
    "aligner": "model.aligner.",
    "vq": "model.vqmodel.",
    "gen_embed": "model.generation_embeddings.",
    "gen_aligner": "model.generation_aligner.",
    "gen_head": "model.generation_head.",
}


def _split(tensors: dict[str, Tensor]) -> dict[str, dict[str, Tensor]]:
    parts: dict[str, dict[str, Tensor]] = {k: {} for k in PREFIXES}
    for name, t in tensors.items():
        for key, prefix in PREFIXES.items():
            if name.startswith(prefix):
                parts[key][name[len(prefix) :]] = t
    return parts


def _read_llm(directory: Path, dtype: torch.dtype) -> tuple[Transformer, dict, dict[str, Tensor]]:
    cfg = read_hf_config(directory)
    where = str(directory / "config.json")
    if cfg.get("model_type") != "janus":
        raise HFImportError(f"{where}: model_type {cfg.get('model_type')!r} is not 'janus'")
    text_cfg = dict(cfg.get("text_config") or {})
    text_cfg.setdefault("model_type", "llama")
    # JanusForConditionalGeneration ties its lm_head by the top-level flag, not the text one.
    text_cfg["tie_word_embeddings"] = bool(cfg.get("tie_word_embeddings", True))
    config = model_config_from_hf(text_cfg, where + " (text_config)")
    tensors = read_hf_weights(directory)
    lm = {k: v for k, v in tensors.items() if not k.startswith(tuple(PREFIXES.values()))}
    state = backbone_state_from_hf(lm, config, str(directory), prefix=LM_PREFIX)
    return build_backbone(config, state, dtype).eval(), cfg, tensors


def load_hf_janus_llm(directory: str | Path, dtype: torch.dtype = torch.float32) -> Transformer:
    """The Llama inside a Hugging Face Janus folder as a unimm backbone."""
    return _read_llm(Path(directory), dtype)[0]


class _MLP(nn.Module):
    """Linear, then (GELU, Linear) x (depth - 1): Janus's aligners and generation head."""

    def __init__(self, dims: list[int]) -> None:
        super().__init__()
        self.layers = nn.ModuleList(nn.Linear(a, b) for a, b in zip(dims[:-1], dims[1:]))

    def forward(self, x: Tensor) -> Tensor:
        for i, layer in enumerate(self.layers):
            x = layer(F.gelu(x) if i else x)
        return x


class JanusImageHead(nn.Module):
    """Janus's generation path around the LLM: code -> embedding -> aligner -> LLM input, and
    LLM hidden state -> head -> code logits."""

    def __init__(self, n_codes: int, code_dim: int, dim: int, hidden: int, depth: int) -> None:
        super().__init__()
        self.embed = nn.Embedding(n_codes, code_dim)
        self.aligner = _MLP([code_dim] + [hidden] * depth)
        self.head = _MLP([dim, hidden, n_codes])

    def embed_codes(self, codes: Tensor) -> Tensor:
        return self.aligner(self.embed(codes))  # (B, T, D)

    @classmethod
    def from_hf(cls, vq_cfg: dict, parts: dict[str, dict[str, Tensor]], where: str):
        n, code_dim = int(vq_cfg.get("num_embeddings", 16384)), int(vq_cfg.get("embed_dim", 8))
        hidden = int(vq_cfg.get("projection_dim", 2048))
        depth = int(vq_cfg.get("num_hidden_layers", 2))
        dim = int(vq_cfg.get("image_token_embed_dim", 2048))
        if vq_cfg.get("hidden_act", "gelu") != "gelu":
            raise HFImportError(f"{where}: vq_config.hidden_act must be 'gelu'")
        module = cls(n, code_dim, dim, hidden, depth)
        state = {"embed.weight": parts["gen_embed"].get("weight")}
        aligner = parts["gen_aligner"]
        names = ["fc1"] + [f"hidden_layers.{i}" for i in range(depth - 1)]
        for i, name in enumerate(names):
            for p in ("weight", "bias"):
                state[f"aligner.layers.{i}.{p}"] = aligner.get(f"{name}.{p}")
        for i, name in enumerate(("proj_out", "vision_head")):
            for p in ("weight", "bias"):
                state[f"head.layers.{i}.{p}"] = parts["gen_head"].get(f"{name}.{p}")
        expected = module.state_dict()
        for key, t in state.items():
            if t is None or t.shape != expected[key].shape:
                got = None if t is None else tuple(t.shape)
                raise HFImportError(
                    f"{where}: generation tensor for {key} is {got}, "
                    f"vq_config implies {tuple(expected[key].shape)}"
                )
        used = len(aligner) + len(parts["gen_head"]) + len(parts["gen_embed"])
        if used != len(state):
            raise HFImportError(f"{where}: generation modules hold tensors unimm does not map")
        module.load_state_dict(state)
        return module.eval().requires_grad_(False)


class _ImageLM(nn.Module):
    """A `CausalLM` view for the sampler: ids < V are text, ids in [V, V + n_codes) are image
    codes (id - V), and ids from V + n_codes on are rows of `features`, the aligned SigLIP
    features of the prompt's images (so an understanding prompt with images is still a list of
    ids). Logits are text logits then code logits, so `allowed_ids = range(V, V + n_codes)`
    samples codes only and `range(0, V)` text only."""

    def __init__(self, backbone: Transformer, gen: JanusImageHead) -> None:
        super().__init__()
        self.backbone, self.gen = backbone, gen
        self.text_vocab = backbone.config.vocab_size
        self.first_feature = self.text_vocab + gen.embed.num_embeddings
        self.config = backbone.config
        self.features: Tensor | None = None  # (F, D), set for the length of one generate call

    def make_cache(self, batch_size: int, max_len: int | None = None, dtype=None) -> KVCache:
        return self.backbone.make_cache(batch_size, max_len, dtype)

    def head(self, hidden: Tensor) -> Tensor:
        return torch.cat([self.backbone.head(hidden), self.gen.head(hidden)], dim=-1)

    def forward(self, tokens, positions=None, mask=None, cache=None, return_hidden=False):
        V, first = self.text_vocab, self.first_feature
        is_code = (tokens >= V) & (tokens < first)  # (B, T)
        text = self.backbone.tok_embeddings(tokens.clamp(max=V - 1))
        codes = self.gen.embed_codes((tokens - V).clamp(0, first - V - 1))
        x = torch.where(is_code[..., None], codes, text)  # (B, T, D)
        is_feature = tokens >= first
        if is_feature.any():
            if self.features is None:
                raise ValueError("image-feature ids given without features")
            x = x.clone()
            x[is_feature] = self.features[tokens[is_feature] - first].to(x.dtype)
        hidden = self.backbone(None, positions, mask, cache, return_hidden=True, embeds=x)
        return hidden if return_hidden else self.head(hidden)


class HFJanus:
    """A Hugging Face Janus run by unimm (see the module docstring for what runs where)."""

    def __init__(self, backbone, gen, vision, aligner, vq, image_token_id: int) -> None:
        self.backbone = backbone
        self.gen = gen
        self.vision, self.aligner, self.vq = vision, aligner, vq
        self.image_token_id = image_token_id
        self.image_lm = _ImageLM(backbone, gen).eval()

    @classmethod
    def from_pretrained(cls, directory: str | Path, dtype: torch.dtype = torch.float32):
        from transformers.models.janus.configuration_janus import JanusConfig
        from transformers.models.janus.modeling_janus import (
            JanusVisionAlignerMLP,
            JanusVisionModel,
            JanusVQVAE,
        )

        from unimm.interop.importer import resolve_source

        directory = resolve_source(directory)  # a local folder, or a hub id where online
        backbone, cfg, tensors = _read_llm(directory, dtype)
        parts = _split(tensors)
        hf_cfg = JanusConfig(**{k: v for k, v in cfg.items() if k != "model_type"})
        gen = JanusImageHead.from_hf(hf_cfg.vq_config.to_dict(), parts, str(directory))
        vision = JanusVisionModel(hf_cfg.vision_config)
        aligner = JanusVisionAlignerMLP(hf_cfg.vision_config)
        vq = JanusVQVAE(hf_cfg.vq_config)
        for key, module in (("vision", vision), ("aligner", aligner), ("vq", vq)):
            missing, unexpected = module.load_state_dict(parts[key], strict=False)
            if missing or unexpected:
                raise HFImportError(
                    f"{directory}: {PREFIXES[key]}* tensors do not fit the config: "
                    f"missing {missing[:3]}, unexpected {unexpected[:3]}"
                )
        frozen = [m.to(dtype).eval().requires_grad_(False) for m in (vision, aligner, vq)]
        return cls(backbone, gen.to(dtype), *frozen, int(hf_cfg.image_token_id))

    # ----- understanding ---------------------------------------------------------------------

    @torch.no_grad()
    def embed(self, ids: Tensor, pixels: Tensor | None = None) -> Tensor:
        """(B, T) ids -> (B, T, D) LLM inputs, `<image>` slots filled with aligned SigLIP
        features of `pixels` (B_img, 3, H, W) in order."""
        x = self.backbone.tok_embeddings(ids)
        if pixels is None:
            return x
        feats = self.aligner(self.vision(pixels).last_hidden_state).reshape(-1, x.shape[-1])
        slots = ids == self.image_token_id  # (B, T)
        if int(slots.sum()) != feats.shape[0]:
            raise ValueError(
                f"the prompt has {int(slots.sum())} <image> slots, the images give {feats.shape[0]}"
            )
        x = x.clone()
        x[slots] = feats.to(x.dtype)
        return x

    @torch.no_grad()
    def logits(self, ids: Tensor, pixels: Tensor | None = None) -> Tensor:
        return self.backbone(None, embeds=self.embed(ids, pixels))  # (B, T, V)

    @torch.no_grad()
    def answer(
        self, ids: Tensor, max_new_tokens: int, pixels: Tensor | None = None, **sampling
    ) -> list[list[int]]:
        """Understanding: text continuation of each prompt row with unimm's KV-cached sampler;
        the `<image>` slots are filled with the aligned SigLIP features of `pixels`."""
        if pixels is None:
            return generate(self.backbone, ids.tolist(), max_new_tokens, **sampling)
        feats = self.aligner(self.vision(pixels).last_hidden_state)
        feats = feats.reshape(-1, feats.shape[-1])  # (F, D)
        slots = ids == self.image_token_id
        if int(slots.sum()) != feats.shape[0]:
            raise ValueError(
                f"the prompt has {int(slots.sum())} <image> slots, the images give {feats.shape[0]}"
            )
        ids = ids.clone()
        ids[slots] = self.image_lm.first_feature + torch.arange(feats.shape[0])
        self.image_lm.features = feats
        try:
            V = self.backbone.config.vocab_size
            return generate(
                self.image_lm, ids.tolist(), max_new_tokens, allowed_ids=range(V), **sampling
            )
        finally:
            self.image_lm.features = None

    # ----- generation ------------------------------------------------------------------------

    @torch.no_grad()
    def generate_image_codes(
        self,
        ids: Tensor,
        uncond_ids: Tensor | None = None,
        cfg_scale: float = 1.0,
        n_tokens: int | None = None,
        **sampling,
    ) -> Tensor:
        """VQ codes (B, n_tokens) after each prompt row (prompts end with Janus's
        begin-of-image token). uncond_ids: Janus's unconditional rows (prompt text replaced by
        pad ids), used with cfg_scale as logits = u + s (c - u)."""
        n = n_tokens or self.vq.quantize.quant_state_dims[0] * self.vq.quantize.quant_state_dims[1]
        V = self.backbone.config.vocab_size
        out = generate(
            self.image_lm,
            ids.tolist(),
            n,
            cfg_scale=cfg_scale,
            uncond_prompts=None if uncond_ids is None else uncond_ids.tolist(),
            allowed_ids=range(V, V + self.gen.embed.num_embeddings),
            **sampling,
        )
        return torch.tensor(out) - V  # (B, n)

    @torch.no_grad()
    def decode_codes(self, codes: Tensor) -> Tensor:
        """(B, h * w) codes -> (B, 3, H, W) images in [-1, 1] through the VQ decoder."""
        return self.vq.decode(codes).clamp(-1, 1)
