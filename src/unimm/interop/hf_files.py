"""Reading and writing Hugging Face checkpoint folders: config.json + safetensors, sharded or not.

A Hugging Face folder holds either one `model.safetensors` or several shards listed in
`model.safetensors.index.json` ({"weight_map": {tensor name: shard file}}). Pickled weights
(`pytorch_model.bin`) are refused: unimm never unpickles.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file

from unimm.checkpoint import load_tensors, read_json, save_tensors, write_json

HF_CONFIG = "config.json"
HF_WEIGHTS = "model.safetensors"
HF_INDEX = "model.safetensors.index.json"


class HFImportError(ValueError):
    """A Hugging Face folder that unimm cannot import as asked (missing file, unknown
    architecture, tensor names or shapes that do not fit)."""


def require_model_type(directory: Path, model_type: str, architecture: str, hint: str = "") -> dict:
    """The folder's config.json, which must name `model_type`; else one HFImportError naming
    what the folder holds instead (`hint`: where to go for that)."""
    cfg = read_hf_config(directory)
    kind = cfg["model_type"]
    if kind != model_type:
        raise HFImportError(
            f"{directory} is a Hugging Face {kind!r} model, not a {architecture} "
            f"(model_type {model_type!r}){hint}"
        )
    return cfg


def load_exact(module: torch.nn.Module, state: dict, directory: Path, what: str) -> None:
    """Load `state` into a module built from the folder's config; every tensor must fit (no
    name missing or left over, no other shape), else one HFImportError naming `what`."""
    try:
        missing, unexpected = module.load_state_dict(state, strict=False)
    except RuntimeError as e:  # a shape that does not fit; torch's last line names it
        why = str(e).strip().splitlines()[-1].strip()
        raise HFImportError(f"{directory}: {what} do not fit the config: {why}") from None
    if missing or unexpected:
        raise HFImportError(
            f"{directory}: {what} do not fit the config: missing {missing[:3]}, "
            f"unexpected {unexpected[:3]}"
        )


def is_hf_folder(directory: str | Path) -> bool:
    """True for a folder whose config.json names a Hugging Face `model_type` (and is not a
    unimm checkpoint, whose config.json names a `recipe`)."""
    path = Path(directory) / HF_CONFIG
    if not path.is_file():
        return False
    try:
        data = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError):
        return False
    return isinstance(data, dict) and "model_type" in data and "recipe" not in data


def read_hf_config(directory: str | Path) -> dict:
    directory = Path(directory)
    if not directory.is_dir():
        raise HFImportError(f"Hugging Face folder not found: {directory}")
    data = read_json(directory / HF_CONFIG)
    if "model_type" not in data:
        raise HFImportError(
            f"{directory / HF_CONFIG} has no 'model_type': not a transformers config"
        )
    return data


def read_hf_weights(directory: str | Path) -> dict[str, torch.Tensor]:
    """Every tensor of the folder, from one file or from all shards of the index."""
    directory = Path(directory)
    if (directory / HF_INDEX).is_file():
        index = read_json(directory / HF_INDEX)
        weight_map = index.get("weight_map")
        if not isinstance(weight_map, dict) or not weight_map:
            raise HFImportError(f"{directory / HF_INDEX} has no 'weight_map'")
        tensors: dict[str, torch.Tensor] = {}
        for shard in sorted(set(weight_map.values())):
            path = directory / shard
            if not path.is_file():
                raise HFImportError(f"{directory / HF_INDEX} lists shard {shard}, which is missing")
            tensors.update(_load_shard(path))
        missing = sorted(set(weight_map) - set(tensors))
        if missing:
            raise HFImportError(
                f"tensors listed in {HF_INDEX} but absent from its shards: {missing[:3]}"
            )
        return tensors
    if (directory / HF_WEIGHTS).is_file():
        return load_tensors(directory / HF_WEIGHTS)
    pickles = sorted(p.name for p in directory.glob("*.bin")) + sorted(
        p.name for p in directory.glob("*.pt")
    )
    hint = (
        f" (found pickled weights {pickles[0]}: convert them to safetensors first, e.g. "
        "save_pretrained(..., safe_serialization=True); unimm never loads pickles)"
        if pickles
        else ""
    )
    raise HFImportError(f"{directory} has neither {HF_WEIGHTS} nor {HF_INDEX}{hint}")


def _load_shard(path: Path) -> dict[str, torch.Tensor]:
    try:
        return load_file(str(path))
    except (SafetensorError, OSError, ValueError) as e:
        raise HFImportError(f"corrupt weights file {path}: {e}") from None


def write_hf_folder(
    directory: Path, config: dict, tensors: dict[str, torch.Tensor], max_shard_bytes: int | None
) -> None:
    """Write config.json and the weights into an existing (empty) folder; with max_shard_bytes,
    split the weights into shards of at most that size plus the index transformers reads."""
    write_json(directory / HF_CONFIG, config)
    total = sum(t.numel() * t.element_size() for t in tensors.values())
    if max_shard_bytes is None or total <= max_shard_bytes:
        save_tensors(tensors, directory / HF_WEIGHTS)
        return
    shards: list[dict[str, torch.Tensor]] = [{}]
    size = 0
    for name, t in tensors.items():
        nbytes = t.numel() * t.element_size()
        if shards[-1] and size + nbytes > max_shard_bytes:
            shards.append({})
            size = 0
        shards[-1][name] = t
        size += nbytes
    weight_map = {}
    for i, shard in enumerate(shards):
        file = f"model-{i + 1:05d}-of-{len(shards):05d}.safetensors"
        save_tensors(shard, directory / file)
        weight_map.update(dict.fromkeys(shard, file))
    write_json(directory / HF_INDEX, {"metadata": {"total_size": total}, "weight_map": weight_map})
