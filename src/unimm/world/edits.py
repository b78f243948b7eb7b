"""Edit instructions with their exact target scene: recolour, add, remove, move.

The target is the source scene with exactly the named change. A move shifts the object by a
fixed distance (12 px at 64 px, scaled), so the target is predictable from the instruction.
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

from unimm.world.palette import BASE_RESOLUTION, COLOR_NAMES, HELDOUT_PAIRS, SHAPES
from unimm.world.phrases import phrase
from unimm.world.scene import Obj, Scene, is_valid, place_objects, with_object

EDIT_KINDS: tuple[str, ...] = ("recolor", "add", "remove", "move")
MOVE_PX = 12
# instruction wording -> unit step (image y grows downwards)
DIRECTIONS: dict[str, tuple[int, int]] = {
    "to the left": (-1, 0),
    "to the right": (1, 0),
    "up": (0, -1),
    "down": (0, 1),
}


@dataclass(frozen=True, slots=True)
class Edit:
    instruction: str
    target: Scene
    kind: str
    index: int  # the edited object (in the source for recolor/remove/move, in the target for add)


def move_distance(resolution: int) -> int:
    return round(MOVE_PX * resolution / BASE_RESOLUTION)


def referents(scene: Scene, rng: random.Random) -> list[tuple[int, str]]:
    """(index, "the circle" / "the red circle") for every object that can be named uniquely."""
    shapes = Counter(o.shape for o in scene.objects)
    pairs = scene.pairs()
    out: list[tuple[int, str]] = []
    for i, o in enumerate(scene.objects):
        names = []
        if shapes[o.shape] == 1:
            names.append(f"the {o.shape}")
        if pairs[o.pair] == 1:
            names.append(f"the {o.color} {o.shape}")
        if names:
            out.append((i, rng.choice(names)))
    return out


def _recolor(scene: Scene, rng: random.Random, avoid_heldout: bool) -> Edit | None:
    refs = referents(scene, rng)
    if not refs:
        return None
    i, ref = rng.choice(refs)
    o = scene.objects[i]
    colors = [c for c in COLOR_NAMES if c != o.color]
    if avoid_heldout:
        colors = [c for c in colors if (c, o.shape) not in HELDOUT_PAIRS]
    # the new colour must keep the referent unique in the target only if it was named by pair;
    # that does not matter for the instruction, which speaks of the source
    c = rng.choice(colors)
    return Edit(f"make {ref} {c}", with_object(scene, i, color=c), "recolor", i)


def _add(scene: Scene, rng: random.Random, avoid_heldout: bool, max_objects: int) -> Edit | None:
    if len(scene.objects) >= max_objects:
        return None
    pool = [(c, s) for c in COLOR_NAMES for s in SHAPES]
    if avoid_heldout:
        pool = [p for p in pool if p not in HELDOUT_PAIRS]
    c, s = rng.choice(pool)
    try:
        target = place_objects(
            rng, [(c, s)], resolution=scene.resolution, fixed=scene.objects, max_tries=20
        )
    except ValueError:
        return None
    return Edit(f"add {phrase(c, s, 1)}", target, "add", len(scene.objects))


def _remove(scene: Scene, rng: random.Random) -> Edit | None:
    refs = referents(scene, rng)
    if len(scene.objects) < 2 or not refs:
        return None
    i, ref = rng.choice(refs)
    objs = scene.objects[:i] + scene.objects[i + 1 :]
    return Edit(f"remove {ref}", Scene(objs, scene.resolution), "remove", i)


def _move(scene: Scene, rng: random.Random) -> Edit | None:
    refs = referents(scene, rng)
    rng.shuffle(refs)
    d = move_distance(scene.resolution)
    dirs = list(DIRECTIONS)
    for i, ref in refs:
        rng.shuffle(dirs)
        o: Obj = scene.objects[i]
        for name in dirs:
            dx, dy = DIRECTIONS[name]
            target = with_object(scene, i, x=o.x + dx * d, y=o.y + dy * d)
            if is_valid(target):
                return Edit(f"move {ref} {name}", target, "move", i)
    return None


def edit(
    scene: Scene,
    rng: random.Random,
    avoid_heldout: bool = True,
    kinds: tuple[str, ...] = EDIT_KINDS,
    max_objects: int = 4,
) -> Edit:
    """A random feasible edit of one of `kinds`; raises ValueError when none is feasible."""
    for k in kinds:
        if k not in EDIT_KINDS:
            raise ValueError(f"unknown edit kind {k!r}; expected one of {EDIT_KINDS}")
    order = list(kinds)
    rng.shuffle(order)
    for k in order:
        if k == "recolor":
            e = _recolor(scene, rng, avoid_heldout)
        elif k == "add":
            e = _add(scene, rng, avoid_heldout, max_objects)
        elif k == "remove":
            e = _remove(scene, rng)
        else:
            e = _move(scene, rng)
        if e is not None:
            return e
    raise ValueError(f"no feasible edit of kinds {kinds} for scene {scene}")


# ---------------------------------------------------------------- reading instructions


class InstructionError(ValueError):
    """An edit instruction that does not apply to the scene (absent or ambiguous object)."""


Ref = tuple[str | None, str]  # (colour or None, shape): "the red circle" / "the circle"
_VERB = {"recolor": "recolour", "remove": "remove", "move": "move"}


@dataclass(frozen=True, slots=True)
class Instruction:
    """A world edit instruction read into its parts, before any scene is consulted."""

    text: str  # normalised
    kind: str  # one of EDIT_KINDS
    ref: Ref | None  # the object edited (None for add)
    color: str | None = None  # the new colour (recolor) or the added object's (add)
    shape: str | None = None  # the added object's shape (add)
    step: tuple[int, int] = (0, 0)  # unit move (move)


def _read_ref(ref: str) -> Ref:
    words = ref.split()
    if len(words) not in (2, 3) or words[0] != "the" or words[-1] not in SHAPES:
        raise InstructionError(
            f"cannot read the object {ref!r} (say 'the circle' or 'the red circle')"
        )
    color = words[1] if len(words) == 3 else None
    if color is not None and color not in COLOR_NAMES:
        raise InstructionError(f"unknown colour {color!r} in {ref!r}")
    return (color, words[-1])


def parse_instruction(instruction: str) -> Instruction:
    """Read a make/add/remove/move instruction; raises InstructionError when it is not in the
    world's edit grammar (whatever the scene)."""
    text = " ".join(instruction.strip().lower().rstrip(".").split())
    verb, _, rest = text.partition(" ")
    if verb == "make":
        ref, _, color = rest.rpartition(" ")
        if color not in COLOR_NAMES:
            raise InstructionError(f"cannot read the colour in {instruction!r}")
        return Instruction(text, "recolor", _read_ref(ref), color=color)
    if verb == "remove":
        return Instruction(text, "remove", _read_ref(rest))
    if verb == "move":
        for name, step in DIRECTIONS.items():
            if rest.endswith(" " + name):
                return Instruction(text, "move", _read_ref(rest[: -len(name) - 1]), step=step)
        raise InstructionError(f"cannot read the direction in {instruction!r}")
    if verb == "add":
        words = rest.split()
        if len(words) != 3 or words[0] not in ("a", "an") or words[1] not in COLOR_NAMES:
            raise InstructionError(f"cannot read the object to add in {instruction!r}")
        if words[2] not in SHAPES:
            raise InstructionError(f"unknown shape {words[2]!r} in {instruction!r}")
        return Instruction(text, "add", None, color=words[1], shape=words[2])
    raise InstructionError(
        f"cannot read the edit {instruction!r}: start with make, add, remove or move"
    )


