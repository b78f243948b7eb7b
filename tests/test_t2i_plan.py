"""train.t2i_plan: text-to-image samples write the scene's layout before the image, and a model
trained so writes its own layout before each image it draws."""

from __future__ import annotations

import json
import random
from dataclasses import replace

import numpy as np
import pytest
import torch

from tests.test_chameleon_loss_options import make_model
from unimm.data import streams
from unimm.data.readers import BadSamples
from unimm.data.sample import Image, Text
from unimm.evaluate.layouts import layout_fidelity, parse_layout, placed
from unimm.evaluate.relation_use import relation_use
from unimm.evaluate.report import write_report
from unimm.evaluate.token_loss import image_token_loss, image_token_scores
from unimm.evaluate.understanding import eval_samples
from unimm.pipeline import generate_with_layouts
from unimm.presets import get_run_config
from unimm.recipes.base import SamplingConfig
from unimm.recipes.registry import recipe_class
from unimm.train.run_data import RunData
from unimm.world.geneval import GENEVAL_TASKS, check, geneval_prompts, oracle_scene
from unimm.world.qa import grounded_description
from unimm.world.render import render
from unimm.world.scene import sample_scene
from unimm.world.tasks import make_sample, with_layout

PROMPTS = [[Text("a red circle left of a blue square")], [Text("two green triangles")]]


def plan_model(plan: bool = True, **train):
    model = make_model()
    cfg = model.parts.config
    train_cfg = replace(cfg.train, t2i_plan=plan, **train)
    model.parts = replace(model.parts, config=replace(cfg, train=train_cfg))
    return model


def test_a_planned_sample_is_the_same_scene_and_caption_with_its_layout():
    for i in range(40):
        plain_rng, plan_rng = random.Random(i), random.Random(i)
        plain = make_sample("t2i", plain_rng)
        planned = make_sample("t2i", plan_rng, plan=True)
        caption, layout, image = planned.segments
        assert planned.targets == (1, 2)  # the layout and the image are both produced
        assert caption == plain.segments[0]
        assert np.array_equal(image.pixels, plain.segments[1].pixels)
        assert layout.text == grounded_description(plain.meta["scene"])
        assert plain_rng.random() == plan_rng.random()  # no draw of its own: same data stream
        assert with_layout(plain).segments[1] == layout


def test_the_unconditional_row_loses_caption_and_layout():
    model = plan_model(cfg_dropout=0.999)
    planned = make_sample("t2i", random.Random(0), plan=True)
    (seq,) = model.build([planned], random.Random(0))  # first draw 0.84 < 0.999: dropped
    tok = model.text_tok
    codes = model.image_ids([planned])[0]
    assert seq.ids == [tok.bos_id, tok.boi_id, *codes, tok.eoi_id]
    kept = model.build([planned], None)[0]  # no rng: no dropout, the layout is a target
    n_layout = len(tok.encode(planned.segments[1].text))
    assert sum(seq.loss_mask) == len(codes) + 1
    assert sum(kept.loss_mask) == n_layout + 1 + len(codes) + 1  # layout + <eos>, codes + <eoi>


def test_drawing_after_its_own_layout_is_drawing_on_that_prompt():
    model = plan_model()
    sampling = SamplingConfig(cfg_scale=3.0)
    codes = model.generate_image_codes(PROMPTS, sampling, seed=[3, 4])
    with_layouts = model.with_layouts(PROMPTS, sampling, [3, 4])
    for prompt, planned in zip(PROMPTS, with_layouts, strict=True):
        assert planned[:-1] == prompt and planned[-1].role == "assistant"
    plain = plan_model(plan=False)
    plain.load_state_dict(model.state_dict())
    assert torch.equal(codes, plain.generate_image_codes(with_layouts, sampling, seed=[3, 4]))


def test_planned_generation_batched_equals_single():
    model = plan_model()
    both = model.generate_image_codes(PROMPTS, seed=[5, 6])
    for k, seed in enumerate((5, 6)):
        assert torch.equal(both[k], model.generate_image_codes([PROMPTS[k]], seed=[seed])[0])


