"""Training-state checkpoints for exact resume: OUT/state/step-NNNNNNN/.

Each holds model.safetensors (full weights), optimizer.safetensors (AdamW moments flattened as
`<param name>/<key>`), optional ema.safetensors, and state.json: step, data position, RNG states
(CPU, python and, on CUDA, every GPU's), optimizer param groups, and the size + SHA-256 of every
tensor file, so a truncated or corrupt checkpoint is detected on load and the previous good one
is used. No pickle anywhere.
Directories are written atomically (unimm.checkpoint.write_directory) and only the last K kept.
"""

from __future__ import annotations

import hashlib
import random
import re
import shutil
from pathlib import Path

import torch
from torch import nn

from unimm.checkpoint import load_tensors, read_json, save_tensors, write_directory, write_json

STATE_DIR = "state"
META_FILE = "state.json"
_NAME = re.compile(r"^step-(\d{7})$")


class CorruptCheckpoint(ValueError):
    pass


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def rng_state(device: torch.device | None = None) -> dict:
    """Global RNG states as JSON: torch's CPU state is a uint8 tensor, python's a tuple; when
    training on CUDA, every visible GPU's generator state as well (dropout and other global-RNG
    draws on the GPU use them)."""
    version, internal, gauss = random.getstate()
    out = {
        "torch": torch.get_rng_state().tolist(),
        "python": [version, list(internal), gauss],
    }
    if device is not None and device.type == "cuda":
        out["cuda"] = [s.tolist() for s in torch.cuda.get_rng_state_all()]
    return out


def set_rng_state(state: dict, device: torch.device | None = None) -> None:
    torch.set_rng_state(torch.tensor(state["torch"], dtype=torch.uint8))
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    if device is not None and device.type == "cuda":
        saved = [torch.tensor(s, dtype=torch.uint8) for s in state.get("cuda", [])]
        if len(saved) != torch.cuda.device_count():
            # A CPU run's checkpoint, or other GPUs: weights and data position still resume.
            print(
                f"[unimm] the checkpoint holds {len(saved)} GPU RNG state(s), this machine has "
                f"{torch.cuda.device_count()} GPU(s): GPU random draws will not continue exactly"
            )
            return
        torch.cuda.set_rng_state_all(saved)


def flatten_optimizer(osd: dict) -> tuple[dict[str, torch.Tensor], list[dict]]:
    """A name-keyed optimizer state dict -> flat tensors + JSON-able param groups."""
    tensors = {}
    for name, per_param in osd["state"].items():
        for key, value in per_param.items():
            tensors[f"{name}/{key}"] = torch.as_tensor(value).detach().cpu()
    return tensors, osd["param_groups"]


def unflatten_optimizer(tensors: dict[str, torch.Tensor], groups: list[dict]) -> dict:
    state: dict[str, dict] = {}
    for flat, value in tensors.items():
        name, key = flat.rsplit("/", 1)
        state.setdefault(name, {})[key] = value
    return {"state": state, "param_groups": groups}


