"""GenEval-scene prompts and the strict check."""

import random

from unimm.world.detector import detect
from unimm.world.geneval import (
    GENEVAL_TASKS,
    HELDOUT_TASKS,
    check,
    geneval_prompts,
    oracle_scene,
    prompt_from_text,
)
from unimm.world.language import parse_prompt
from unimm.world.palette import HELDOUT_PAIRS
from unimm.world.render import render
from unimm.world.scene import Obj, Scene


def _has_heldout(p):
    return any(c is not None and (c, s) in HELDOUT_PAIRS for c, s, _ in p.spec.groups)


def test_prompts_splits_and_grammar():
    ins = geneval_prompts("in", 50, 0)
    held = geneval_prompts("heldout", 50, 0)
    assert len(ins) == 300 and [p.task for p in ins[::50]] == list(GENEVAL_TASKS)
    assert len(held) == 150 and sorted({p.task for p in held}) == sorted(HELDOUT_TASKS)
    assert not any(_has_heldout(p) for p in ins) and all(_has_heldout(p) for p in held)
    for p in ins + held:
        groups, rel = parse_prompt(p.text)  # prompts are in the caption grammar
        assert tuple(groups) == p.spec.groups and rel == p.spec.relation
    counts = [p.spec.groups[0][2] for p in ins if p.task == "counting"]
    assert set(counts) == {2, 3, 4}
    assert len({p.text for p in ins if p.task == "position"}) == 50  # no repeats when enough exist
    assert geneval_prompts("in", 50, 0) == ins and geneval_prompts("in", 50, 1) != ins


def test_oracle_renders_pass_and_wrong_scenes_fail():
    rng = random.Random(0)
    for p in geneval_prompts("in", 20, 0) + geneval_prompts("heldout", 20, 0):
        good = oracle_scene(p, rng)
        assert check(p, detect(render(good))), p.text
        assert not check(p, Scene(())), p.text
        # one more object of a named shape breaks the exact count
        c, s, _ = p.spec.groups[0]
        extra = Scene((*good.objects, Obj(s, c or "red", 0, 0, 1)))
        assert not check(p, extra), p.text


def test_check_rules():
    p = prompt_from_text("a red circle left of a green triangle")
    a, b = Obj("circle", "red", 10, 30, 12), Obj("triangle", "green", 40, 30, 12)
    assert check(p, Scene((a, b)))
    assert check(p, Scene((a, b, Obj("square", "blue", 30, 55, 10))))  # unnamed shapes allowed
    assert not check(p, Scene((b, Obj("circle", "red", 55, 30, 12))))  # relation wrong
    assert not check(p, Scene((Obj("circle", "blue", 10, 30, 12), b)))  # colour wrong
    assert not check(p, Scene((a, b, Obj("circle", "red", 30, 55, 10))))  # two circles
    three = prompt_from_text("three triangles")
    tri = [Obj("triangle", c, x, 10, 10) for c, x in [("red", 8), ("blue", 30), ("green", 50)]]
    assert check(three, Scene(tuple(tri)))
    assert not check(three, Scene(tuple(tri[:2])))
    two = prompt_from_text("a circle and a square")
    assert check(two, Scene((Obj("circle", "red", 10, 10, 10), Obj("square", "red", 40, 40, 10))))
