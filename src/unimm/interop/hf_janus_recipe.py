"""A Hugging Face `JanusForConditionalGeneration` (Janus / Janus-Pro) as a unimm `janus` recipe
model: `unimm import SRC DEST --kind janus`, `JanusModel.from_pretrained(HF_FOLDER)`.

Everything pretrained keeps its values; what maps to what:
- `model.language_model.*` -> the backbone (hf_janus's Llama map; head tied by the top-level
  `tie_word_embeddings`);
- `model.vision_model.*` -> the semantic encoder: transformers' own JanusVisionModel (SigLIP)
  behind unimm.interop.hf_vision.HFSemanticEncoder, its patch grid unpooled and its last layer
  (after the post-LayerNorm), which is what `JanusModel.get_image_features` feeds the aligner;
- `model.vqmodel.*` -> the image tokenizer (unimm.interop.hf_janus_vq.HFJanusVQ);
- `model.aligner.*` -> `und_aligner`, `model.generation_embeddings.*` -> `gen_embed`,
  `model.generation_aligner.*` -> `gen_aligner`, `model.generation_head.*` -> `gen_head`
  (Linear, GELU, Linear, ... in both; depths from `vision_config.depth` and
  `vq_config.num_hidden_layers`);
- no 2-D image-position embedding (`janus.image_pos_embed = False`): Janus has none.

Text: the folder's tokenizer.json; unimm's markers are Janus's own tokens where it has them
(`tokenizer_markers.json` records which: bos, eos, pad, `<begin_of_image>` as boi,
`<end_of_image>` as eoi, `<|User|>` / `<|Assistant|>` when present); the rest (mask, and user /
assistant if absent) are appended as new special tokens. The backbone's vocabulary is cut or
grown to the tokenizer's size (vocab.resize_vocabulary: checkpoint padding rows dropped, new
rows mean-initialised), so ids below both sizes keep their exact rows and logits.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import torch
from torch import Tensor

from unimm.interop.hf_files import HFImportError, load_exact, require_model_type
from unimm.interop.hf_janus import PREFIXES, _read_llm, _split
from unimm.interop.unified import aliased_text_tokenizer
from unimm.interop.vocab import resize_vocabulary
from unimm.presets import RunConfig, get_run_config
from unimm.recipes.janus import JanusModel
from unimm.recipes.janus_config import JanusConfig
from unimm.recipes.parts import Parts
from unimm.tokenizers.text import TextTokenizer

# unimm marker -> Janus's token (when tokenizer_config.json names none for it).
JANUS_MARKERS = {
    "<|pad|>": "<｜▁pad▁｜>",
    "<|bos|>": "<｜begin▁of▁sentence｜>",
    "<|eos|>": "<｜end▁of▁sentence｜>",
    "<|boi|>": "<begin_of_image>",
    "<|eoi|>": "<end_of_image>",
    "<|user|>": "<|User|>",
    "<|assistant|>": "<|Assistant|>",
}


def janus_text_tokenizer(directory: str | Path) -> TextTokenizer:
    """The folder's tokenizer.json, unimm's markers played by Janus's tokens where it has them
    (module docstring); existing token ids are unchanged."""
    return aliased_text_tokenizer(directory, JANUS_MARKERS, "the janus import")


def _mlp_state(src: dict[str, Tensor], names: list[str], prefix: str) -> dict[str, Tensor | None]:
    """HF Linear layers `names` -> unimm's `mlp` Sequential (Linear layers at even indices)."""
    return {
        f"{prefix}.{2 * i}.{p}": src.get(f"{name}.{p}")
        for i, name in enumerate(names)
        for p in ("weight", "bias")
    }


def _check_dims(hf_cfg, dim: int, where: str) -> None:
    v, q = hf_cfg.vision_config, hf_cfg.vq_config
    wants = {
        "vision_config.projection_dim": v.projection_dim,
        "vq_config.projection_dim": q.projection_dim,
        "vq_config.image_token_embed_dim": q.image_token_embed_dim,
    }
    for key, value in wants.items():
        if int(value) != dim:
            raise HFImportError(
                f"{where}: {key} is {value}, but the janus recipe's aligners and generation "
                f"head work at the LLM width (text_config.hidden_size {dim})"
            )
    for key, act in (("vision_config", v.hidden_act), ("vq_config", q.hidden_act)):
        if act != "gelu":
            raise HFImportError(f"{where}: {key}.hidden_act {act!r} is not 'gelu'")