def save_state(
    run_dir: Path,
    step: int,
    model_sd: dict[str, torch.Tensor],
    optim_sd: dict,
    meta: dict,
    keep: int,
    ema_sd: dict[str, torch.Tensor] | None = None,
) -> Path:
    """Write one checkpoint atomically, then delete all but the newest `keep`."""
    root = Path(run_dir) / STATE_DIR
    opt_tensors, groups = flatten_optimizer(optim_sd)

    def fill(tmp: Path) -> None:
        files = {"model.safetensors": model_sd, "optimizer.safetensors": opt_tensors}
        if ema_sd is not None:
            files["ema.safetensors"] = ema_sd
        sums = {}
        for fname, tensors in files.items():
            save_tensors(tensors, tmp / fname)
            sums[fname] = {"bytes": (tmp / fname).stat().st_size, "sha256": sha256(tmp / fname)}
        write_json(tmp / META_FILE, {**meta, "step": step, "param_groups": groups, "files": sums})

    path = write_directory(root / f"step-{step:07d}", fill)
    for old in list_states(run_dir)[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
    return path


def list_states(run_dir: Path) -> list[Path]:
    root = Path(run_dir) / STATE_DIR
    if not root.is_dir():
        return []
    return sorted(p for p in root.iterdir() if p.is_dir() and _NAME.match(p.name))


def verify_state(path: Path) -> dict:
    """The checkpoint's metadata, after checking every file's size and checksum."""
    try:
        meta = read_json(path / META_FILE)
    except ValueError as e:
        raise CorruptCheckpoint(str(e)) from None
    for fname, expect in meta.get("files", {}).items():
        f = path / fname
        if not f.is_file():
            raise CorruptCheckpoint(f"{f} is missing")
        if f.stat().st_size != expect["bytes"]:
            raise CorruptCheckpoint(
                f"{f} has {f.stat().st_size} bytes, expected {expect['bytes']} (truncated?)"
            )
        if sha256(f) != expect["sha256"]:
            raise CorruptCheckpoint(f"{f} fails its SHA-256 check (corrupt)")
    return meta


def latest_good_state(run_dir: Path, report=print) -> tuple[Path, dict] | None:
    """Newest checkpoint that verifies; corrupt ones are reported and skipped."""
    for path in reversed(list_states(run_dir)):
        try:
            return path, verify_state(path)
        except CorruptCheckpoint as e:
            report(f"[unimm] skipping corrupt checkpoint {path.name}: {e}")
    return None


def load_state(path: Path, meta: dict) -> tuple[dict, dict, dict | None]:
    """(model state dict, optimizer state dict, EMA state dict or None) from a verified dir."""
    model_sd = load_tensors(path / "model.safetensors")
    optim_sd = unflatten_optimizer(
        load_tensors(path / "optimizer.safetensors"), meta["param_groups"]
    )
    ema = path / "ema.safetensors"
    return model_sd, optim_sd, load_tensors(ema) if ema.is_file() else None


def full_state_dicts(step_module: nn.Module, model: nn.Module, opt: torch.optim.Optimizer):
    """Full (unsharded, CPU) model and name-keyed optimizer state dicts, under any wrapper."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_state_dict

    opts = StateDictOptions(full_state_dict=True, cpu_offload=True)
    msd, osd = get_state_dict(step_module, opt, options=opts)
    # With cpu_offload only rank 0 receives the gathered state; the others get empty dicts.
    groups = _strip_groups(osd) if "param_groups" in osd else []
    return _strip(msd), {"state": _strip(osd.get("state", {})), "param_groups": groups}


def set_full_state_dicts(step_module: nn.Module, opt, model_sd: dict, optim_sd: dict) -> None:
    from torch.distributed.checkpoint.state_dict import StateDictOptions, set_state_dict

    prefix = "model."
    msd = {prefix + k: v for k, v in model_sd.items()}
    osd = {
        "state": {prefix + k: v for k, v in optim_sd["state"].items()},
        "param_groups": [
            {**g, "params": [prefix + n for n in g["params"]]} for g in optim_sd["param_groups"]
        ],
    }
    opts = StateDictOptions(full_state_dict=True, strict=False)
    set_state_dict(step_module, opt, model_state_dict=msd, optim_state_dict=osd, options=opts)


def _clean(name: str) -> str:
    # Names as the bare model has them, whatever wrapper (LossModule, checkpoint_wrapper,
    # torch.compile) the training module carries.
    for junk in ("_checkpoint_wrapped_module.", "_orig_mod."):
        name = name.replace(junk, "")
    return name.removeprefix("model.")


def _strip(d: dict) -> dict:
    return {_clean(k): v for k, v in d.items()}


def _strip_groups(osd: dict) -> list[dict]:
    return [{**g, "params": [_clean(n) for n in g["params"]]} for g in osd["param_groups"]]
