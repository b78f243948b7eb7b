"""Scenes of the world: objects with exact symbolic truth, sampling, placement and relations.

Coordinates are integer pixels at the scene's resolution. An object's bounding box is
[x - size // 2, x - size // 2 + size) horizontally (likewise vertically), so (x, y) is the centre
of the box for odd sizes and the pixel just right/below it for even sizes.
"""

from __future__ import annotations

import itertools
import random
from collections import Counter
from dataclasses import dataclass, replace
from typing import Literal

from unimm.world.palette import (
    BASE_RESOLUTION,
    COLOR_NAMES,
    HELDOUT_PAIRS,
    MAX_SIZE,
    MIN_GAP,
    MIN_SIZE,
    OPPOSITE,
    RELATION_MARGIN,
    RELATIONS,
    SHAPES,
)

HeldoutMode = Literal["exclude", "only", "any"]
Pair = tuple[str, str]  # (color, shape)


@dataclass(frozen=True, slots=True)
class Obj:
    shape: str
    color: str
    x: int
    y: int
    size: int

    def __post_init__(self) -> None:
        if self.shape not in SHAPES:
            raise ValueError(f"unknown shape {self.shape!r}; expected one of {SHAPES}")
        if self.color not in COLOR_NAMES:
            raise ValueError(f"unknown color {self.color!r}; expected one of {COLOR_NAMES}")
        if self.size < 1:
            raise ValueError(f"object size must be >= 1 px, got {self.size}")

    @property
    def pair(self) -> Pair:
        return (self.color, self.shape)

    def bbox(self) -> tuple[int, int, int, int]:
        """(x0, y0, x1, y1) with x1, y1 exclusive."""
        x0 = self.x - self.size // 2
        y0 = self.y - self.size // 2
        return x0, y0, x0 + self.size, y0 + self.size


@dataclass(frozen=True, slots=True)
class Scene:
    objects: tuple[Obj, ...]
    resolution: int = BASE_RESOLUTION

    def __post_init__(self) -> None:
        if self.resolution < 16:
            raise ValueError(f"resolution must be >= 16 px, got {self.resolution}")
        if not isinstance(self.objects, tuple):
            object.__setattr__(self, "objects", tuple(self.objects))

    def pairs(self) -> Counter[Pair]:
        return Counter(o.pair for o in self.objects)

    def has_heldout(self) -> bool:
        return any(o.pair in HELDOUT_PAIRS for o in self.objects)

    def sorted(self) -> Scene:
        """The same scene with objects in a canonical order (for comparisons and display)."""
        key = lambda o: (SHAPES.index(o.shape), COLOR_NAMES.index(o.color), o.x, o.y, o.size)  # noqa: E731
        return Scene(tuple(sorted(self.objects, key=key)), self.resolution)


# ---------------------------------------------------------------- geometry scaled to resolution


def scale(resolution: int) -> float:
    return resolution / BASE_RESOLUTION


def size_range(resolution: int) -> tuple[int, int]:
    s = scale(resolution)
    return max(3, round(MIN_SIZE * s)), max(3, round(MAX_SIZE * s))


def min_gap(resolution: int) -> int:
    return max(1, round(MIN_GAP * scale(resolution)))


def relation_margin(resolution: int) -> float:
    return RELATION_MARGIN * scale(resolution)


def inside(o: Obj, resolution: int) -> bool:
    x0, y0, x1, y1 = o.bbox()
    return x0 >= 0 and y0 >= 0 and x1 <= resolution and y1 <= resolution


def separated(a: Obj, b: Obj, gap: int) -> bool:
    """True when at least `gap` background pixels lie between the two bounding boxes."""
    ax0, ay0, ax1, ay1 = a.bbox()
    bx0, by0, bx1, by1 = b.bbox()
    return ax1 + gap <= bx0 or bx1 + gap <= ax0 or ay1 + gap <= by0 or by1 + gap <= ay0


def is_valid(scene: Scene) -> bool:
    """Every object inside the canvas and every pair separated by the minimum gap."""
    gap = min_gap(scene.resolution)
    if not all(inside(o, scene.resolution) for o in scene.objects):
        return False
    return all(separated(a, b, gap) for a, b in itertools.combinations(scene.objects, 2))


def relation(a: Obj, b: Obj, resolution: int = BASE_RESOLUTION) -> set[str]:
    """The relations "a <rel> b" that hold with the scaled margin (image y grows downwards)."""
    m = relation_margin(resolution)
    rels: set[str] = set()
    if b.x - a.x >= m:
        rels.add("left of")
    if a.x - b.x >= m:
        rels.add("right of")
    if b.y - a.y >= m:
        rels.add("above")
    if a.y - b.y >= m:
        rels.add("below")
    return rels


def holds(a: Obj, rel: str, b: Obj, resolution: int = BASE_RESOLUTION) -> bool:
    if rel not in RELATIONS:
        raise ValueError(f"unknown relation {rel!r}; expected one of {RELATIONS}")
    return rel in relation(a, b, resolution)


def opposite(rel: str) -> str:
    return OPPOSITE[rel]


# ---------------------------------------------------------------- sampling and placement


