"""Questions about a scene with short answers; only unambiguous ones (the referent is unique)."""

from __future__ import annotations

import random
from collections import Counter
from dataclasses import dataclass

from unimm.world.palette import COLOR_NAMES, HELDOUT_PAIRS, NUMBER_WORDS, RELATIONS, SHAPES, plural
from unimm.world.phrases import and_list, article
from unimm.world.scene import Obj, Pair, Scene, opposite, relation

QTYPES: tuple[str, ...] = ("color", "shape", "count", "exists", "position")
# The question types a model can be taught to answer by describing the image first
# (with_rationale): the caption settles colour, shape, count and exists questions, and a
# description that places each object (grounded_description) settles most position ones.
RATIONALE_QTYPES: tuple[str, ...] = ("color", "shape", "count", "exists", "position")
# What separates a reasoned answer's description from its final answer:
# "a red circle and a blue square. answer: no". Evaluation scores the text after the last mark.
ANSWER_MARK = "answer:"


@dataclass(frozen=True, slots=True)
class QA:
    question: str
    answer: str
    qtype: str
    # colour-shape pairs the question and its answer speak of (to keep held-out pairs out of
    # training and to pick questions about them for the held-out evaluation)
    pairs: tuple[Pair, ...] = ()


def _absent_pairs(scene: Scene, avoid_heldout: bool) -> list[Pair]:
    """Colour-shape pairs the scene does not hold (less the held-out ones when asked), in a
    fixed order so that a seeded choice among them is reproducible."""
    pairs = scene.pairs()
    absent = [(c, s) for c in COLOR_NAMES for s in SHAPES if (c, s) not in pairs]
    return [p for p in absent if p not in HELDOUT_PAIRS] if avoid_heldout else absent


def _color_qs(scene: Scene) -> list[QA]:
    shapes = Counter(o.shape for o in scene.objects)
    return [
        QA(f"what color is the {o.shape}?", o.color, "color", (o.pair,))
        for o in scene.objects
        if shapes[o.shape] == 1
    ]


def _shape_qs(scene: Scene) -> list[QA]:
    colors = Counter(o.color for o in scene.objects)
    return [
        QA(f"what shape is the {o.color} object?", o.shape, "shape", (o.pair,))
        for o in scene.objects
        if colors[o.color] == 1
    ]


def _count_qs(scene: Scene, rng: random.Random) -> list[QA]:
    shapes = Counter(o.shape for o in scene.objects)
    pairs = scene.pairs()
    qs = [
        QA(f"how many {plural(s)} are there?", NUMBER_WORDS[shapes[s]], "count", ()) for s in SHAPES
    ]
    # coloured counts: every present pair plus one absent pair, so "zero" is not always shape-only
    absent = _absent_pairs(scene, avoid_heldout=False)
    asked = list(pairs) + ([rng.choice(absent)] if absent else [])
    qs += [
        QA(f"how many {c} {plural(s)} are there?", NUMBER_WORDS[pairs[(c, s)]], "count", ((c, s),))
        for c, s in asked
    ]
    return qs


def _easy_absent(scene: Scene, absent: list[Pair]) -> list[Pair]:
    """The absent pairs that share as little as possible with the scene: neither colour nor
    shape in it where there are such, else no colour in it (a scene of at most 4 objects
    always leaves 2 of the 6 colours out). "Is there a red circle?" about a scene with no red
    is answered by finding red alone, a first-order step towards matching both words."""
    colors = {o.color for o in scene.objects}
    shapes = {o.shape for o in scene.objects}
    neither = [(c, s) for c, s in absent if c not in colors and s not in shapes]
    return neither or [(c, s) for c, s in absent if c not in colors] or absent


def _exists_qs(
    scene: Scene, rng: random.Random, avoid_heldout: bool, easy: bool = False
) -> list[QA]:
    pairs = scene.pairs()
    absent = _absent_pairs(scene, avoid_heldout)
    if easy:
        absent = _easy_absent(scene, absent)
    # answer balance: half yes, half no
    if rng.random() < 0.5 or not absent:
        c, s = rng.choice(sorted(pairs))
        answer = "yes"
    else:
        c, s = rng.choice(absent)
        answer = "no"
    return [QA(f"is there {article(c)} {c} {s}?", answer, "exists", ((c, s),))]


def _wide(a: Obj, rel: str, b: Obj, resolution: int) -> bool:
    """The two objects lie at least a third of the canvas apart along rel's axis, so where the
    first one sits on the canvas already tells most answers."""
    gap = abs(a.x - b.x) if rel in ("left of", "right of") else abs(a.y - b.y)
    return gap >= resolution / 3


