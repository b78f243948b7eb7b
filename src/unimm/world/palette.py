"""The fixed vocabulary of the scene world (shared/WORLD.md): colours, shapes, held-out pairs.

These values define the benchmark; changing any of them makes figures incomparable across
versions of the project.
"""

from __future__ import annotations

COLORS: dict[str, tuple[int, int, int]] = {
    "red": (220, 40, 40),
    "orange": (245, 140, 20),
    "yellow": (235, 215, 30),
    "green": (40, 170, 60),
    "blue": (40, 90, 225),
    "purple": (150, 60, 190),
}
COLOR_NAMES: tuple[str, ...] = tuple(COLORS)

SHAPES: tuple[str, ...] = ("circle", "square", "triangle", "diamond")

BACKGROUND: tuple[int, int, int] = (255, 255, 255)

# Colour-shape pairs that never occur in training data; the "held-out" split uses only these.
HELDOUT_PAIRS: frozenset[tuple[str, str]] = frozenset(
    {("red", "triangle"), ("blue", "circle"), ("yellow", "diamond"), ("green", "square")}
)

NUMBER_WORDS: tuple[str, ...] = (
    "zero",
    "one",
    "two",
    "three",
    "four",
    "five",
    "six",
    "seven",
    "eight",
    "nine",
    "ten",
)

RELATIONS: tuple[str, ...] = ("left of", "right of", "above", "below")
OPPOSITE: dict[str, str] = {
    "left of": "right of",
    "right of": "left of",
    "above": "below",
    "below": "above",
}

# Geometry at the benchmark resolution (64 px); everything scales with resolution / 64.
BASE_RESOLUTION = 64
MIN_SIZE = 10
MAX_SIZE = 18
MIN_GAP = 2
RELATION_MARGIN = 6
RESOLUTIONS: tuple[int, ...] = (32, 64, 128, 256)


def plural(shape: str) -> str:
    return shape + "s"


def is_heldout(color: str | None, shape: str) -> bool:
    return color is not None and (color, shape) in HELDOUT_PAIRS