def random_obj(rng: random.Random, pair: Pair, resolution: int, size: int | None = None) -> Obj:
    lo, hi = size_range(resolution)
    size = rng.randint(lo, hi) if size is None else size
    if size > resolution:
        raise ValueError(f"object size {size} does not fit a {resolution} px canvas")
    x0 = rng.randint(0, resolution - size)
    y0 = rng.randint(0, resolution - size)
    return Obj(pair[1], pair[0], x0 + size // 2, y0 + size // 2, size)


def place_objects(
    rng: random.Random,
    specs: list[Pair] | tuple[Pair, ...],
    relation: tuple[int, str, int] | None = None,
    resolution: int = BASE_RESOLUTION,
    fixed: tuple[Obj, ...] = (),
    max_tries: int = 200,
) -> Scene:
    """Build a valid scene holding `fixed` plus one new object per (color, shape) in `specs`.

    `relation=(i, rel, j)` asks that new object i stand in `rel` to new object j with the margin.
    Raises ValueError when no placement is found (too many objects for the canvas).
    """
    for c, s in specs:
        Obj(s, c, 0, 0, 1)  # validates names
    if relation is not None:
        i, rel, j = relation
        if rel not in RELATIONS or not (0 <= i < len(specs) and 0 <= j < len(specs)) or i == j:
            raise ValueError(f"bad relation {relation} for {len(specs)} objects")
    gap = min_gap(resolution)
    for _ in range(max_tries):
        placed: list[Obj] = []
        ok = True
        for pair in specs:
            for _ in range(100):
                o = random_obj(rng, pair, resolution)
                if all(separated(o, p, gap) for p in (*fixed, *placed)):
                    placed.append(o)
                    break
            else:
                ok = False
                break
        if not ok:
            continue
        if relation is not None and not holds(
            placed[relation[0]], relation[1], placed[relation[2]], resolution
        ):
            continue
        return Scene((*fixed, *placed), resolution)
    raise ValueError(
        f"could not place {len(specs)} objects next to {len(fixed)} fixed ones on a "
        f"{resolution} px canvas in {max_tries} tries"
    )


def allowed_pairs(heldout: HeldoutMode) -> list[Pair]:
    all_pairs = [(c, s) for c in COLOR_NAMES for s in SHAPES]
    if heldout == "exclude":
        return [p for p in all_pairs if p not in HELDOUT_PAIRS]
    if heldout == "only":
        return sorted(HELDOUT_PAIRS)
    if heldout == "any":
        return all_pairs
    raise ValueError(f"heldout must be 'exclude', 'only' or 'any', got {heldout!r}")


def sample_pairs(rng: random.Random, n: int, heldout: HeldoutMode) -> list[Pair]:
    """n colour-shape pairs; "only" forces at least one held-out pair, "exclude" forbids them."""
    if heldout == "only":
        rest = allowed_pairs("any")
        pairs = [rng.choice(rest) for _ in range(n)]
        pairs[rng.randrange(n)] = rng.choice(allowed_pairs("only"))
        return pairs
    pool = allowed_pairs(heldout)
    return [rng.choice(pool) for _ in range(n)]


def sample_scene(
    rng: random.Random,
    resolution: int = BASE_RESOLUTION,
    min_objects: int = 1,
    max_objects: int = 4,
    heldout: HeldoutMode = "exclude",
) -> Scene:
    if not 1 <= min_objects <= max_objects:
        raise ValueError(f"need 1 <= min_objects <= max_objects, got {min_objects}, {max_objects}")
    n = rng.randint(min_objects, max_objects)
    return place_objects(rng, sample_pairs(rng, n, heldout), resolution=resolution)


# ---------------------------------------------------------------- comparing scenes


def scenes_match(
    a: Scene, b: Scene, pos_tol: float | None = None, size_tol: float | None = None
) -> bool:
    """Same objects (shape and colour), matched one to one with centres within `pos_tol` px.

    pos_tol None means only the multiset of (colour, shape) is compared. The matching tries all
    assignments within each colour-shape group, so the order of objects does not matter.
    """
    if a.pairs() != b.pairs():
        return False
    if pos_tol is None:
        return True
    groups: dict[Pair, tuple[list[Obj], list[Obj]]] = {}
    for o in a.objects:
        groups.setdefault(o.pair, ([], []))[0].append(o)
    for o in b.objects:
        groups[o.pair][1].append(o)

    def close(p: Obj, q: Obj) -> bool:
        if abs(p.x - q.x) > pos_tol or abs(p.y - q.y) > pos_tol:
            return False
        return size_tol is None or abs(p.size - q.size) <= size_tol

    for xs, ys in groups.values():
        if len(xs) > 6:  # factorial blow-up; greedy is enough for such crowded groups
            used: set[int] = set()
            for p in xs:
                k = next((k for k, q in enumerate(ys) if k not in used and close(p, q)), None)
                if k is None:
                    return False
                used.add(k)
            continue
        if not any(
            all(close(p, q) for p, q in zip(xs, perm, strict=True))
            for perm in itertools.permutations(ys)
        ):
            return False
    return True


def with_object(scene: Scene, index: int, **changes: object) -> Scene:
    objs = list(scene.objects)
    objs[index] = replace(objs[index], **changes)
    return Scene(tuple(objs), scene.resolution)