def _position_qs(scene: Scene, rng: random.Random, easy: bool = False) -> list[QA]:
    """One "is the A <rel> the B?" question, yes or no with equal odds. easy keeps, for each
    answer, the questions whose objects lie wide apart (_wide) where there are any."""
    pairs = scene.pairs()
    unique = [o for o in scene.objects if pairs[o.pair] == 1]
    yes: list[tuple[Obj, str, Obj]] = []  # (a, rel, b): "is the a <rel> the b?"
    no: list[tuple[Obj, str, Obj]] = []

    for a in unique:
        for b in unique:
            if a is b:
                continue
            rels = relation(a, b, scene.resolution)
            for rel in RELATIONS:
                if rel in rels:
                    yes.append((a, rel, b))
                elif opposite(rel) in rels:  # clearly false; within the margin is not asked
                    no.append((a, rel, b))
    if easy:  # the wide questions, where both answers have some
        wide_yes = [t for t in yes if _wide(*t, scene.resolution)]
        wide_no = [t for t in no if _wide(*t, scene.resolution)]
        if wide_yes and wide_no:
            yes, no = wide_yes, wide_no
    if not yes and not no:
        return []
    answer = "yes" if (rng.random() < 0.5 and yes) or not no else "no"
    a, rel, b = rng.choice(yes if answer == "yes" else no)
    q = f"is the {a.color} {a.shape} {rel} the {b.color} {b.shape}?"
    return [QA(q, answer, "position", (a.pair, b.pair))]


def grounded_description(scene: Scene) -> str:
    """Every object with the 3 x 3 region of its centre, in reading order of the regions:
    "a red circle at the top left and a blue square at the center". Two regions settle a
    position question whenever they differ along its axis (88 % of the world's position
    questions; the rest lie within one row or column of regions)."""

    def reading_order(o: Obj) -> tuple[int, int, int, int]:
        return (*_region_cell(o, scene.resolution), o.y, o.x)

    parts = [
        f"{article(o.color)} {o.color} {o.shape} at the {region(o, scene.resolution)}"
        for o in sorted(scene.objects, key=reading_order)
    ]
    return and_list(parts)


def with_rationale(qa: QA, description: str) -> QA:
    """The same question answered by first describing the image, then giving the answer.

    Why: a yes/no question balanced half yes, half no has no answer that any feature of the
    image alone, or of the question alone, predicts; only their match does, and a model trained
    from scratch sits at chance on it for thousands of steps (docs/LOG.md, "Why yes/no stays at
    chance"). Describing the image first is a skill with first-order signal (captioning), and
    after it the match is between two texts in the context."""
    if qa.qtype not in RATIONALE_QTYPES:
        raise ValueError(f"a description does not settle {qa.qtype} questions: {qa.question!r}")
    return QA(qa.question, f"{description}. {ANSWER_MARK} {qa.answer}", qa.qtype, qa.pairs)


def twin(qa: QA, scene: Scene, rng: random.Random, avoid_heldout: bool = True) -> QA | None:
    """A yes/no question's twin about the same image with the other answer: for "is there a red
    circle?" a pair that is absent (or present), for "is the red circle left of the blue
    square?" the opposite relation between the same two objects. Asked side by side, the two
    share the image and the prior, so only reading the image tells their answers apart. None
    for other question types, or when no twin exists (every pair is present)."""
    if qa.qtype == "exists":
        if qa.answer == "no":
            c, s = rng.choice(sorted(scene.pairs()))
        else:
            absent = _absent_pairs(scene, avoid_heldout)
            if not absent:
                return None
            c, s = rng.choice(absent)
        return QA(f"is there {article(c)} {c} {s}?", "no" if qa.answer == "yes" else "yes",
                  "exists", ((c, s),))  # fmt: skip
    if qa.qtype == "position":
        for rel in RELATIONS:
            if f" {rel} the " in qa.question:
                question = qa.question.replace(f" {rel} the ", f" {opposite(rel)} the ")
                answer = "no" if qa.answer == "yes" else "yes"
                return QA(question, answer, "position", qa.pairs)
    return None


REGIONS: tuple[tuple[str, ...], ...] = (
    ("top left", "top", "top right"),
    ("left", "center", "right"),
    ("bottom left", "bottom", "bottom right"),
)