def test_prompts_with_images_or_a_written_layout_are_kept():
    model = plan_model()
    source = Image(np.zeros((64, 64, 3), dtype=np.uint8))
    mine = [Text("a red circle"), Text("a red circle at the top left", role="assistant")]
    prompts = [[source, Text("make it blue")], mine]
    assert model.with_layouts(prompts, SamplingConfig(), 0) == prompts
    # a model that plans its edits writes a layout after the instruction, and only there
    editor = plan_model(plan=False, edit_plan=True)
    edited, kept = editor.with_layouts([*prompts, [Text("a red circle")]], SamplingConfig(), 0)[::2]
    assert edited[:2] == prompts[0] and edited[2].role == "assistant"
    assert kept == [Text("a red circle")]


def test_edit_layouts_go_before_the_images_drawn_from_an_instruction():
    for i in range(20):
        for task in ("edit", "interleaved"):
            plain = make_sample(task, random.Random(i))
            both = make_sample(task, random.Random(i), plan=True, edit_plan=True)
            edits = make_sample(task, random.Random(i), edit_plan=True)
            target = both.meta["target_scene"]
            for planned in (both, edits):
                back = planned.without_layouts()
                assert back.targets == plain.targets and back.meta == plain.meta
                assert [type(s) for s in back.segments] == [type(s) for s in plain.segments]
                for k in planned.meta["layouts"]:
                    assert k in planned.targets and isinstance(planned.segments[k + 1], Image)
                (last,) = [k for k in planned.meta["layouts"] if k > 1]
                assert planned.segments[last].text == grounded_description(target)
            if task == "interleaved":  # the first image, drawn from the caption, too
                assert both.segments[1].text == grounded_description(both.meta["scene"])
                assert len(both.meta["layouts"]) == 2 and len(edits.meta["layouts"]) == 1


def test_an_edit_without_its_condition_loses_its_layout_too():
    model = plan_model(plan=False, edit_plan=True, cfg_dropout=0.999)
    planned = make_sample("edit", random.Random(3), edit_plan=True)
    plain = make_sample("edit", random.Random(3))
    dropped = model.build([planned], random.Random(0))[0]
    assert dropped.ids == model.build([plain], random.Random(0))[0].ids


def test_a_layout_fits_what_the_image_leaves():
    model = plan_model()
    (planned,) = model.with_layouts([PROMPTS[0]], SamplingConfig(), 0)
    ids = model._prompt_ids(planned, "image")
    assert len(ids) + model.image_tokens <= model.parts.config.model.max_seq_len
    long = [Text(" ".join(["red circle"] * 100))]
    with pytest.raises(ValueError, match="no room for a layout"):
        model.with_layouts([long], SamplingConfig(), 0)


def test_refused_by_recipes_that_do_not_write_it():
    cfg = get_run_config("tiny", ["train.t2i_plan=true"])
    recipe_class("chameleon").check_config(cfg)
    for recipe in ("showo", "janus", "transfusion"):
        with pytest.raises(ValueError, match="t2i_plan"):
            recipe_class(recipe).check_config(replace(cfg, recipe=recipe))
    edits = get_run_config("tiny", ["train.edit_plan=true"])
    recipe_class("chameleon").check_config(edits)
    with pytest.raises(ValueError, match="edit_plan"):
        recipe_class("showo").check_config(replace(edits, recipe="showo"))


def test_the_text_tokenizer_corpus_holds_layouts_only_when_trained_on():
    def corpus(overrides):
        data = RunData(get_run_config("tiny", overrides), BadSamples())
        return streams.texts({"world": 1.0}, 300, 0, 64, world=data.text_options())

    plain = corpus([])
    assert plain == streams.texts({"world": 1.0}, 300, 0, 64)  # defaults: the corpus as before
    assert not any(" at the " in t for t in plain)
    assert any(" at the top left" in t for t in corpus(["train.t2i_plan=true"]))


def test_diagnostics_score_a_planning_model_as_it_trained():
    model = plan_model()
    res = image_token_loss(model, n=4, seed=0, batch_size=4)
    planned = [with_layout(s) for s in eval_samples("t2i", "eval", 4, 0)]
    assert res["object"] == image_token_scores(model, planned, 0, 4)["object"]
    assert relation_use(model)["applicable"] is False


