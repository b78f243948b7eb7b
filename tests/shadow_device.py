"""A stand-in for a second device on a CPU-only machine, to test device placement for real.

Tensors under `ShadowDevice()` can be "on" `SHADOW` (the meta device type): each such tensor is a
`Shadow` wrapper holding real CPU values, so every op really computes (losses, `.tolist()`,
boolean indexing, backward, AdamW all work), while any op that meets a plain CPU tensor with
more than zero dimensions raises `DeviceMismatch`, as a CUDA kernel would reject it. Rules
copied from CUDA: 0-dim CPU tensors mix freely (CPU scalars), index tensors may stay on the
CPU, factory calls with `device=SHADOW` and `.to(SHADOW)` land on the shadow device, `.cpu()`
comes back to plain CPU tensors, `copy_` crosses devices, a CPU `torch.Generator` cannot draw
for device tensors (CUDA kernels want a CUDA generator).

    with ShadowDevice():
        model.to(SHADOW)            # parameters become Shadow tensors
        model.loss(samples)         # raises DeviceMismatch where a batch stayed on the CPU
"""

from __future__ import annotations

import torch
from torch.overrides import TorchFunctionMode
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten, tree_map

SHADOW = torch.device("meta")
_INDEX_OPS = {
    torch.ops.aten.index.Tensor,
    torch.ops.aten.index_put.default,
    torch.ops.aten.index_put_.default,
    torch.ops.aten._index_put_impl_.default,
}
_COPY_OPS = {torch.ops.aten.copy_.default, torch.ops.aten.copy.default}  # cross-device copies


class DeviceMismatch(RuntimeError):
    pass


class Shadow(torch.Tensor):
    """Real CPU values `elem`, reporting device SHADOW."""

    elem: torch.Tensor

    @staticmethod
    def __new__(cls, elem: torch.Tensor):
        r = torch.Tensor._make_wrapper_subclass(
            cls,
            elem.shape,
            strides=elem.stride(),
            storage_offset=elem.storage_offset(),
            dtype=elem.dtype,
            device=SHADOW,
            requires_grad=elem.requires_grad,
        )
        r.elem = elem
        return r

    def __repr__(self) -> str:
        return f"Shadow({self.elem!r})"

    def tolist(self):  # a device tensor's .tolist() copies it to the host
        return self.elem.tolist()

    @classmethod
    def __torch_dispatch__(cls, func, types, args=(), kwargs=None):
        return _run(func, args, kwargs or {})


def _is_shadow_device(dev) -> bool:
    return dev is not None and torch.device(dev).type == SHADOW.type


def _run(func, args, kwargs):
    tensors = [t for t in tree_flatten((args, kwargs))[0] if isinstance(t, torch.Tensor)]
    on_shadow = any(isinstance(t, Shadow) for t in tensors)
    if on_shadow:
        for g in tree_flatten((args, kwargs))[0]:
            if isinstance(g, torch.Generator) and g.device.type == "cpu":
                raise DeviceMismatch(f"{func}: a CPU generator draws for tensors on the device")
    if on_shadow and func not in _COPY_OPS:
        if func in _INDEX_OPS:  # CUDA copies CPU index tensors over; so do we
            ids = {id(t) for t in tree_flatten(args[1])[0] if isinstance(t, torch.Tensor)}
            tensors = [t for t in tensors if id(t) not in ids]
        for t in tensors:
            if not isinstance(t, Shadow) and t.dim() > 0:
                raise DeviceMismatch(
                    f"{func}: a CPU tensor of shape {tuple(t.shape)} meets tensors on the device"
                )
    dev = kwargs.get("device")
    if dev is not None:
        kwargs = {**kwargs, "device": torch.device("cpu")}
    out = func(*tree_map(_unwrap, args), **tree_map(_unwrap, kwargs))
    if dev is not None and not _is_shadow_device(dev):
        return out  # .cpu(), .to("cpu"), factories asking for the CPU
    if on_shadow or _is_shadow_device(dev):
        return tree_map(_wrap, out)
    return out


def _unwrap(t):
    return t.elem if isinstance(t, Shadow) else t


def _wrap(t):
    return Shadow(t) if type(t) is torch.Tensor else t


class _Factories(TorchFunctionMode):
    """torch.tensor(data, device=...) copies to the device below the dispatcher's Python
    layer, so it is caught here: built on the CPU, then moved with .to(SHADOW)."""

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func in (torch.tensor, torch.as_tensor) and _is_shadow_device(kwargs.get("device")):
            kwargs = {k: v for k, v in kwargs.items() if k != "device"}
            return func(*args, **kwargs).to(SHADOW)
        return func(*args, **kwargs)


class ShadowDevice:
    """Context manager: the function-level and dispatch-level halves of the shadow device."""

    def __enter__(self):
        self._modes = [_Factories(), _Dispatch()]
        for m in self._modes:
            m.__enter__()
        return self

    def __exit__(self, *exc):
        for m in reversed(self._modes):
            m.__exit__(*exc)


class _Dispatch(TorchDispatchMode):
    """Routes factory calls that ask for SHADOW (and every op on Shadow tensors) to `_run`."""

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if _is_shadow_device(kwargs.get("device")) or any(
            isinstance(t, Shadow) for t in tree_flatten((args, kwargs))[0]
        ):
            return _run(func, args, kwargs)
        return func(*args, **kwargs)


def on_shadow(t: torch.Tensor) -> bool:
    return isinstance(t, Shadow)