def _region_cell(o: Obj, resolution: int) -> tuple[int, int]:
    """(row, column) of the 3 x 3 grid cell that holds an object's centre."""
    col, row = (min(2, 3 * v // resolution) for v in (o.x, o.y))
    return row, col


def region(o: Obj, resolution: int) -> str:
    """Where an object's centre lies on a 3 x 3 grid of the image, in words."""
    row, col = _region_cell(o, resolution)
    return REGIONS[row][col]


def where_question(
    scene: Scene, rng: random.Random, avoid_heldout: bool = True, absent: float = 0.25
) -> QA | None:
    """A grounding question, for training: "where is the red circle?" answered with the region
    of its centre, or "nowhere" (with probability `absent`) for a pair not in the scene. Unlike a
    yes/no question, its answer is partly readable from the image alone (a lone object's
    place), so it gives a first gradient to the circuit that finds a named object. Not one of
    QTYPES: the VQA-scene benchmark does not ask it. None when no pair qualifies."""
    pairs = scene.pairs()
    if rng.random() < absent:
        missing = _absent_pairs(scene, avoid_heldout)
        if missing:
            c, s = rng.choice(missing)
            return QA(f"where is the {c} {s}?", "nowhere", "where", ((c, s),))
    unique = [o for o in scene.objects if pairs[o.pair] == 1]
    if avoid_heldout:
        unique = [o for o in unique if o.pair not in HELDOUT_PAIRS]
    if not unique:
        return None
    o = rng.choice(unique)
    answer = region(o, scene.resolution)
    return QA(f"where is the {o.color} {o.shape}?", answer, "where", (o.pair,))


def questions(
    scene: Scene,
    rng: random.Random,
    avoid_heldout: bool = True,
    qtypes: tuple[str, ...] = QTYPES,
    easy_yes_no: bool = False,
) -> list[QA]:
    """At most one question per type (types with no unambiguous question are skipped), shuffled.

    avoid_heldout drops questions whose text or answer names a held-out colour-shape pair.
    easy_yes_no asks the yes/no types in a form one image feature answers (a curriculum's early
    steps): "no" exists questions name a colour the scene lacks (_easy_absent), position
    questions ask about objects wide apart (_wide). Still half yes, half no.
    """
    for t in qtypes:
        if t not in QTYPES:
            raise ValueError(f"unknown question type {t!r}; expected one of {QTYPES}")
    if not scene.objects:
        raise ValueError("cannot ask questions about an empty scene")
    cands = {
        "color": _color_qs(scene),
        "shape": _shape_qs(scene),
        "count": _count_qs(scene, rng),
        "exists": _exists_qs(scene, rng, avoid_heldout, easy_yes_no),
        "position": _position_qs(scene, rng, easy_yes_no),
    }
    out: list[QA] = []
    for t in qtypes:
        pool = cands[t]
        if avoid_heldout:
            pool = [q for q in pool if not any(p in HELDOUT_PAIRS for p in q.pairs)]
        if pool:
            out.append(rng.choice(pool))
    rng.shuffle(out)
    return out


def answer_question(question: str, scene: Scene) -> str | None:
    """The truth for a question in this module's phrasing, computed afresh from the scene.

    Used by tests and by evaluation as an independent check of the generator above; None when
    the question is not in the grammar or its referent is not unique.
    """
    q = question.strip().lower()
    objs = scene.objects
    w = q.rstrip("?").split()
    if q.startswith("what color is the "):
        m = [o for o in objs if o.shape == w[-1]]
        return m[0].color if len(m) == 1 else None
    if q.startswith("what shape is the "):
        m = [o for o in objs if o.color == w[-2]]
        return m[0].shape if len(m) == 1 else None
    if q.startswith("how many "):
        noun = w[-3]
        shape = noun[:-1]
        color = w[2] if len(w) == 6 else None
        n = sum(o.shape == shape and (color is None or o.color == color) for o in objs)
        return NUMBER_WORDS[n]
    if q.startswith("is there "):
        c, s = w[-2], w[-1]
        return "yes" if any(o.pair == (c, s) for o in objs) else "no"
    if q.startswith("is the "):
        body = " ".join(w[2:])
        for rel in RELATIONS:
            left, sep, right = body.partition(f" {rel} the ")
            if sep:
                (ca, sa), (cb, sb) = left.split(), right.split()
                ma = [o for o in objs if o.pair == (ca, sa)]
                mb = [o for o in objs if o.pair == (cb, sb)]
                if len(ma) != 1 or len(mb) != 1:
                    return None
                rels = relation(ma[0], mb[0], scene.resolution)
                if rel in rels:
                    return "yes"
                return "no" if opposite(rel) in rels else None
    return None
