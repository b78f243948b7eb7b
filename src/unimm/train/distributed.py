"""Data parallelism applied from outside the model: torchrun environment, DDP or FSDP2.

The model stays single-device code. `LossModule` turns `model.loss(samples, generator)` into a
forward call so DDP and FSDP2 see every step through their forward hooks; `parallelize` applies
activation checkpointing, then torch.compile, then the data-parallel wrapper (torchtitan order).
Under one process nothing is wrapped and the trainer runs exactly as before.

The device is chosen here once (`resolve_device`, from train.device): the trainer moves the
model there, the recipes build their batches on the weights' device, and the process group
follows it: gloo for CPU training, nccl (plus gloo for the CPU-side scalars) for CUDA.
"""

from __future__ import annotations

import atexit
import contextlib
import importlib.util
import os
import shutil
from dataclasses import dataclass
from typing import Literal

import torch
import torch.distributed as dist
from torch import nn

from unimm.train.config import TrainConfig

DeviceChoice = Literal["auto", "cpu", "cuda"]


@dataclass(frozen=True)
class Dist:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def resolve_device(choice: DeviceChoice = "auto", local_rank: int = 0) -> torch.device:
    """train.device -> the device this process trains on: "auto" is cuda:LOCAL_RANK when CUDA
    is available, else the CPU; "cuda" without a usable GPU is an error, never a silent CPU run.
    """
    if choice not in ("auto", "cpu", "cuda"):
        raise ValueError(f"train.device must be auto, cpu or cuda, got {choice!r}")
    if choice == "cpu" or (choice == "auto" and not torch.cuda.is_available()):
        return torch.device("cpu")
    if not torch.cuda.is_available():
        raise RuntimeError(
            f"train.device=cuda but CUDA is not available (torch {torch.__version__}, "
            f"built with CUDA {torch.version.cuda}): install a CUDA build of torch or set "
            "train.device=cpu"
        )
    count = torch.cuda.device_count()
    if local_rank >= count:
        raise RuntimeError(
            f"LOCAL_RANK={local_rank} but only {count} GPU(s) are visible: start at most {count} "
            "processes per node, or set train.device=cpu"
        )
    return torch.device("cuda", local_rank)


def init_from_env(device: DeviceChoice = "auto") -> Dist:
    """Resolve the device and join the process group torchrun describes (RANK, WORLD_SIZE,
    LOCAL_RANK, MASTER_ADDR): gloo for CPU training; for CUDA, nccl for CUDA tensors and gloo
    for CPU ones (the loss sums). Without torchrun: a single process."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank, local = int(os.environ.get("RANK", "0")), int(os.environ.get("LOCAL_RANK", "0"))
    dev = resolve_device(device, local if world > 1 else 0)
    if dev.type == "cuda":
        torch.cuda.set_device(dev)
    if world <= 1:
        return Dist(device=dev)
    if not dist.is_initialized():
        dist.init_process_group(process_group_backend(dev))
        # Destroyed while the interpreter is still whole: a gloo group left to finalization
        # can abort the process after it has finished its work (SIGABRT, "terminate called
        # without an active exception", seen in CI), failing a run that had succeeded.
        atexit.register(shutdown)
    return Dist(rank, world, local, dev)


def shutdown() -> None:
    """Leave the process group, if this process is in one (idempotent)."""
    if dist.is_initialized():
        dist.destroy_process_group()


def process_group_backend(device: torch.device) -> str:
    return "cpu:gloo,cuda:nccl" if device.type == "cuda" else "gloo"


def autocast(device: torch.device, precision: str) -> contextlib.AbstractContextManager:
    """bf16 autocast on the training device's type (CPU and CUDA alike); fp32: no autocast."""
    if precision != "bf16":
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=torch.bfloat16)


