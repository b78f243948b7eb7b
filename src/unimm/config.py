"""Generic helpers for unimm's typed dataclass configs.

Every component has its own dataclass config; a run's config nests them. These helpers turn
configs into JSON-able dicts and back (rejecting unknown keys by name) and apply the CLI's
`key.sub=value` overrides with type checking, so a new option is a field, not a new flag.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from typing import Any, Literal, TypeVar, Union

T = TypeVar("T")


class ConfigError(ValueError):
    """A config key, value or preset that does not exist or does not fit its type."""


def to_dict(cfg: Any) -> dict:
    """A nested dataclass -> plain dict of JSON types."""
    out = {}
    for f in dataclasses.fields(cfg):
        v = getattr(cfg, f.name)
        out[f.name] = to_dict(v) if dataclasses.is_dataclass(v) else _plain(v)
    return out


def _plain(v: Any) -> Any:
    if isinstance(v, tuple | list):
        return [_plain(x) for x in v]
    if isinstance(v, dict):
        return {k: _plain(x) for k, x in v.items()}
    return v


def from_dict(cls: type[T], data: dict, where: str = "") -> T:
    """Build dataclass `cls` from a dict, recursing into nested configs; unknown keys raise."""
    if not isinstance(data, dict):
        raise ConfigError(f"config {where or cls.__name__} must be a JSON object")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise ConfigError(f"unknown config key(s) {', '.join(where + k for k in unknown)}")
    kwargs = {}
    for name, value in data.items():
        kwargs[name] = _coerce(hints[name], value, where + name)
    try:
        return cls(**kwargs)
    except TypeError as e:
        raise ConfigError(f"config {where or cls.__name__}: {e}") from None


def _args_are_str(tp: Any) -> bool:
    args = typing.get_args(tp)
    return bool(args) and args[0] is str


def _coerce(tp: Any, value: Any, key: str) -> Any:
    """Check `value` (already parsed: JSON or CLI) against type `tp`, converting where safe."""
    origin = typing.get_origin(tp)
    if dataclasses.is_dataclass(tp):
        return from_dict(tp, value, key + ".")
    if origin in (Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        errors = []
        for a in args:
            if a is type(None):
                continue
            try:
                return _coerce(a, value, key)
            except ConfigError as e:
                errors.append(str(e))
        raise ConfigError(errors[0] if errors else f"{key}: bad value {value!r}")
    if origin is Literal:
        allowed = typing.get_args(tp)
        if value not in allowed:
            raise ConfigError(f"{key} must be one of {list(allowed)}, got {value!r}")
        return value
    if origin in (tuple, list):
        if isinstance(value, str) and _args_are_str(tp):
            value = [value]  # `key=a` on the command line: a list of one
        if not isinstance(value, list | tuple):
            raise ConfigError(f"{key} must be a list, got {value!r}")
        args = typing.get_args(tp)
        item = args[0] if args else Any
        items = [_coerce(item, v, key) for v in value]
        return tuple(items) if origin is tuple else items
    if origin is dict:
        _, vt = typing.get_args(tp) or (str, Any)
        if vt in (int, float):
            value = _weights(value, key)
        if not isinstance(value, dict):
            raise ConfigError(f"{key} must be a mapping, got {value!r}")
        return {str(k): _coerce(vt, v, key) for k, v in value.items()}
    if tp is Any:
        return value
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{key} must be true or false, got {value!r}")
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise ConfigError(f"{key} must be an integer, got {value!r}")
    if tp is float:
        if isinstance(value, int | float) and not isinstance(value, bool):
            return float(value)
        raise ConfigError(f"{key} must be a number, got {value!r}")
    if tp is str:
        if isinstance(value, str):
            return value
        raise ConfigError(f"{key} must be a string, got {value!r}")
    return value


def _weights(value: Any, key: str) -> Any:
    """A weight map given by names alone: `a` means {a: 1} (`train.data=folder=/data/x`), and
    a list mixes both forms (`a,b:0.5` -> {a: 1, b: 0.5})."""
    if isinstance(value, str):
        return {value: 1}
    if not isinstance(value, list | tuple):
        return value
    out: dict = {}
    for item in value:
        if isinstance(item, str):
            out[item] = 1
        elif isinstance(item, dict):
            out.update(item)
        else:
            raise ConfigError(f"{key} takes name or name:weight items, got {item!r}")
    return out


def _parse_cli_value(text: str) -> Any:
    """CLI text -> bool / int / float / None / list (a,b) / mapping (k:v,k:v) / str."""
    low = text.lower()
    if low in ("true", "false"):
        return low == "true"
    if low in ("none", "null"):
        return None
    if "," in text or ":" in text:
        parts = [p for p in text.split(",") if p]
        if all(":" in p for p in parts):
            return {k: _parse_cli_value(v) for k, v in (p.split(":", 1) for p in parts)}
        if "," in text:
            return [_parse_cli_value(p) for p in parts]
    for conv in (int, float):
        try:
            return conv(text)
        except ValueError:
            pass
    return text


def apply_overrides(cfg: T, overrides: list[str]) -> T:
    """Return a copy of `cfg` with `a.b=value` overrides applied, each checked against its type."""
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override {item!r} must look like key.sub=value")
        key, text = item.split("=", 1)
        cfg = _replace_path(cfg, key.strip().split("."), _parse_cli_value(text.strip()), key)
    return cfg


def _replace_path(obj: Any, path: list[str], value: Any, full: str) -> Any:
    if not dataclasses.is_dataclass(obj):
        raise ConfigError(f"unknown config key {full!r}")
    names = {f.name: f for f in dataclasses.fields(obj)}
    head = path[0]
    if head not in names:
        raise ConfigError(
            f"unknown config key {full!r} ({head!r} is not one of {', '.join(sorted(names))})"
        )
    if len(path) == 1:
        tp = typing.get_type_hints(type(obj))[head]
        new = _coerce(tp, value, full)
    else:
        new = _replace_path(getattr(obj, head), path[1:], value, full)
    try:
        return dataclasses.replace(obj, **{head: new})
    except (TypeError, ValueError) as e:
        raise ConfigError(f"{full}: {e}") from None