def janus_from_hf(
    directory: str | Path,
    run: RunConfig | None = None,
    dtype: torch.dtype = torch.float32,
) -> JanusModel:
    """A janus-recipe model holding the whole Hugging Face Janus checkpoint in `directory`.

    run: the training settings to store with it (default: the "small" preset's); its model,
    recipe, text_vocab_size and janus fields are replaced by the checkpoint's.
    """
    from transformers.models.janus.configuration_janus import JanusConfig as HFJanusConfig
    from transformers.models.janus.modeling_janus import JanusVisionModel, JanusVQVAE

    from unimm.interop.hf_janus_vq import HFJanusVQ
    from unimm.interop.hf_vision import HFSemanticConfig, HFSemanticEncoder, _preprocessing
    from unimm.interop.importer import resolve_source

    directory = resolve_source(directory)
    where = str(directory / "config.json")
    hint = "; for an LLM use --kind chameleon or --kind backbone"
    require_model_type(directory, "janus", "JanusForConditionalGeneration", hint)
    backbone, cfg, tensors = _read_llm(directory, dtype)
    parts = _split(tensors)
    hf_cfg = HFJanusConfig(**{k: v for k, v in cfg.items() if k != "model_type"})
    dim = backbone.config.dim
    _check_dims(hf_cfg, dim, where)

    vision = JanusVisionModel(hf_cfg.vision_config)
    vq = JanusVQVAE(hf_cfg.vq_config)
    for key, module in (("vision", vision), ("vq", vq)):
        load_exact(module, parts[key], directory, f"{PREFIXES[key]}* tensors")
    prep, preprocessor = _preprocessing(directory, "siglip")
    semantic = HFSemanticEncoder(
        vision.to(dtype), "siglip", HFSemanticConfig(layer="last", **prep), None, preprocessor
    )
    image = HFJanusVQ(vq.to(dtype))
    text = janus_text_tokenizer(directory)
    if backbone.config.vocab_size != text.vocab_size:
        backbone = resize_vocabulary(backbone, text.vocab_size)

    und_depth, gen_depth = int(hf_cfg.vision_config.depth), int(hf_cfg.vq_config.num_hidden_layers)
    janus = JanusConfig(
        gen_embed_dim=image.config.embed_dim,
        und_aligner_depth=und_depth,
        gen_aligner_depth=gen_depth,
        image_pos_embed=False,
    )
    run = run or get_run_config("small")
    model_cfg = replace(backbone.config, vocab_size=text.vocab_size + image.codebook_size)
    run = replace(run, recipe="janus", model=model_cfg, text_vocab_size=text.vocab_size)
    run = replace(run, janus=janus)
    with torch.device("meta"):  # skip the random init of weights about to be replaced
        model = JanusModel(Parts(run, text, image, semantic))

    state: dict[str, Tensor | None] = {f"backbone.{k}": v for k, v in backbone.state_dict().items()}
    hidden = [f"hidden_layers.{i}" for i in range(gen_depth - 1)]
    und_hidden = [f"hidden_layers.{i}" for i in range(und_depth - 1)]
    state |= _mlp_state(parts["aligner"], ["fc1"] + und_hidden, "und_aligner")
    state |= _mlp_state(parts["gen_aligner"], ["fc1"] + hidden, "gen_aligner")
    state |= _mlp_state(parts["gen_head"], ["proj_out", "vision_head"], "gen_head")
    state["gen_embed.weight"] = parts["gen_embed"].get("weight")
    expected = model.state_dict()
    for key, t in state.items():
        if key.startswith("backbone."):
            continue
        if t is None or tuple(t.shape) != tuple(expected[key].shape):
            got = None if t is None else tuple(t.shape)
            raise HFImportError(
                f"{where}: tensor for {key} is {got}, the config implies "
                f"{tuple(expected[key].shape)}"
            )
    used = sum(not k.startswith("backbone.") for k in state)
    held = sum(len(parts[k]) for k in ("aligner", "gen_aligner", "gen_head", "gen_embed"))
    if used != held:
        raise HFImportError(
            f"{directory}: the aligner / generation modules hold {held} tensors, unimm maps {used}"
        )
    model.load_state_dict({k: v.to(dtype) for k, v in state.items()}, strict=True, assign=True)
    if model_cfg.tie_embeddings:
        model.backbone.output.weight = model.backbone.tok_embeddings.weight
    return model.eval()
