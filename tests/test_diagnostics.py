"""Evaluation diagnostics: failure classes, the tokenizer ceiling, the object/background split of
the image-token loss and the seed spread, on hand-made cases and tiny random models."""

from __future__ import annotations

import json
import math
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


# ----------------------------------------------------------------------------- image-token loss


def t2i_samples(n: int):
    from unimm.evaluate.understanding import eval_samples

    return eval_samples("t2i", "eval", n, seed=0)


def corner_samples(n: int):
    """A red 8 px block in the top-left patch only: one object token per image."""
    from unimm.data.sample import Image, Sample, Text

    img = np.full((64, 64, 3), 255, np.uint8)
    img[:8, :8] = (220, 40, 40)
    return [Sample([Text("a red square"), Image(img)], (1,), "t2i") for _ in range(n)]


def test_object_patches_of_a_hand_made_image():
    from unimm.evaluate.token_loss import object_patches

    img = np.full((2, 16, 16, 3), 255, np.uint8)
    img[0, 3, 12] = (0, 0, 0)  # patch (0, 1)
    img[0, 15, 8] = (254, 255, 255)  # patch (1, 1): any non-white pixel counts
    img[1, 8:, :8] = (40, 170, 60)  # patch (1, 0)
    assert object_patches(img, (2, 2)).tolist() == [
        [False, True, False, True],
        [False, False, True, False],
    ]


def test_token_loss_splits_object_and_background_tokens(monkeypatch):
    """A stub that predicts only each image's first token right: that token is the one object
    token of corner_samples, so objects score 1.0 and background 0.0."""
    from tests.train_helpers import tiny_model
    from unimm.evaluate.token_loss import image_token_scores

    model = tiny_model().eval()
    V = model.config.vocab_size

    def first_code_right(inputs, targets):  # (B, L) -> (B, L, V)
        is_code = targets >= model.image_offset
        first = (is_code & (is_code.long().cumsum(1) == 1)).float()
        logits = torch.zeros(*targets.shape, V)
        return logits.scatter(-1, targets[..., None], 10.0 * first[..., None])

    monkeypatch.setattr(model, "train_logits", first_code_right)
    res = image_token_scores(model, corner_samples(5), batch_size=2)
    obj, bg = res["object"], res["background"]
    assert (obj["tokens"], bg["tokens"], res["all"]["tokens"]) == (5, 5 * 63, 5 * 64)
    assert (obj["accuracy"], bg["accuracy"]) == (1.0, 0.0)
    assert obj["loss"] == pytest.approx(math.log(math.exp(10) + V - 1) - 10, abs=1e-4)
    assert bg["loss"] == pytest.approx(math.log(V), abs=1e-4)


@pytest.mark.parametrize("recipe", ["chameleon", "janus"])
def test_next_token_split_adds_up_to_the_training_loss(recipe):
    from unimm.evaluate.token_loss import image_token_loss, image_token_scores, object_patches

    if recipe == "chameleon":
        from tests.train_helpers import tiny_model

        model = tiny_model().eval()
    else:
        from tests.test_janus import make_model

        model = make_model()
    samples = t2i_samples(6)
    res = image_token_scores(model, samples, batch_size=4)
    pixels = np.stack([s.segments[1].pixels for s in samples])
    n_obj = int(object_patches(pixels, model.image_tok.grid).sum())
    assert res["object"]["tokens"] == n_obj and res["background"]["tokens"] == 6 * 64 - n_obj
    # the mean over both groups is the training objective's image loss (no condition dropout)
    with torch.no_grad():
        want = float(model.loss(samples)["loss_image"])
    assert res["all"]["loss"] == pytest.approx(want, rel=1e-5)
    o, b = res["object"], res["background"]
    mixed = (o["loss"] * o["tokens"] + b["loss"] * b["tokens"]) / (o["tokens"] + b["tokens"])
    assert mixed == pytest.approx(want, rel=1e-5)
    full = image_token_loss(model, n=3)
    assert full["applicable"] and full["objective"] == "next token" and full["n_samples"] == 3


@pytest.mark.parametrize("recipe", ["showo", "mmada"])
def test_masked_recipes_score_a_fixed_half_of_each_image(recipe, monkeypatch):
    from tests.test_discrete_diffusion_recipes import make
    from unimm.evaluate.token_loss import image_token_loss, image_token_scores

    model = make(recipe)
    res = image_token_loss(model, n=5)
    assert res["applicable"] and res["objective"].startswith("masked tokens")
    assert res["all"]["tokens"] == 5 * 32
    assert res["object"]["tokens"] + res["background"]["tokens"] == 5 * 32
    assert image_token_loss(model, n=5) == res  # the same masked slots every time
    # corner_samples have one object token; it is masked in some rows only
    seen = image_token_scores(model, corner_samples(16))
    assert 0 < seen["object"]["tokens"] < 16 and seen["all"]["tokens"] == 16 * 32


