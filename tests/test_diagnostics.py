"""Evaluation diagnostics: failure classes, the tokenizer ceiling, the object/background split of
the image-token loss and the seed spread, on hand-made cases and tiny random models."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch

from unimm.evaluate import geneval_scene
from unimm.evaluate.taxonomy import FAILURES, classify_failure, failure_table
from unimm.world.geneval import check, geneval_prompts, oracle_scene, prompt_from_text
from unimm.world.render import render
from unimm.world.scene import Obj, Scene, sample_scene

# ----------------------------------------------------------------------------- failure classes


def scene(*objs: tuple[str, str, int, int]) -> Scene:
    """Objects as (color, shape, x, y), all 12 px."""
    return Scene(tuple(Obj(s, c, x, y, 12) for c, s, x, y in objs))


@pytest.mark.parametrize(
    "prompt, objs, want",
    [
        ("a circle", [], "blank"),
        ("a circle", [("red", "square", 20, 20)], "wrong_shape"),
        ("a circle", [("red", "circle", 20, 20), ("red", "circle", 44, 44)], "extra_objects"),
        ("a circle", [("red", "circle", 20, 20), ("blue", "square", 44, 44)], None),
        ("a circle and a square", [("red", "circle", 20, 20)], "wrong_count"),
        (
            "a circle and a square",
            [("red", "circle", 20, 20), ("red", "triangle", 44, 44)],
            "wrong_shape",
        ),
        (
            "three triangles",
            [("red", "triangle", 10, 10), ("red", "triangle", 30, 10)],
            "wrong_count",
        ),
        (
            "two triangles",
            [("red", "triangle", 10, 10), ("red", "triangle", 30, 10), ("red", "triangle", 50, 10)],
            "wrong_count",
        ),
        ("two triangles", [("red", "square", 10, 10), ("red", "square", 30, 10)], "wrong_shape"),
        ("a blue square", [("red", "square", 20, 20)], "wrong_colour"),
        ("a blue square", [("blue", "square", 20, 20), ("red", "square", 44, 44)], "extra_objects"),
        (
            "a red circle and a blue square",
            [("blue", "circle", 20, 20), ("red", "square", 44, 44)],
            "wrong_colour",
        ),
        (
            "a red circle left of a blue square",
            [("red", "circle", 44, 20), ("blue", "square", 16, 20)],
            "wrong_relation",
        ),
        (
            "a red circle left of a blue square",
            [("red", "circle", 16, 20), ("blue", "square", 44, 20)],
            None,
        ),
    ],
)
def test_failure_class_of_hand_made_scenes(prompt, objs, want):
    assert classify_failure(prompt_from_text(prompt), scene(*objs)) == want


def test_every_wrong_image_gets_exactly_one_class():
    rng = random.Random(0)
    prompts = geneval_prompts("in", 20) + geneval_prompts("heldout", 20)
    seen = set()
    for i in range(1500):
        p = prompts[i % len(prompts)]
        if i % 3 == 0:
            s = oracle_scene(p, rng)
        elif i % 7 == 1:
            s = Scene(())
        else:
            s = sample_scene(rng, 64, 1, 4, "any")
        f = classify_failure(p, s)
        assert (f is None) == check(p, s)
        assert f is None or f in FAILURES
        seen.add(f)
    assert seen >= {None, "blank", "wrong_count", "wrong_shape", "wrong_colour"}


def test_geneval_records_failures_and_tables_them():
    def one_square(prompts, n, seed):  # a red square for every prompt
        return [[render(scene(("red", "square", 30, 30)))] * n for _ in prompts]

    res = geneval_scene(one_square, "in", per_task=3, images_per_prompt=2, progress=False)
    table = res["failures"]
    assert set(table) == set(res["tasks"])
    for task, row in table.items():
        assert row["images"] == 6 and sum(row["counts"].values()) == row["wrong"]
        assert row["wrong"] / row["images"] == pytest.approx(1 - res["tasks"][task])
        flat = [f for r in res["records"] if r["task"] == task for f in r["failure"]]
        assert [f is None for f in flat] == [c for r in res["records"] if r["task"] == task
                                             for c in r["correct"]]  # fmt: skip
    # "three circles" gets one square: too few objects, a count failure
    assert table["counting"]["counts"]["wrong_count"] == 6
    # the hand-made table
    recs = [
        {"task": "colors", "failure": [None, "wrong_colour"]},
        {"task": "colors", "failure": ["blank", "wrong_colour"]},
    ]
    row = failure_table(recs)["colors"]
    assert (row["images"], row["wrong"]) == (4, 3)
    assert row["counts"] == {**dict.fromkeys(FAILURES, 0), "wrong_colour": 2, "blank": 1}


# ----------------------------------------------------------------------------- tokenizer ceiling


def test_ceiling_of_a_perfect_tokenizer_is_the_clean_score():
    from unimm.evaluate.ceiling import tokenizer_ceiling

    calls = []

    def identity(images):
        calls.append(len(images))
        return images.copy()

    for split in ("in", "heldout"):
        res = tokenizer_ceiling(identity, split, per_task=8, images_per_prompt=2, batch_size=40)
        assert res["tasks"] == res["clean"]["tasks"] and res["overall"] == res["clean"]["overall"]
        assert res["overall"] > 0.95  # the detector's own error on clean renders only
        assert res["n_images"] == 16 * len(res["tasks"])
    assert calls == [40, 40, 16, 40, 8]  # batched: 96 images, then 48


def test_ceiling_of_a_blank_tokenizer_is_zero_and_every_failure_blank():
    from unimm.evaluate.ceiling import tokenizer_ceiling

    res = tokenizer_ceiling(lambda ims: np.full_like(ims, 255), "in", per_task=4)
    assert res["overall"] == 0.0 and res["clean"]["overall"] > 0.95
    for row in res["failures"].values():
        assert row["counts"]["blank"] == row["wrong"] == row["images"] == 4
    shown = [r for r in res["records"] if "images" in r]
    assert len(shown) == 8 and all(np.all(r["images"][1] == 255) for r in shown)


def test_ceiling_goes_through_any_image_tokenizer():
    from unimm.evaluate.ceiling import tokenizer_ceiling, tokenizer_roundtrip
    from unimm.tokenizers.pixel_patches import PatchConfig, PixelPatches
    from unimm.tokenizers.vq import VQ_PRESETS, VQTokenizer

    # raw pixel patches (a continuous recipe's tokens) reconstruct exactly: the clean score
    patches = PixelPatches(PatchConfig(patch=8, shift=0.5, scale=0.5))
    res = tokenizer_ceiling(tokenizer_roundtrip(patches), "heldout", per_task=4)
    assert res["tasks"] == res["clean"]["tasks"]
    # an untrained VQ decoder starts at a flat white image (VQTokenizer._init_weights)
    torch.manual_seed(0)
    vq = VQTokenizer(VQ_PRESETS["tiny"]()).eval()
    res = tokenizer_ceiling(tokenizer_roundtrip(vq), "heldout", per_task=4)
    assert res["overall"] == 0.0 and res["clean"]["overall"] == 1.0
