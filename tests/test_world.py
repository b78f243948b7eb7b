"""Scenes, rendering, captions, questions, edits: checked against the scene's symbolic truth."""

import random
from collections import Counter

import numpy as np
import pytest

from unimm.world.edits import edit
from unimm.world.language import (
    canonical_caption,
    caption,
    caption_matches,
    parse_caption,
    parse_prompt,
    scene_groups,
)
from unimm.world.palette import BACKGROUND, COLORS, HELDOUT_PAIRS
from unimm.world.qa import QTYPES, answer_question, questions
from unimm.world.render import render, shape_mask
from unimm.world.scene import (
    Obj,
    Scene,
    holds,
    is_valid,
    min_gap,
    place_objects,
    relation,
    sample_scene,
    scenes_match,
    size_range,
)


@pytest.mark.parametrize("res", [32, 64, 128, 256])
def test_sampled_scenes_are_valid(res):
    rng = random.Random(res)
    lo, hi = size_range(res)
    for _ in range(200):
        s = sample_scene(rng, resolution=res)
        assert 1 <= len(s.objects) <= 4 and is_valid(s)
        assert all(lo <= o.size <= hi for o in s.objects)
        assert not s.has_heldout()
    assert size_range(64) == (10, 18) and min_gap(64) == 2


def test_heldout_modes():
    rng = random.Random(0)
    assert all(sample_scene(rng, heldout="only").has_heldout() for _ in range(200))
    seen = Counter(o.pair for _ in range(500) for o in sample_scene(rng, heldout="any").objects)
    assert all(p in seen for p in HELDOUT_PAIRS)
    with pytest.raises(ValueError, match="heldout"):
        sample_scene(rng, heldout="sometimes")


def test_render_exact_colours_and_masks():
    s = Scene((Obj("square", "red", 10, 10, 12), Obj("triangle", "blue", 40, 40, 15)))
    img = render(s)
    assert img.shape == (64, 64, 3) and img.dtype == np.uint8
    colours = {tuple(c) for c in img.reshape(-1, 3)}
    assert colours == {BACKGROUND, COLORS["red"], COLORS["blue"]}  # no anti-aliasing
    assert (img[4:16, 4:16] == COLORS["red"]).all()
    tri = shape_mask("triangle", 15)
    assert tri[-1].all() and tri[0].sum() == 1  # apex up, full base
    assert tri[:, 0].any() and tri[:, -1].any() and tri[0].any()  # touches its whole box
    dia = shape_mask("diamond", 15)
    assert dia[7].all() and dia[0].sum() == 1 and dia[:, 7].all()
    circ = shape_mask("circle", 15)
    assert circ[7].all() and not circ[0, 0] and 0.7 < circ.mean() < 0.85


def test_relations_use_the_margin():
    a = Obj("circle", "red", 20, 30, 10)
    assert relation(a, Obj("square", "blue", 26, 30, 10)) == {"left of"}
    assert relation(a, Obj("square", "blue", 25, 30, 10)) == set()  # within the 6 px margin
    assert relation(a, Obj("square", "blue", 20, 50, 10)) == {"above"}
    assert holds(Obj("square", "blue", 20, 50, 10), "below", a)


def test_place_objects_realises_specs_and_relation():
    rng = random.Random(1)
    for _ in range(50):
        s = place_objects(rng, [("red", "circle"), ("green", "triangle")], relation=(0, "above", 1))
        assert is_valid(s) and holds(s.objects[0], "above", s.objects[1])
        assert [o.pair for o in s.objects] == [("red", "circle"), ("green", "triangle")]
    with pytest.raises(ValueError, match="could not place"):
        place_objects(rng, [("red", "square")] * 40, max_tries=3)


def test_canonical_caption_parses_back():
    rng = random.Random(2)
    for _ in range(500):
        s = sample_scene(rng, heldout="any")
        text = canonical_caption(s)
        assert caption_matches(text, s)
        assert text == canonical_caption(Scene(tuple(reversed(s.objects))))
    s = Scene(
        (
            Obj("triangle", "green", 10, 10, 10),
            Obj("triangle", "green", 40, 10, 10),
            Obj("diamond", "orange", 30, 40, 12),
        )
    )
    assert canonical_caption(s) == "two green triangles and an orange diamond"
    assert parse_caption("Two green triangles and an orange diamond.") == [
        ("green", "triangle", 2),
        ("orange", "diamond", 1),
    ]


