"""Hugging Face `ChameleonForConditionalGeneration` checkpoints in unimm.

The language model is Llama-shaped plus a QK-norm that is a LayerNorm with a gain and bias per
head (`ModelConfig.qk_norm_kind = "layer_per_head"`), so it loads into the unimm backbone with
the Llama name map (unimm.interop.hf_llama) and the q/k norms added.

The image tokenizer is transformers' own `ChameleonVQVAE` module, built from the folder's
vq_config and given the folder's `model.vqmodel.*` tensors (safetensors, never pickles):
reimplementing a convolutional VQGAN encoder adds nothing but risk. The released Chameleon
weights (and hence transformers) hold only the VQ *encoder*: image codes can be generated but not
turned into pixels; that is a property of the release, not of this importer.

Vocabulary: Chameleon's 65536 ids interleave its 8192 image codes ("IMGIMG..." tokens) with the
text tokens. `HFChameleon` keeps Chameleon's own ids and exposes understanding (text
continuation with image tokens excluded, as transformers does) and image-code generation (only
image tokens allowed) through unimm's KV-cached sampler (inference only). To get a trainable
unimm model, import the folder into the chameleon recipe instead, which keeps the same ids
through its `code_ids` table: unimm.interop.hf_chameleon_recipe (`unimm import SRC DEST --kind
chameleon`, `ChameleonModel.from_pretrained(SRC)`).
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import Tensor

from unimm.interop.hf_files import HFImportError, read_hf_config, read_hf_weights
from unimm.interop.hf_llama import backbone_state_from_hf, build_backbone, rope_fields
from unimm.model.config import ModelConfig
from unimm.model.transformer import Transformer
from unimm.paradigms.autoregressive import generate

VQ_PREFIX = "model.vqmodel."
IMAGE_NAME_PREFIX = "IMGIMG"


def model_config_from_chameleon(cfg: dict, where: str) -> ModelConfig:
    if cfg.get("model_type") != "chameleon":
        raise HFImportError(f"{where}: model_type {cfg.get('model_type')!r} is not 'chameleon'")
    for key, want in (
        ("swin_norm", False),
        ("attention_bias", False),
        ("mlp_bias", False),
        ("hidden_act", "silu"),
    ):
        got = cfg.get(key, want)
        if got != want:
            raise HFImportError(f"{where}: {key}={got!r} is not supported (unimm needs {want!r})")
    try:
        return ModelConfig(
            vocab_size=int(cfg["vocab_size"]),
            dim=int(cfg["hidden_size"]),
            n_layers=int(cfg["num_hidden_layers"]),
            n_heads=int(cfg["num_attention_heads"]),
            n_kv_heads=int(cfg.get("num_key_value_heads") or cfg["num_attention_heads"]),
            hidden_dim=int(cfg["intermediate_size"]),
            max_seq_len=int(cfg.get("max_position_embeddings", 4096)),
            **rope_fields(cfg, where),
            norm_eps=float(cfg.get("rms_norm_eps", 1e-5)),
            qk_norm=True,
            qk_norm_kind="layer_per_head",
            tie_embeddings=bool(cfg.get("tie_word_embeddings", False)),
        )
    except KeyError as e:
        raise HFImportError(f"{where}: missing key {e.args[0]!r}") from None


def load_hf_chameleon_backbone(
    directory: str | Path, dtype: torch.dtype = torch.float32
) -> Transformer:
    """The language model of a Hugging Face Chameleon folder as a unimm backbone."""
    backbone, _, _ = _read(Path(directory), dtype)
    return backbone


def _read(directory: Path, dtype: torch.dtype) -> tuple[Transformer, dict, dict[str, Tensor]]:
    cfg = read_hf_config(directory)
    config = model_config_from_chameleon(cfg, str(directory / "config.json"))
    tensors = read_hf_weights(directory)
    vq = {k[len(VQ_PREFIX) :]: v for k, v in tensors.items() if k.startswith(VQ_PREFIX)}
    lm = {k: v for k, v in tensors.items() if not k.startswith(VQ_PREFIX)}
    state = backbone_state_from_hf(lm, config, str(directory), qk_norm="q_norm")
    return build_backbone(config, state, dtype).eval(), cfg, vq


def code_token(code: int) -> str:
    """Chameleon's token for image code `code`: "IMGIMG", its decimal digits as letters A-J,
    then "Z" (transformers' ChameleonImageVocabularyMapping reads them the same way)."""
    return IMAGE_NAME_PREFIX + "".join(chr(ord("A") + int(d)) for d in str(code)) + "Z"


def image_code_ids(vocabulary: dict[str, int]) -> dict[int, int]:
    """{image code: vocabulary id} of the IMGIMG tokens of a Chameleon vocabulary (img2bpe)."""
    codes = {}
    for name, bpe in vocabulary.items():
        if name.startswith(IMAGE_NAME_PREFIX):
            digits = name[len(IMAGE_NAME_PREFIX) : -1]
            codes[int("".join(str(ord(c) - ord("A")) for c in digits))] = int(bpe)
    return codes


class HFChameleon:
    """A Hugging Face Chameleon run by unimm: backbone in unimm, VQ encoder from transformers.

    ids are Chameleon's own vocabulary throughout (prompts come from its tokenizer / processor).
    """

    def __init__(self, backbone: Transformer, vq: torch.nn.Module, vocabulary_map: dict) -> None:
        self.backbone = backbone
        self.vq = vq.eval().requires_grad_(False)
        codes = image_code_ids(vocabulary_map)
        if not codes:
            raise HFImportError("vocabulary_map has no IMGIMG image tokens")
        self.code_to_id = torch.zeros(max(codes) + 1, dtype=torch.long)  # (n_codes,)
        for code, bpe in codes.items():
            self.code_to_id[code] = bpe
        self.image_ids = torch.tensor(sorted(codes.values()))  # (n_codes,)
        self.image_placeholder_id = vocabulary_map.get("<image>")
        text = torch.ones(backbone.config.vocab_size, dtype=torch.bool)
        text[self.image_ids] = False
        self.text_ids = text.nonzero().flatten()  # every id except image codes

    @classmethod
    def from_pretrained(cls, directory: str | Path, dtype: torch.dtype = torch.float32):
        from transformers import ChameleonVQVAE, ChameleonVQVAEConfig

        from unimm.interop.importer import resolve_source

        directory = resolve_source(directory)  # a local folder, or a hub id where online
        backbone, cfg, vq_state = _read(directory, dtype)
        if not cfg.get("vocabulary_map"):
            raise HFImportError(f"{directory}/config.json has no vocabulary_map")
        vq = ChameleonVQVAE(ChameleonVQVAEConfig(**(cfg.get("vq_config") or {})))
        missing, unexpected = vq.load_state_dict(vq_state, strict=False)
        if missing or unexpected:
            raise HFImportError(
                f"{directory}: VQ tensors do not fit vq_config: missing {missing[:3]}, "
                f"unexpected {unexpected[:3]}"
            )
        return cls(backbone, vq.to(dtype), cfg["vocabulary_map"])

    @torch.no_grad()
    def image_tokens(self, pixels: Tensor) -> Tensor:
        """(B, 3, H, W) in [-1, 1] -> (B, N) Chameleon ids of the images' codes (raster order)."""
        codes = self.vq.encode(pixels, return_dict=True).image_tokens  # (B * N,)
        return self.code_to_id[codes].view(pixels.shape[0], -1)

    def fill_images(self, ids: Tensor, pixels: Tensor | None) -> Tensor:
        """Replace the `<image>` placeholder ids of a processor-made prompt (B, T) by the codes
        of `pixels`, in order: what transformers does to the embeddings, done on the ids."""
        if pixels is None:
            return ids
        codes = self.image_tokens(pixels).flatten()
        slots = ids == self.image_placeholder_id
        if int(slots.sum()) != codes.numel():
            raise ValueError(
                f"the prompt has {int(slots.sum())} <image> slots, the images give {codes.numel()}"
            )
        out = ids.clone()
        out[slots] = codes
        return out

    @torch.no_grad()
    def logits(self, ids: Tensor, pixels: Tensor | None = None) -> Tensor:
        """(B, T) ids -> (B, T, V) logits, raw (transformers sets image columns to -inf)."""
        return self.backbone(self.fill_images(ids, pixels))

    @torch.no_grad()
    def answer(
        self, ids: Tensor, max_new_tokens: int, pixels: Tensor | None = None, **sampling
    ) -> list[list[int]]:
        """Understanding: continue each prompt row with text ids (image codes excluded)."""
        prompts = self.fill_images(ids, pixels).tolist()
        return generate(
            self.backbone, prompts, max_new_tokens, allowed_ids=self.text_ids, **sampling
        )

    @torch.no_grad()
    def generate_image_codes(
        self, ids: Tensor, n_tokens: int, pixels: Tensor | None = None, **sampling
    ) -> Tensor:
        """Generation: `n_tokens` image ids after each prompt (which should end with Chameleon's
        begin-of-image token), returned as VQ codes (B, n_tokens). No pixels: see the module
        docstring."""
        prompts = self.fill_images(ids, pixels).tolist()
        out = torch.tensor(
            generate(self.backbone, prompts, n_tokens, allowed_ids=self.image_ids, **sampling)
        )
        id_to_code = torch.full((self.backbone.config.vocab_size,), -1, dtype=torch.long)
        id_to_code[self.code_to_id] = torch.arange(self.code_to_id.numel())
        return id_to_code[out]
