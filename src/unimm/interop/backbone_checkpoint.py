"""A bare backbone as a unimm checkpoint directory, and loading a backbone from anywhere.

Layout (what `unimm import --kind backbone` writes):
    config.json        {"format": "unimm-backbone", "unimm_version": ..., "model": ModelConfig}
    model.safetensors  the Transformer's state dict (unimm names)
"""

from __future__ import annotations

from pathlib import Path

import torch

import unimm
from unimm.checkpoint import (
    CONFIG_FILE,
    WEIGHTS_FILE,
    load_tensors,
    read_json,
    save_tensors,
    write_directory,
    write_json,
)
from unimm.interop.hf_files import HFImportError, is_hf_folder
from unimm.interop.hf_llama import build_backbone, load_hf_llm
from unimm.model.config import ModelConfig
from unimm.model.transformer import Transformer

BACKBONE_FORMAT = "unimm-backbone"


def save_backbone(model: Transformer, directory: str | Path) -> Path:
    def fill(tmp: Path) -> None:
        write_json(
            tmp / CONFIG_FILE,
            {
                "format": BACKBONE_FORMAT,
                "unimm_version": unimm.__version__,
                "model": model.config.to_dict(),
            },
        )
        save_tensors(model.state_dict(), tmp / WEIGHTS_FILE)

    return write_directory(directory, fill)


def load_backbone(directory: str | Path, dtype: torch.dtype = torch.float32) -> Transformer:
    """The backbone of any of: a unimm backbone checkpoint, a unimm recipe checkpoint (its
    `backbone.*` weights), or a Hugging Face Llama / Qwen2 / Qwen3 / Chameleon / Janus folder."""
    directory = Path(directory)
    if is_hf_folder(directory):
        kind = read_json(directory / CONFIG_FILE)["model_type"]
        if kind == "chameleon":
            from unimm.interop.hf_chameleon import load_hf_chameleon_backbone

            return load_hf_chameleon_backbone(directory, dtype)
        if kind == "janus":
            from unimm.interop.hf_janus import load_hf_janus_llm

            return load_hf_janus_llm(directory, dtype)
        return load_hf_llm(directory, dtype)
    data = read_json(directory / CONFIG_FILE)
    state = load_tensors(directory / WEIGHTS_FILE)
    if data.get("format") == BACKBONE_FORMAT:
        config = ModelConfig.from_dict(data["model"])
    elif "recipe" in data and isinstance(data.get("config"), dict) and "model" in data["config"]:
        config = ModelConfig.from_dict(data["config"]["model"])
        state = {k[len("backbone.") :]: v for k, v in state.items() if k.startswith("backbone.")}
    else:
        raise HFImportError(
            f"{directory} is neither a unimm checkpoint nor a Hugging Face model folder"
        )
    try:
        return build_backbone(config, state, dtype).eval()
    except RuntimeError as e:  # load_state_dict's missing / unexpected / size-mismatch report
        raise HFImportError(f"{directory}: weights do not match the config: {e}") from None
