"""Checkpoint directories: JSON + safetensors, written atomically, loaded without pickle.

A checkpoint is a directory. It is first written in full to a sibling temporary directory and
then swapped in with renames, so an interrupted save never leaves a half-written checkpoint
where a good one was.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
CHECKPOINT_DIR = "checkpoint"  # a run directory's checkpoint


def checkpoint_dir(path: str | Path) -> Path:
    """A checkpoint directory, or the `checkpoint/` of a run directory that holds one."""
    path = Path(path)
    if not (path / CONFIG_FILE).is_file() and (path / CHECKPOINT_DIR / CONFIG_FILE).is_file():
        return path / CHECKPOINT_DIR
    return path


def write_json(path: str | Path, data: dict) -> None:
    """Write JSON atomically (temp file in the same folder, then os.replace)."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
    with os.fdopen(fd, "w") as f:
        json.dump(data, f, indent=2)
        f.write("\n")
    os.replace(tmp, path)


def read_json(path: str | Path) -> dict:
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"missing file {path}")
    try:
        data = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ValueError(f"corrupt JSON in {path}: {e}") from None
    if not isinstance(data, dict):
        raise ValueError(f"{path} must hold a JSON object")
    return data


def save_tensors(tensors: dict[str, torch.Tensor], path: str | Path) -> None:
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
    os.close(fd)
    # safetensors refuses shared storage (tied weights): store contiguous copies.
    save_file({k: v.detach().contiguous().clone() for k, v in tensors.items()}, tmp)
    os.replace(tmp, path)


def load_tensors(path: str | Path) -> dict[str, torch.Tensor]:
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"missing weights file {path}")
    try:
        return load_file(str(path))
    except (SafetensorError, OSError, ValueError) as e:
        raise ValueError(f"corrupt weights file {path}: {e}") from None


def write_directory(directory: str | Path, fill: Callable[[Path], None]) -> Path:
    """Create or replace `directory` atomically: `fill(tmp)` writes every file into a temporary
    sibling, which then takes the directory's place."""
    directory = Path(directory)
    directory.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=directory.parent, prefix=f".{directory.name}.tmp-"))
    try:
        fill(tmp)
        if directory.exists():
            old = Path(tempfile.mkdtemp(dir=directory.parent, prefix=f".{directory.name}.old-"))
            old.rmdir()
            os.replace(directory, old)
            os.replace(tmp, directory)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, directory)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return directory


def check_checkpoint_dir(directory: str | Path) -> Path:
    directory = Path(directory)
    if not directory.is_dir():
        raise ValueError(f"checkpoint directory not found: {directory}")
    if not (directory / CONFIG_FILE).is_file():
        raise ValueError(f"{directory} is not a unimm checkpoint (no {CONFIG_FILE})")
    return directory
