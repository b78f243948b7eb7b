"""Start a unified recipe from a pretrained Hugging Face LLM (the way every anchor model began).

`chameleon_from_hf_llm`: the LLM's weights become the Chameleon recipe's backbone, its
tokenizer.json becomes the text tokenizer (unimm's markers added as special tokens after the
LLM's own vocabulary), and the vocabulary grows by the image tokenizer's codebook, the new rows
initialised as in unimm.interop.vocab. Everything pretrained keeps its exact values.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import torch
from tokenizers import AddedToken, Tokenizer

from unimm.checkpoint import read_json
from unimm.interop.hf_files import HFImportError, read_hf_config
from unimm.interop.hf_llama import LLM_TYPES, load_hf_llm
from unimm.interop.vocab import resize_vocabulary
from unimm.presets import RunConfig, get_run_config
from unimm.recipes.chameleon import ChameleonModel
from unimm.recipes.parts import Parts
from unimm.tokenizers.text import SPECIAL_TOKENS, TOKENIZER_FILE, TextTokenizer
from unimm.tokenizers.vq import VQTokenizer


def text_tokenizer_from_hf(directory: str | Path) -> TextTokenizer:
    """The folder's tokenizer.json with unimm's markers (pad, bos, eos, boi, ...) appended as
    special tokens where the tokenizer lacks them; existing token ids are unchanged."""
    path = Path(directory) / TOKENIZER_FILE
    if not path.is_file():
        raise HFImportError(
            f"{path} is missing: a unified recipe needs the LLM's tokenizer.json (fast tokenizer)"
        )
    try:
        tok = Tokenizer.from_file(str(path))
    except Exception as e:  # tokenizers raises a bare Exception on bad JSON
        raise HFImportError(f"corrupt tokenizer file {path}: {e}") from None
    missing = [t for t in SPECIAL_TOKENS if tok.token_to_id(t) is None]
    tok.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in missing])
    return TextTokenizer(tok)


# unimm marker -> the tokenizer_config.json key that names the folder's own token for it.
CONFIG_KEYS = {
    "<|pad|>": "pad_token",
    "<|bos|>": "bos_token",
    "<|eos|>": "eos_token",
    "<|boi|>": "boi_token",
    "<|eoi|>": "eoi_token",
}


def _token_text(value) -> str | None:
    if isinstance(value, dict):  # {"content": "<...>", "lstrip": ...}
        value = value.get("content")
    return value if isinstance(value, str) else None


def aliased_text_tokenizer(
    directory: str | Path, aliases: dict[str, str], what: str
) -> TextTokenizer:
    """The folder's tokenizer.json with unimm's markers played by the model's own tokens: the
    one tokenizer_config.json names (CONFIG_KEYS), else `aliases[marker]`, where the tokenizer
    has it (TextTokenizer's marker aliases, saved as tokenizer_markers.json). Markers it lacks
    are appended as new special tokens; existing token ids are unchanged."""
    directory = Path(directory)
    path = directory / TOKENIZER_FILE
    if not path.is_file():
        raise HFImportError(f"{path} is missing: {what} needs the tokenizer.json")
    try:
        tok = Tokenizer.from_file(str(path))
    except Exception as e:  # tokenizers raises a bare Exception on bad JSON
        raise HFImportError(f"corrupt tokenizer file {path}: {e}") from None
    own = {}
    if (directory / "tokenizer_config.json").is_file():
        own = read_json(directory / "tokenizer_config.json")
    markers, missing = {}, []
    for marker in SPECIAL_TOKENS:
        candidates = [_token_text(own.get(CONFIG_KEYS.get(marker, ""))), aliases.get(marker)]
        found = next((c for c in candidates if c and tok.token_to_id(c) is not None), None)
        if found is not None and found != marker:
            markers[marker] = found
        elif found is None and tok.token_to_id(marker) is None:
            missing.append(marker)
    tok.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in missing])
    return TextTokenizer(tok, markers)


def chameleon_from_hf_llm(
    directory: str | Path,
    image: VQTokenizer,
    run: RunConfig | None = None,
    noise: float = 0.01,
    seed: int = 0,
) -> ChameleonModel:
    """A Chameleon-recipe model whose backbone is the Llama / Qwen2 checkpoint in `directory`.

    run: the training settings to store with it (default: the "small" preset's); its model and
    vq fields are replaced by the imported backbone's and the image tokenizer's configs.
    The 2-D image-position embeddings the recipe adds are new and start at N(0, 0.02).
    """
    text = text_tokenizer_from_hf(directory)
    backbone = load_hf_llm(directory)
    backbone = resize_vocabulary(backbone, text.vocab_size + image.codebook_size, noise, seed)
    run = run or get_run_config("small")
    cfg = replace(run, model=backbone.config, vq=image.config, text_vocab_size=text.vocab_size)
    with torch.device("meta"):  # skip the random init of a backbone about to be replaced
        model = ChameleonModel(Parts(cfg, text, image.eval().requires_grad_(False)))
    g = torch.Generator().manual_seed(seed)
    state = {f"backbone.{k}": v for k, v in backbone.state_dict().items()}
    for name in ("image_row", "image_col"):
        state[name] = 0.02 * torch.randn(getattr(model, name).shape, generator=g)
    model.load_state_dict(state, strict=True, assign=True)
    if cfg.model.tie_embeddings:
        model.backbone.output.weight = model.backbone.tok_embeddings.weight
    return model


def chameleon_from_hf_source(
    src: str | Path, image_tokenizer: VQTokenizer | str | Path | None, preset: str = "small"
) -> ChameleonModel:
    """ChameleonModel.from_pretrained on a Hugging Face folder (or hub id, when online): a
    ChameleonForConditionalGeneration is imported whole (unimm.interop.hf_chameleon_recipe); an
    LLM starts the recipe with `image_tokenizer`."""
    from unimm.interop.importer import resolve_source

    folder = resolve_source(src)
    kind = read_hf_config(folder)["model_type"]
    if kind == "chameleon":
        from unimm.interop.hf_chameleon_recipe import chameleon_from_hf

        if image_tokenizer is not None:
            raise HFImportError(
                f"{src} is a Hugging Face Chameleon, which brings its own VQ image tokenizer: "
                "give no image tokenizer (--image-tokenizer)"
            )
        return chameleon_from_hf(folder, get_run_config(preset))
    if kind not in LLM_TYPES:
        raise HFImportError(
            f"{src} is a Hugging Face {kind!r} model; the chameleon recipe starts from "
            f"{' or '.join(LLM_TYPES)} or imports a ChameleonForConditionalGeneration"
        )
    if image_tokenizer is None:
        raise HFImportError(
            f"{src} is a Hugging Face {kind} LLM: pass image_tokenizer= (a unimm image "
            "tokenizer or its directory) to start a chameleon model from it"
        )
    if not isinstance(image_tokenizer, VQTokenizer):
        image_tokenizer = VQTokenizer.from_pretrained(image_tokenizer)
    return chameleon_from_hf_llm(folder, image_tokenizer, get_run_config(preset))
