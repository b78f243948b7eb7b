"""What every recipe's checkpoint holds besides its weights: the run config and tokenizers.

Layout of a checkpoint directory:
    config.json          {"recipe": ..., "unimm_version": ..., "config": RunConfig as a dict}
    model.safetensors    the recipe's trained weights
    tokenizer.json       the text tokenizer
    image_tokenizer/     the image tokenizer's own config + weights
    semantic_encoder/    recipes with decoupled understanding only: unimm's own encoder
                         (unimm.tokenizers.semantic) or an HF SigLIP / CLIP folder
                         (unimm.interop.hf_vision)
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import unimm
from unimm.checkpoint import CONFIG_FILE, check_checkpoint_dir, read_json, write_json
from unimm.config import ConfigError, from_dict, to_dict
from unimm.presets import RunConfig
from unimm.tokenizers.pixel_patches import PATCHES_CONFIG, PixelPatches
from unimm.tokenizers.semantic import SEMANTIC_CONFIG, SemanticEncoder
from unimm.tokenizers.text import TextTokenizer
from unimm.tokenizers.vae import VAE_CONFIG, VAETokenizer
from unimm.tokenizers.vq import VQTokenizer

if TYPE_CHECKING:
    from unimm.interop.hf_chameleon_vq import HFChameleonVQ
    from unimm.interop.hf_janus_vq import HFJanusVQ
    from unimm.interop.hf_vae import DiffusersVAETokens
    from unimm.interop.hf_vision import HFSemanticEncoder

IMAGE_TOKENIZER_DIR = "image_tokenizer"
SEMANTIC_DIR = "semantic_encoder"


@dataclass
class Parts:
    config: RunConfig
    text: TextTokenizer
    image: (
        VQTokenizer | PixelPatches | VAETokenizer | DiffusersVAETokens | HFJanusVQ | HFChameleonVQ
    )  # discrete codes or continuous tokens, per recipe
    # frozen, when the recipe uses one
    semantic: SemanticEncoder | HFSemanticEncoder | None = field(default=None)


def check_semantic_encoder(parts: Parts, recipe: str) -> None:
    """Recipes that read images through a semantic encoder need one on the image tokenizer's
    grid: each of its features fills one image slot."""
    if parts.semantic is None:
        raise ValueError(f"the {recipe} recipe needs a semantic encoder (Parts.semantic)")
    if parts.semantic.grid != parts.image.grid:
        raise ValueError(
            f"semantic encoder grid {parts.semantic.grid} != image tokenizer grid "
            f"{parts.image.grid}: each feature fills one image slot"
        )


def save_parts(parts: Parts, directory: Path, recipe: str) -> None:
    write_json(
        directory / CONFIG_FILE,
        {"recipe": recipe, "unimm_version": unimm.__version__, "config": to_dict(parts.config)},
    )
    parts.text.save(directory)
    parts.image.save_pretrained(directory / IMAGE_TOKENIZER_DIR)
    if parts.semantic is not None:
        parts.semantic.save_pretrained(directory / SEMANTIC_DIR)


def read_run_config(directory: str | Path) -> tuple[str, RunConfig]:
    directory = check_checkpoint_dir(directory)
    data = read_json(directory / CONFIG_FILE)
    if "recipe" not in data or "config" not in data:
        raise ValueError(f"{directory / CONFIG_FILE} lacks 'recipe' or 'config'")
    try:
        cfg = from_dict(RunConfig, data["config"])
    except (ConfigError, ValueError, TypeError) as e:
        raise ValueError(f"bad config in {directory / CONFIG_FILE}: {e}") from None
    return data["recipe"], cfg


def load_parts(directory: str | Path, expect_recipe: str) -> Parts:
    recipe, cfg = read_run_config(directory)
    if recipe != expect_recipe:
        raise ValueError(f"{directory} holds a {recipe!r} model, not {expect_recipe!r}")
    directory = Path(directory)
    text = TextTokenizer.load(directory)
    image = load_image_tokenizer(directory / IMAGE_TOKENIZER_DIR)
    image.eval().requires_grad_(False)
    semantic = None
    if (directory / SEMANTIC_DIR).is_dir():
        semantic = load_semantic_encoder(directory / SEMANTIC_DIR)
        semantic.eval().requires_grad_(False)
    return Parts(cfg, text, image, semantic)


def load_image_tokenizer(
    directory: str | Path,
) -> VQTokenizer | PixelPatches | VAETokenizer | DiffusersVAETokens | HFJanusVQ | HFChameleonVQ:
    """Whichever image tokenizer `directory` holds, told apart by its config file's name; a
    diffusers AutoencoderKL folder gives unimm.interop.hf_vae.DiffusersVAETokens, a Janus VQ
    model's folder unimm.interop.hf_janus_vq.HFJanusVQ, a Chameleon VQ model's folder
    unimm.interop.hf_chameleon_vq.HFChameleonVQ."""
    from unimm.interop.hf_chameleon_vq import HFChameleonVQ, is_hf_chameleon_vq
    from unimm.interop.hf_janus_vq import HFJanusVQ, is_hf_janus_vq
    from unimm.interop.hf_vae import DiffusersVAETokens, is_diffusers_vae

    directory = Path(directory)
    if is_diffusers_vae(directory):
        return DiffusersVAETokens.from_pretrained(directory)
    if is_hf_janus_vq(directory):
        return HFJanusVQ.from_pretrained(directory)
    if is_hf_chameleon_vq(directory):
        return HFChameleonVQ.from_pretrained(directory)
    if (directory / PATCHES_CONFIG).is_file():
        return PixelPatches.from_pretrained(directory)
    if (directory / VAE_CONFIG).is_file():
        return VAETokenizer.from_pretrained(directory)
    return VQTokenizer.from_pretrained(directory)


def load_semantic_encoder(
    source: str | Path, grid: tuple[int, int] | None = None
) -> SemanticEncoder | HFSemanticEncoder:
    """unimm's own encoder (a folder with semantic_config.json), else a Hugging Face SigLIP /
    CLIP folder (or hub id) as unimm.interop.hf_vision.HFSemanticEncoder; `grid` pools the HF
    encoder's features to that grid (unimm's own encoder has a fixed one)."""
    path = Path(source)
    if (path / SEMANTIC_CONFIG).is_file():
        return SemanticEncoder.from_pretrained(path)
    from unimm.interop.hf_files import HFImportError
    from unimm.interop.hf_vision import HFSemanticEncoder, is_hf_semantic_folder

    if path.is_dir() and not is_hf_semantic_folder(path):
        raise HFImportError(
            f"{path} is not a semantic encoder: neither unimm's ({SEMANTIC_CONFIG}) nor a "
            "Hugging Face SigLIP / CLIP folder (config.json with model_type siglip_vision_model, "
            "siglip, clip_vision_model, clip or janus_vision_model)"
        )
    return HFSemanticEncoder.from_pretrained(path, grid=grid)