def test_random_captions_mention_every_object():
    rng = random.Random(3)
    kinds = Counter()
    for _ in range(1000):
        s = sample_scene(rng)
        text = caption(s, rng)
        parsed = parse_prompt(text)
        assert parsed is not None, text
        groups, rel = parsed
        kinds["relation" if rel else "list"] += 1
        kinds["colourless"] += any(c is None for c, _, _ in groups)
        shape_counts = Counter()
        for c, sh, n in groups:
            shape_counts[sh] += n
            if c is not None:  # a coloured group counts exactly the objects of that pair
                assert sum(o.pair == (c, sh) for o in s.objects) == n, text
        assert shape_counts == Counter(o.shape for o in s.objects), text
        if rel:
            a, b = (
                next(o for o in s.objects if o.shape == g[1] and (g[0] is None or o.color == g[0]))
                for g in groups
            )
            assert holds(a, rel[1], b), text
        assert not any(f"{c} {sh}" in text for c, sh in HELDOUT_PAIRS)
    assert kinds["relation"] > 50 and kinds["colourless"] > 200 and kinds["list"] > 500


def test_parse_rejects_bad_text():
    for bad in [
        "",
        "a circles",
        "two circle",
        "a pink circle",
        "circle",
        "a red circle near a square",
        "three",
    ]:
        assert parse_caption(bad) is None, bad
    assert not caption_matches(
        "two circles", Scene((Obj("circle", "red", 10, 10, 10), Obj("circle", "red", 40, 40, 10)))
    )


def test_questions_are_correct_and_unambiguous():
    rng = random.Random(4)
    seen = Counter()
    for _ in range(800):
        s = sample_scene(rng)
        for qa in questions(s, rng):
            seen[(qa.qtype, qa.answer)] += 1
            assert answer_question(qa.question, s) == qa.answer, (qa, s)
            assert not any(p in HELDOUT_PAIRS for p in qa.pairs)
    assert {t for t, _ in seen} == set(QTYPES)
    for t in ("exists", "position"):  # answer balance
        assert seen[(t, "yes")] > 0.3 * (seen[(t, "yes")] + seen[(t, "no")])
    assert seen[("count", "zero")] > 0 and seen[("count", "two")] > 0


def test_ambiguous_referents_are_not_asked():
    s = Scene((Obj("circle", "red", 10, 10, 10), Obj("circle", "blue", 40, 40, 10)))
    rng = random.Random(0)
    for _ in range(50):
        for qa in questions(s, rng):
            assert qa.question != "what color is the circle?"


def test_edits_change_exactly_one_thing():
    rng = random.Random(5)
    kinds = Counter()
    infeasible = 0
    for _ in range(600):
        s = sample_scene(rng)
        try:
            e = edit(s, rng)
        except ValueError:  # e.g. four objects, none nameable uniquely
            infeasible += 1
            continue
        kinds[e.kind] += 1
        t = e.target
        assert is_valid(t) and not t.has_heldout()
        src, tgt = list(s.objects), list(t.objects)
        if e.kind == "add":
            assert tgt[:-1] == src and len(tgt) == len(src) + 1
            assert e.instruction.endswith(f"{tgt[-1].color} {tgt[-1].shape}")
        elif e.kind == "remove":
            assert tgt == src[: e.index] + src[e.index + 1 :]
        else:
            diffs = [i for i, (a, b) in enumerate(zip(src, tgt, strict=True)) if a != b]
            assert diffs == [e.index] and len(src) == len(tgt)
            a, b = src[e.index], tgt[e.index]
            if e.kind == "recolor":
                assert a.color != b.color and (a.shape, a.x, a.y, a.size) == (
                    b.shape,
                    b.x,
                    b.y,
                    b.size,
                )
                assert e.instruction.endswith(b.color)
            else:
                assert a.color == b.color and (a.x, a.y) != (b.x, b.y)
                direction = e.instruction.split(a.shape, 1)[1].strip()
                want = {
                    "to the left": b.x < a.x,
                    "to the right": b.x > a.x,
                    "up": b.y < a.y,
                    "down": b.y > a.y,
                }
                assert want[direction], e.instruction
    assert set(kinds) == {"recolor", "add", "remove", "move"} and infeasible < 10


def test_scenes_match_tolerance():
    a = Scene((Obj("circle", "red", 10, 10, 10), Obj("circle", "red", 40, 40, 10)))
    b = Scene((Obj("circle", "red", 42, 38, 11), Obj("circle", "red", 12, 9, 10)))
    assert scenes_match(a, b, pos_tol=4) and not scenes_match(a, b, pos_tol=1)
    assert not scenes_match(a, Scene(a.objects[:1]))
    assert scene_groups(a) == [("red", "circle", 2)]