class LossModule(nn.Module):
    """forward(samples, generator) -> model.loss(...): the step as one module call."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, samples, generator=None) -> dict:
        return self.model.loss(samples, generator)


def _blocks(model: nn.Module) -> list[nn.Module]:
    backbone = getattr(model, "backbone", None)
    layers = getattr(backbone, "layers", None)
    return list(layers) if layers is not None else []


def compile_unavailable(device: torch.device) -> str | None:
    """Why torch.compile cannot build kernels for `device` here, or None when it can:
    inductor writes C++ for the CPU (a compiler on PATH) and Triton for CUDA."""
    if device.type == "cpu":
        names = [os.environ.get("CXX", ""), "g++", "clang++", "c++"]
        if not any(n and shutil.which(n) for n in names):
            return "no C++ compiler (g++ or clang++, or $CXX) on PATH for its CPU kernels"
    elif device.type == "cuda" and importlib.util.find_spec("triton") is None:
        return "Triton is not installed for its CUDA kernels"
    return None


def compile_blocks(model: nn.Module, d: Dist) -> None:
    """torch.compile each block (regional compilation: the blocks share their code, so one
    graph serves every layer and compile time does not grow with depth), for training only:
    `uncompile` restores eager blocks, since sampling with a KV cache would recompile for
    every cache length. Where inductor cannot build kernels, training stays eager with a note
    (train.compile is on in the small and reference presets, which must run everywhere)."""
    reason = compile_unavailable(d.device)
    if reason is not None:
        if d.is_main:
            print(f"[unimm] train.compile: {reason}; training eager", flush=True)
        return
    for block in _blocks(model):
        block.compile()


def uncompile(model: nn.Module) -> None:
    """Undo `compile_blocks`: the blocks run eagerly again (their weights are untouched)."""
    for block in _blocks(model):
        block._compiled_call_impl = None  # what nn.Module.compile sets


def parallelize(model: nn.Module, cfg: TrainConfig, d: Dist) -> nn.Module:
    """Returns the module the trainer calls each micro-batch (model.loss behind a forward)."""
    if cfg.activation_checkpointing:
        from torch.distributed.algorithms._checkpoint.checkpoint_wrapper import (
            checkpoint_wrapper,
        )

        layers = model.backbone.layers
        for i, block in enumerate(list(layers)):
            layers[i] = checkpoint_wrapper(block, preserve_rng_state=True)
    if cfg.compile:
        compile_blocks(model, d)
    step = LossModule(model)
    if not d.enabled:
        return step
    # Wrap for the device the weights are on, not for whatever the machine has: a CPU model on
    # a CUDA machine trains over gloo (DDP rejects device_ids for it, and FSDP2's default CUDA
    # mesh would move the weights away from the CPU batches).
    device = next(model.parameters()).device
    if cfg.parallel == "ddp":
        from torch.nn.parallel import DistributedDataParallel

        device_ids = [device.index] if device.type == "cuda" else None
        return DistributedDataParallel(step, device_ids=device_ids)
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

    # bf16 compute with fp32 gradient reduction (the usual FSDP2 mixed-precision policy).
    mp = MixedPrecisionPolicy(
        param_dtype=torch.bfloat16 if cfg.precision == "bf16" else None,
        reduce_dtype=torch.float32,
    )
    frozen = {p for p in model.parameters() if not p.requires_grad}
    mesh = init_device_mesh(device.type, (d.world_size,))
    for block in _blocks(model):
        fully_shard(block, mesh=mesh, mp_policy=mp)
    fully_shard(step, mesh=mesh, mp_policy=mp, ignored_params=frozen)
    return step


def no_sync(step: nn.Module, last: bool):
    """Skip gradient communication on all but the last micro-batch of an accumulation."""
    if last:
        return contextlib.nullcontext()
    if hasattr(step, "no_sync"):  # DDP
        return step.no_sync()
    if hasattr(step, "set_requires_gradient_sync"):  # FSDP2
        return _fsdp_no_sync(step)
    return contextlib.nullcontext()


@contextlib.contextmanager
def _fsdp_no_sync(step):
    step.set_requires_gradient_sync(False)
    try:
        yield
    finally:
        step.set_requires_gradient_sync(True)


def all_sum(values: list[float], d: Dist) -> list[float]:
    """Sum floats across ranks (float64, so token counts stay exact)."""
    if not d.enabled:
        return values
    t = torch.tensor(values, dtype=torch.float64)
    dist.all_reduce(t)
    return t.tolist()


def barrier(d: Dist) -> None:
    if d.enabled:
        dist.barrier()