def resolve(objects: Sequence[Ref], ins: Instruction, expected: bool = False) -> int:
    """Index of the object `ins` names among (colour, shape) objects, where a colour may be
    None (an expected scene drawn from a caption that left it open).

    Refuses only what is provable: no object can match (absent), or several surely match
    (ambiguous). Otherwise the instruction is taken as valid, which fixes its object: the one
    sure match, or else an open-coloured one (all such are alike, so the first). On a detected
    scene every colour is known and this is the plain rule: exactly one match.
    expected=True words the errors for a scene the request describes, not an image."""
    assert ins.ref is not None
    color, shape = ins.ref
    name = shape if color is None else f"{color} {shape}"
    sure = [i for i, (c, s) in enumerate(objects) if s == shape and color in (None, c)]
    maybe = [i for i, (c, s) in enumerate(objects) if s == shape and c is None]
    if not sure and not maybe:
        there = "there is" if expected else "the image has"
        raise InstructionError(f"{there} no {name} to {_VERB[ins.kind]}")
    if len(sure) > 1:
        there = "there are" if expected else "the image has"
        the = f"the {name}"
        raise InstructionError(f"{there} {len(sure)} {name}s: {the!r} is ambiguous")
    return (sure or maybe)[0]


def apply_instruction(scene: Scene, instruction: str) -> Edit:
    """The exact target of a world edit instruction applied to `scene` (the inverse of `edit`:
    recolour / remove / move name a unique object, add names a new one). An added object's
    position is free, so the target places it deterministically where it fits; judge an "add"
    by its pairs and the untouched objects (`unimm.evaluate.editing.edit_correct`).
    Raises InstructionError when the instruction does not parse or names an absent or
    ambiguous object, and for moves that leave the canvas or collide."""
    ins = parse_instruction(instruction)
    text = ins.text
    if ins.kind == "add":
        assert ins.color is not None and ins.shape is not None
        rng = random.Random(f"unimm-add:{text}:{scene}")
        try:
            target = place_objects(
                rng, [(ins.color, ins.shape)], resolution=scene.resolution, fixed=scene.objects
            )
        except ValueError:
            raise InstructionError(f"no free space to {text}") from None
        return Edit(text, target, "add", len(scene.objects))
    i = resolve([(o.color, o.shape) for o in scene.objects], ins)
    if ins.kind == "recolor":
        return Edit(text, with_object(scene, i, color=ins.color), "recolor", i)
    if ins.kind == "remove":
        objs = scene.objects[:i] + scene.objects[i + 1 :]
        return Edit(text, Scene(objs, scene.resolution), "remove", i)
    o, d = scene.objects[i], move_distance(scene.resolution)
    dx, dy = ins.step
    target = with_object(scene, i, x=o.x + dx * d, y=o.y + dy * d)
    if not is_valid(target):
        raise InstructionError(f"cannot {text}: it would leave the canvas or overlap")
    return Edit(text, target, "move", i)


def expect_instruction(objects: Sequence[Ref], ins: Instruction) -> tuple[Ref, ...]:
    """The expected scene after `ins`, as (colour or None, shape) objects: the symbolic side of
    `apply_instruction` for a scene known only from its description (positions unknown, so a
    move cannot be refused and an add always fits). Raises InstructionError for an absent or
    ambiguous object (see `resolve`)."""
    objs = list(objects)
    if ins.kind == "add":
        assert ins.shape is not None
        return (*objs, (ins.color, ins.shape))
    i = resolve(objs, ins, expected=True)
    if ins.kind == "recolor":
        objs[i] = (ins.color, objs[i][1])
    elif ins.kind == "remove":
        del objs[i]
    elif objs[i][0] is None:  # a move of "the red circle" tells its colour
        objs[i] = ins.ref  # type: ignore[assignment]
    return tuple(objs)