class PerfectPlanner:
    """Writes, for each prompt, a layout that satisfies it with every object in a region of its
    own, and draws exactly that layout: every share of layout_fidelity must be 1."""

    plans = True
    image_resolution = 64

    def with_layouts(self, prompts, sampling, seed):
        return [[*p, Text(self.layout(p[0].text), role="assistant")] for p in prompts]

    def layout(self, text):
        prompt = next(p for p in geneval_prompts("in", 50, 0) if p.text == text)
        for k in range(1000):
            scene = oracle_scene(prompt, random.Random(k))
            words = grounded_description(scene)
            if max(placed(scene).values()) == 1 and check(prompt, parse_layout(words, 64)):
                return words
        raise AssertionError(f"no layout found for {text!r}")

    def generate(self, prompts, modality, sampling, seed):
        return [Image(render(parse_layout(p[-1].text, 64))) for p in prompts]


def test_a_perfect_planner_and_drawer_scores_one_everywhere():
    res = layout_fidelity(PerfectPlanner(), per_task=3)
    assert res["applicable"] and res["overall"] == {k: 1.0 for k in res["overall"]}
    assert set(res["tasks"]) == set(GENEVAL_TASKS)


def test_layouts_read_back_as_the_scene_they_describe():
    rng = random.Random(0)
    for _ in range(50):
        scene = sample_scene(rng, 64, 1, 4, "exclude")
        assert placed(parse_layout(grounded_description(scene), 64)) == placed(scene)
    assert parse_layout("a red circle at the middle", 64) is None
    assert parse_layout("a red blob at the top", 64) is None
    assert layout_fidelity(plan_model(plan=False))["applicable"] is False


def test_generate_shows_the_layouts_of_the_images_generate_images_draws():
    model, sampling = plan_model(), SamplingConfig(cfg_scale=3.0)
    layouts, images = generate_with_layouts(model, "a red circle", 2, 7, sampling)
    assert len(layouts) == 2 and all(isinstance(t, str) for t in layouts)
    for got, want in zip(images, model.generate_images(["a red circle"], 2, 7, sampling)[0]):
        assert np.array_equal(got, want)
    mine = "a red circle at the top left"
    layouts, _ = generate_with_layouts(model, "a red circle", 2, 7, sampling, layout=mine)
    assert layouts == [mine, mine]
    with pytest.raises(ValueError, match="train.t2i_plan"):
        generate_with_layouts(plan_model(plan=False), "a red circle", 1, 0, sampling, mine)
    with pytest.raises(ValueError, match="empty --layout"):
        generate_with_layouts(model, "a red circle", 1, 0, sampling, " ")


def test_layout_temperature_zero_writes_the_likeliest_layout_whatever_the_seed():
    model = plan_model()
    greedy = SamplingConfig(layout_temperature=0.0)
    assert model.with_layouts(PROMPTS, greedy, 1) == model.with_layouts(PROMPTS, greedy, 2)
    sampled = SamplingConfig()
    assert model.with_layouts(PROMPTS, sampled, 1) != model.with_layouts(PROMPTS, sampled, 2)


def test_the_report_shows_layout_fidelity(tmp_path):
    res = layout_fidelity(PerfectPlanner(), per_task=1)
    path = write_report(tmp_path, {"layout_fidelity": res, "speed": 2.0})
    text = path.read_text()
    assert "Layout fidelity" in text and "| overall | 1.00 | 1.00 | 1.00 | 1.00 |" in text
    assert json.loads((tmp_path / "metrics.json").read_text())["layout_fidelity"]["applicable"]


def test_the_reference_plans_for_chameleon_only_unless_asked():
    assert get_run_config("reference").train.t2i_plan
    assert not get_run_config("small").train.t2i_plan
    showo = get_run_config("reference", ["recipe=showo"])
    assert not showo.train.t2i_plan
    recipe_class("showo").check_config(showo)
    asked = get_run_config("reference", ["recipe=showo", "train.t2i_plan=true"])
    with pytest.raises(ValueError, match="t2i_plan"):
        recipe_class("showo").check_config(asked)