def test_continuous_recipes_record_not_applicable():
    from tests.test_transfusion import make_model
    from unimm.evaluate.token_loss import image_token_loss, image_token_scores

    res = image_token_loss(make_model(), n=2)
    assert (
        res
        == {
            "benchmark": "image_token_loss",
            "applicable": False,
            "reason": res["reason"],
        }
        and "continuous" in res["reason"]
    )
    with pytest.raises(ValueError, match="no per-token"):
        image_token_scores(make_model(), t2i_samples(1))


# ----------------------------------------------------------------------------- report


def test_evaluate_run_reports_the_diagnostics(tmp_path):
    from tests.train_helpers import tiny_model
    from unimm.pipeline import evaluate_run

    model = tiny_model().eval()
    kw = dict(per_task=2, images_per_prompt=1, questions=2, captions=2, edits=0, episodes=0)
    res = evaluate_run(model, tmp_path / "a", progress=False, **kw)
    saved = json.loads((tmp_path / "a" / "metrics.json").read_text())
    for split, n_tasks in (("in", 6), ("heldout", 3)):
        ceil = saved[f"ceiling_{split}"]
        assert ceil["n_images"] == 2 * n_tasks and set(ceil["failures"]) == set(ceil["tasks"])
        assert set(saved[f"geneval_{split}"]["failures"]) == set(ceil["tasks"])
    assert saved["image_token_loss"]["applicable"] and saved["image_token_loss"]["n_samples"] == 64
    report = (tmp_path / "a" / "report.md").read_text()
    assert "## Diagnostics" in report
    g, c = res["geneval_in"]["overall"], res["ceiling_in"]["overall"]
    clean = res["ceiling_in"]["clean"]["overall"]
    assert f"| in | **overall** | {g:.3f} | {c:.3f} | {clean:.3f} |" in report
    assert "| task | wrong | blank | wrong count |" in report
    loss = res["image_token_loss"]["object"]
    assert f"| object | {loss['loss']:.3f} | {loss['accuracy']:.3f} | {loss['tokens']} |" in report
    assert (tmp_path / "a" / "ceiling_in_failures.png").exists()  # the untrained VQ fails all

    evaluate_run(model, tmp_path / "b", progress=False, diagnostics=False, **kw)
    saved = json.loads((tmp_path / "b" / "metrics.json").read_text())
    assert not {"ceiling_in", "ceiling_heldout", "image_token_loss"} & set(saved)
    assert "failures" in saved["geneval_in"]  # recorded with the images, at no cost


# ----------------------------------------------------------------------------- seed spread


def fake_run(path, seed: int, geneval: float, vqa: float, lr: float = 1e-3):
    """A run directory with metrics.json and a checkpoint config of that train.seed."""
    (path / "checkpoint").mkdir(parents=True)
    config = {"recipe": "chameleon", "train": {"seed": seed, "lr": lr}}
    (path / "checkpoint" / "config.json").write_text(json.dumps({"config": config}))
    metrics = {
        "geneval_in": {"overall": geneval, "tasks": {}},
        "geneval_heldout": {"overall": geneval / 2},
        "vqa_eval": {"overall": vqa},
        "caption_eval": {"overall": 0.5},
        "eval_seconds": 3.0,
    }
    (path / "metrics.json").write_text(json.dumps(metrics))
    return path


def test_seed_spread_of_hand_made_runs(tmp_path, capsys):
    from unimm.cli import main
    from unimm.evaluate.spread import seed_spread

    runs = [
        fake_run(tmp_path / f"s{s}", s, g, v)
        for s, g, v in ((0, 0.2, 0.6), (1, 0.3, 0.7), (2, 0.4, 0.8))
    ]
    spread = seed_spread([json.loads((r / "metrics.json").read_text()) for r in runs])
    assert set(spread) == {"geneval_in", "geneval_heldout", "vqa_eval", "caption_eval"}
    assert spread["geneval_in"]["mean"] == pytest.approx(0.3)
    assert spread["geneval_in"]["std"] == pytest.approx(0.1)  # sample std (n - 1)
    assert spread["caption_eval"]["std"] == 0.0
    assert math.isnan(seed_spread([{"vqa_eval": {"overall": 0.5}}])["vqa_eval"]["std"])

    out = tmp_path / "spread.md"
    assert main(["eval-spread", *map(str, runs), "--out", str(out)]) == 0
    table = capsys.readouterr().out
    assert "| metric | mean ± std | seed 0 | seed 1 | seed 2 |" in table
    assert "| GenEval-scene in-distribution | 0.300 ± 0.100 | 0.200 | 0.300 | 0.400 |" in table
    assert "| VQA-scene | 0.700 ± 0.100 |" in table and "held-out | " in table
    assert "Warning" not in table and out.read_text() == table

    other = fake_run(tmp_path / "lr", 3, 0.5, 0.5, lr=3e-3)  # not seed noise: warned about
    assert main(["eval-spread", str(runs[0]), str(other / "metrics.json"), str(other)]) == 0
    table = capsys.readouterr().out
    assert "| metric | mean ± std | seed 0 | run 2 | seed 3 |" in table
    assert "configs differ besides train.seed: train.lr" in table
    assert main(["eval-spread", str(tmp_path / "missing")]) == 2
    assert "no metrics.json" in capsys.readouterr().err
