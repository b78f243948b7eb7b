"""Sampling randomness with one generator per batch row, so that dynamic batching does not change
what a request draws.

A sampler's randomness comes from `Rng`:
- a single `torch.Generator` (or None): one stream for the whole batch, drawn exactly as
  torch.rand / torch.randn / torch.multinomial always drew it;
- `RowGenerators`: one generator per prompt row. Every draw of shape (B, ...) takes row b's
  values from generator b alone, so row b's result is the same whichever rows share its batch.

A row's generator draws its slice with the same number of elements, in the same order, as a
single generator draws for a batch of one (CPU random kernels depend on the element count, not
on the shape), so a batch of one gives the same result with `seed=[k]` as with `seed=k`.

Samplers that run classifier-free guidance must draw after cond and uncond rows are combined:
the rows of a draw are prompts, not model rows.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from numbers import Integral

import torch
from torch import Tensor

Seed = int | Sequence[int]


class RowGenerators:
    """One CPU `torch.Generator` per batch row, seeded from `seeds[b]`."""

    def __init__(self, seeds: Sequence[int]) -> None:
        self.generators = [torch.Generator().manual_seed(int(s)) for s in seeds]

    def __len__(self) -> int:
        return len(self.generators)

    def __iter__(self) -> Iterator[torch.Generator]:
        return iter(self.generators)


Rng = torch.Generator | RowGenerators | None


def make_rng(seed: Seed, rows: int) -> torch.Generator | RowGenerators:
    """The randomness of a `generate(prompts, ..., seed)` call with `rows` prompts: an int seeds
    one generator for the batch (the historical behaviour); a sequence gives each prompt its
    own. Raises ValueError for a sequence of the wrong length or with non-int entries."""
    if _is_int(seed):
        return torch.Generator().manual_seed(int(seed))
    if isinstance(seed, str | bytes) or not isinstance(seed, Sequence):
        raise ValueError(f"seed must be an int or a sequence of ints, got {type(seed).__name__}")
    if len(seed) != rows:
        raise ValueError(f"seed has {len(seed)} entries for {rows} prompts: give one per prompt")
    bad = [i for i, s in enumerate(seed) if not _is_int(s)]
    if bad:
        raise ValueError(
            f"seed entries must be ints; entry {bad[0]} is {type(seed[bad[0]]).__name__}"
        )
    return RowGenerators(seed)


def _is_int(value: object) -> bool:
    # bool is an Integral, but True as a seed is almost surely a mistake.
    return isinstance(value, Integral) and not isinstance(value, bool)


def row_count(rng: Rng) -> int:
    """How many rows a draw from rng must have along dim 0 (1 for a single stream, which draws
    any number of rows; see `group_rows`)."""
    return len(rng) if isinstance(rng, RowGenerators) else 1


def check_rows(n: int, rng: Rng) -> None:
    """Raise ValueError unless rng can draw n rows (a single stream draws any number)."""
    if isinstance(rng, RowGenerators) and n != len(rng):
        raise ValueError(f"{len(rng)} row generators for {n} rows: give one per row")


def _device(rng: Rng) -> torch.device | None:
    """Where rng draws: its generators' device (RowGenerators are CPU ones); None: global RNG."""
    if isinstance(rng, RowGenerators):
        return torch.device("cpu")
    return rng.device if rng is not None else None


def rand(
    shape: Sequence[int],
    rng: Rng,
    dtype: torch.dtype | None = None,
    device: torch.device | None = None,
) -> Tensor:
    """U[0, 1) of `shape` on `device`; with RowGenerators, row b of dim 0 comes from generator
    b. Drawn where the generators are (CPU ones give the same numbers on every device)."""
    if not isinstance(rng, RowGenerators):
        return torch.rand(tuple(shape), generator=rng, dtype=dtype, device=_device(rng)).to(device)
    check_rows(shape[0], rng)
    rows = [torch.rand(tuple(shape[1:]), generator=g, dtype=dtype) for g in rng]
    return torch.stack(rows).to(device)


def randn(
    shape: Sequence[int],
    rng: Rng,
    dtype: torch.dtype | None = None,
    device: torch.device | None = None,
) -> Tensor:
    """N(0, 1) of `shape` on `device`; with RowGenerators, row b of dim 0 comes from generator b."""
    if not isinstance(rng, RowGenerators):
        return torch.randn(tuple(shape), generator=rng, dtype=dtype, device=_device(rng)).to(device)
    check_rows(shape[0], rng)
    rows = [torch.randn(tuple(shape[1:]), generator=g, dtype=dtype) for g in rng]
    return torch.stack(rows).to(device)


def categorical(probs: Tensor, rng: Rng) -> Tensor:
    """One id per distribution: probs (B, ..., V) -> (B, ...) long, as torch.multinomial of the
    flattened distributions; with RowGenerators, row b's distributions use generator b. The draw
    happens on the generators' device (a CUDA kernel refuses a CPU generator), so a seed picks
    the same ids on every device; the ids come back on probs' device."""
    V, device = probs.shape[-1], probs.device
    if rng is not None:
        probs = probs.to(_device(rng))
    if not isinstance(rng, RowGenerators):
        ids = torch.multinomial(probs.reshape(-1, V), 1, generator=rng).view(probs.shape[:-1])
        return ids.to(device)
    check_rows(probs.shape[0], rng)
    rows = [
        torch.multinomial(p.reshape(-1, V), 1, generator=g).view(p.shape[:-1])
        for p, g in zip(probs, rng, strict=True)
    ]
    return torch.stack(rows).to(device)


def group_rows(n: int, rng: Rng) -> tuple[int, int]:
    """Split n flat draws into (groups, per group) so that a sampler whose draws are the rows of
    B prompts flattened together ((B * k, ...), e.g. MAR's tokens of every image) can draw
    (groups, per group, ...) and flatten: row b's k draws then come from generator b."""
    groups = row_count(rng)
    if n % groups:
        raise ValueError(f"{n} draws do not split evenly over {groups} row generators")
    return groups, n // groups
