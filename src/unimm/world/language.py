"""Captions of scenes: random templates for training, one canonical form, and a parser.

Grammar shared by captions and GenEval prompts (so prompts are phrased like training data):

    caption  := list | phrase " " relation " " phrase
    list     := phrase | phrase (", " phrase)* " and " phrase
    phrase   := ("a" | "an" | number) [color] shape["s"]
    relation := "left of" | "right of" | "above" | "below"

A phrase without colour covers every object of that shape, so every caption still fixes the
number of objects of each shape. Questions (qa.py) and edits (edits.py) are re-exported here.
"""

from __future__ import annotations

import random
from collections import Counter

from unimm.world.palette import COLOR_NAMES, NUMBER_WORDS, RELATIONS, SHAPES, plural
from unimm.world.phrases import and_list, phrase
from unimm.world.scene import Obj, Scene, relation

Group = tuple[str | None, str, int]  # (color or None, shape, count)


def group_key(g: Group) -> tuple[int, int]:
    return (SHAPES.index(g[1]), -1 if g[0] is None else COLOR_NAMES.index(g[0]))


def scene_groups(scene: Scene, with_color: bool = True) -> list[Group]:
    """Objects grouped by (colour, shape), or by shape alone, in canonical order."""
    if with_color:
        counts = Counter((o.color, o.shape) for o in scene.objects)
        groups: list[Group] = [(c, s, n) for (c, s), n in counts.items()]
    else:
        shape_counts = Counter(o.shape for o in scene.objects)
        groups = [(None, s, n) for s, n in shape_counts.items()]
    return sorted(groups, key=group_key)


def describe(groups: list[Group]) -> str:
    return and_list([phrase(c, s, n) for c, s, n in groups])


def canonical_caption(scene: Scene) -> str:
    """The one deterministic full description: colour-shape groups in palette order."""
    return describe(scene_groups(scene, with_color=True))


def relation_caption(a: Obj, rel: str, b: Obj, with_color: bool = True) -> str:
    pa = phrase(a.color if with_color else None, a.shape, 1)
    pb = phrase(b.color if with_color else None, b.shape, 1)
    return f"{pa} {rel} {pb}"


def _mixed_groups(scene: Scene, rng: random.Random) -> list[Group]:
    """Per shape, either colour-shape groups or one colour-free group for all of that shape."""
    groups: list[Group] = []
    for c, s, n in scene_groups(scene, with_color=False):
        if rng.random() < 0.5:
            groups.append((c, s, n))
        else:
            groups.extend(g for g in scene_groups(scene) if g[1] == s)
    return groups


def caption(scene: Scene, rng: random.Random) -> str:
    """One of several templates, chosen at random; always mentions every object."""
    if not scene.objects:
        raise ValueError("cannot caption an empty scene")
    objs = scene.objects
    if len(objs) == 2 and rng.random() < 0.5:
        a, b = (objs[0], objs[1]) if rng.random() < 0.5 else (objs[1], objs[0])
        rels = sorted(relation(a, b, scene.resolution))
        with_color = rng.random() < 0.75
        distinct = a.pair != b.pair if with_color else a.shape != b.shape
        if rels and distinct:
            return relation_caption(a, rng.choice(rels), b, with_color)
    u = rng.random()
    if u < 0.55:
        groups = scene_groups(scene, with_color=True)
    elif u < 0.85:
        groups = scene_groups(scene, with_color=False)
    else:
        groups = _mixed_groups(scene, rng)
    rng.shuffle(groups)
    return describe(groups)


# ---------------------------------------------------------------- parsing

_COUNT_WORDS = {"a": 1, "an": 1, **{w: i for i, w in enumerate(NUMBER_WORDS) if i >= 1}}
_SINGULAR = {s: s for s in SHAPES} | {plural(s): s for s in SHAPES}


def parse_phrase(text: str) -> Group | None:
    words = text.split()
    if len(words) not in (2, 3) or words[0] not in _COUNT_WORDS or words[-1] not in _SINGULAR:
        return None
    count = _COUNT_WORDS[words[0]]
    shape = _SINGULAR[words[-1]]
    if (words[-1] == shape) != (count == 1):  # "a circles" / "two circle"
        return None
    color = None
    if len(words) == 3:
        if words[1] not in COLOR_NAMES:
            return None
        color = words[1]
    return (color, shape, count)


def _normalise(text: str) -> str:
    return " ".join(text.strip().lower().rstrip(".").split())


def parse_prompt(text: str) -> tuple[list[Group], tuple[int, str, int] | None] | None:
    """Groups plus an optional relation (0, rel, 1) between the two phrases; None if not parsed."""
    t = _normalise(text)
    for rel in RELATIONS:
        left, sep, right = t.partition(f" {rel} ")
        if sep:
            a, b = parse_phrase(left), parse_phrase(right)
            if a is None or b is None or a[2] != 1 or b[2] != 1:
                return None
            return [a, b], (0, rel, 1)
    head, sep, last = t.rpartition(" and ")
    parts = [*head.split(", "), last] if sep else [t]
    groups = [parse_phrase(p) for p in parts]
    if any(g is None for g in groups):
        return None
    return [g for g in groups if g is not None], None


def parse_caption(text: str) -> list[Group] | None:
    """[(color or None, shape, count)] in caption order; None when the text does not parse."""
    parsed = parse_prompt(text)
    return None if parsed is None else parsed[0]


def caption_matches(text: str, scene: Scene) -> bool:
    """Exact match: the caption parses to exactly the scene's colour-shape counts."""
    groups = parse_caption(text)
    if groups is None or any(c is None for c, _, _ in groups):
        return False
    got: Counter[tuple[str | None, str]] = Counter()
    for c, s, n in groups:
        got[(c, s)] += n
    return got == Counter(scene.pairs())


# re-exported so `language` offers the whole text side of the world in one import
from unimm.world.edits import Edit, edit  # noqa: E402
from unimm.world.qa import QA, questions  # noqa: E402

__all__ = [
    "QA",
    "Edit",
    "Group",
    "canonical_caption",
    "caption",
    "caption_matches",
    "edit",
    "parse_caption",
    "parse_prompt",
    "questions",
    "scene_groups",
]
