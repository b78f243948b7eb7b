"""Editing, interleaved generation and multi-turn chat: layouts, API, CLI and bad input."""

from __future__ import annotations

import random

import pytest
import torch

from tests.test_chameleon import rand_image
from tests.test_discrete_diffusion_recipes import make
from unimm.conversation import Turn, check_episode, conversation_prompt, plan_request
from unimm.data.sample import Image, Sample, Text
from unimm.data.sequence import build_sequence
from unimm.evaluate.interleaved import interleaved_scene, judge_episode
from unimm.recipes.base import SamplingConfig, UnsupportedTask
from unimm.recipes.registry import RECIPES as RECIPE_CLASSES
from unimm.world.edits import InstructionError, apply_instruction, edit
from unimm.world.language import caption
from unimm.world.render import render
from unimm.world.scene import Obj, Scene, sample_scene

RECIPES = ["chameleon", "showo", "mmada"]


def make_any(recipe: str):
    """A tiny random model of any registered recipe (continuous ones on 16 pixel patches)."""
    from tests import (
        test_bagel,
        test_ddit,
        test_diffusion_head,
        test_janus,
        test_janusflow,
        test_metaquery,
        test_transfusion,
    )

    own_builder = {
        "transfusion": test_transfusion.make_model,
        "mar": test_diffusion_head.make_model,
        "janusflow": test_janusflow.make_model,
        "janus": test_janus.make_model,
        "metaquery": test_metaquery.make_model,
        "bagel": test_bagel.make_model,
        "ddit": test_ddit.make_model,
    }
    return own_builder[recipe]() if recipe in own_builder else make(recipe)


def test_apply_instruction_inverts_every_world_edit():
    for i in range(400):
        rng = random.Random(i)
        scene = sample_scene(rng, 64, 1, 4, "exclude")
        try:
            e = edit(scene, rng)
        except ValueError:
            continue
        got = apply_instruction(scene, e.instruction)
        assert got.kind == e.kind
        if e.kind == "add":  # the instruction does not say where
            assert got.target.pairs() == e.target.pairs()
            assert got.target.objects[:-1] == scene.objects
        else:
            assert got.target == e.target


def test_instructions_naming_absent_or_ambiguous_objects_are_refused():
    two = Scene((Obj("circle", "red", 15, 15, 12), Obj("circle", "blue", 45, 45, 12)))
    with pytest.raises(InstructionError, match="no square"):
        apply_instruction(two, "make the square green")
    with pytest.raises(InstructionError, match="ambiguous"):
        apply_instruction(two, "remove the circle")
    with pytest.raises(InstructionError, match="make, add, remove or move"):
        apply_instruction(two, "paint it black")
    assert apply_instruction(two, "remove the red circle").target.objects == two.objects[1:]


def test_conversation_layout_is_the_written_one():
    model = make("showo")
    tok = model.text_tok
    a, b = rand_image(0), rand_image(1)
    turns = [
        Turn("user", ["a red circle"]),
        Turn("assistant", [Image(a)]),
        Turn("user", ["add a blue square"]),
        Turn("assistant", [Image(b)]),
        Turn("user", ["how many squares are there?"]),
        Turn("assistant", ["one"]),
        Turn("user", ["what color is the circle?"]),
    ]
    segs = conversation_prompt(turns)
    ca, cb = (model.encode_images([im])[0] for im in (a, b))
    seq = build_sequence(Sample(segs, (), "chat"), tok, [ca, cb])
    enc = tok.encode
    expected = (
        [tok.bos_id, *enc("a red circle"), tok.boi_id, *ca, tok.eoi_id]
        + [*enc("add a blue square"), tok.boi_id, *cb, tok.eoi_id]
        + [*enc("how many squares are there?"), tok.assistant_id, *enc("one"), tok.eos_id]
        + enc("what color is the circle?")
    )
    assert seq.ids == expected
    assert not any(seq.loss_mask)  # a prompt trains nothing
    ids = torch.tensor([seq.ids])
    index = model.image_grid_index(ids)[0].tolist()
    n1 = 1 + len(enc("a red circle")) + 1  # first code's position
    n2 = n1 + 64 + 1 + len(enc("add a blue square")) + 1
    assert index[n1 : n1 + 64] == list(range(64)) and index[n2 : n2 + 64] == list(range(64))
    assert all(i == -1 for k, i in enumerate(index) if not (n1 <= k < n1 + 64 or n2 <= k < n2 + 64))
    # Omni-attention, written out: causal, plus each image's 64 codes see each other whole.
    T = len(expected)
    ref = [[k <= q for k in range(T)] for q in range(T)]
    for start in (n1, n2):
        for q in range(start, start + 64):
            for k in range(start, start + 64):
                ref[q][k] = True
    assert model.attention_mask(ids)[0, 0].tolist() == ref


def test_bad_conversations_get_clear_errors():
    with pytest.raises(ValueError, match="empty conversation"):
        conversation_prompt([])
    with pytest.raises(ValueError, match="turn 1 .* is empty"):
        conversation_prompt([Turn("user", ["hi"]), Turn("assistant", []), Turn("user", ["x"])])
    with pytest.raises(ValueError, match="blank text"):
        conversation_prompt([Turn("user", ["  "])])
    # An empty model reply stays in the history (as `<assistant> <eos>`).
    segs = conversation_prompt([Turn("user", ["hi"]), Turn("assistant", [""]), Turn("user", ["x"])])
    assert segs[1] == Text("", role="assistant")
    with pytest.raises(ValueError, match="end with a user turn"):
        conversation_prompt([Turn("user", ["hi"]), Turn("assistant", ["hello"])])
    with pytest.raises(ValueError, match="unknown role"):
        conversation_prompt([Turn("system", ["hi"])])
    model = make("chameleon")
    many = [Turn("user", [rand_image(i) for i in range(4)] + ["what color?"])]
    with pytest.raises(ValueError, match="too many images: the prompt holds 4"):
        model.chat(many)
    with pytest.raises(InstructionError, match="no square"):
        model.edit_images(
            [render(Scene((Obj("circle", "red", 30, 30, 14),)))],
            ["make the square green"],
            validate=True,
        )


def test_plan_request():
    steps = plan_request(
        "draw a red square, then add a blue circle to it, then tell me how many squares there are"
    )
    assert steps == [
        ("a red square", "image"),
        ("add a blue circle", "image"),
        ("how many squares are there?", "text"),
    ]
    with pytest.raises(ValueError, match="empty request"):
        plan_request(" , then ")


def test_interleaved_edits_naming_absent_or_ambiguous_objects_are_refused():
    def refusal(request: str) -> str:
        with pytest.raises(InstructionError) as e:
            check_episode(plan_request(request))
        return str(e.value)

    msg = refusal("draw a red square, then remove the blue circle")
    assert msg.startswith("step 2: there is no blue circle to remove")
    assert msg.endswith("(the scene so far: a red square)")
    assert "ambiguous" in refusal("draw two circles, then make the circle green")
    # each edit is checked against the scene the earlier edits leave, across text steps
    msg = refusal(
        "draw a red square, then make the square green, then how many squares?, then "
        "remove the red square"
    )
    assert msg.startswith("step 4: there is no red square to remove")
    assert refusal("draw a circle, then remove the circle, then move the circle up").startswith(
        "step 3: there is no circle to move"
    )
    assert "ambiguous" in refusal(
        "draw a red circle, then add a red circle, then remove the red circle"
    )
    # a starting image's reading is the scene the first edit works on
    start = Scene((Obj("circle", "red", 30, 30, 14),))
    with pytest.raises(InstructionError, match="step 1: there is no square to recolour"):
        check_episode([("make the square green", "image")], start)
    check_episode([("make the circle green", "image")], start)


def test_interleaved_check_passes_what_it_cannot_prove_absent():
    for request in [
        "draw a red square, then add a blue circle, then remove the blue circle",
        # a caption that leaves colours open: "the red circle" may be either circle
        "draw two circles, then make the red circle blue, then remove the green circle",
        "draw a circle and a square, then move the blue square up",
        # outside the world's grammars: not understood, so not refused, nor anything after it
        "draw a red square, then make it sparkle, then remove the blue circle",
        "draw a cat, then remove the blue circle",
        "remove the blue circle",  # no scene known before it
    ]:
        check_episode(plan_request(request))
    # a later caption sets the scene again
    with pytest.raises(InstructionError, match="step 3: there is no circle"):
        check_episode(plan_request("draw a cat, then draw a red square, then remove the circle"))


def test_interleaved_check_accepts_every_world_edit_chain():
    """World episodes are right by construction, so the check must pass them all, whatever the
    caption leaves open (colour-free, mixed, relation captions), over chains of edits."""
    chains = 0
    for i in range(600):
        rng = random.Random(i)
        scene = sample_scene(rng, 64, 1, 4, "exclude")
        steps = [(caption(scene, rng), "image")]
        for _ in range(3):
            try:
                e = edit(scene, rng)
            except ValueError:
                break
            steps.append((e.instruction, "image"))
            scene = e.target
        check_episode(steps)
        chains += len(steps) > 2
    assert chains > 400
    from unimm.evaluate.interleaved import episode_steps
    from unimm.evaluate.understanding import eval_samples

    for sample in eval_samples("interleaved", "eval", 100, 0):
        check_episode(episode_steps(sample))


@pytest.mark.parametrize("recipe", sorted(RECIPE_CLASSES))
def test_edit_chat_and_interleaved_run_end_to_end(recipe):
    model = make_any(recipe)
    out = model.edit_images([rand_image(0), rand_image(1)], ["make the circle green"] * 2)
    assert len(out) == 2 and out[0].shape == (64, 64, 3)
    reply = model.chat([Turn("user", [rand_image(2), "what color is the circle?"])])
    assert isinstance(reply, Text)
    drawn = model.chat([Turn("user", ["a red circle"])], "image")
    assert isinstance(drawn, Image)
    episodes = [plan_request("draw a red square, then add a blue circle, then how many circles?")]
    outputs = model.interleave(episodes * 2)
    kinds = [[type(s).__name__ for s in ep] for ep in outputs]
    assert kinds == [["Image", "Image", "Text"]] * 2
    with pytest.raises(ValueError, match="same modalities"):
        model.interleave([[("a red circle", "image")], [("what?", "text")]])
    # An edit the earlier steps make impossible is refused before any generation.
    bad = plan_request("draw a red square, then remove the blue circle, then how many circles?")
    with pytest.raises(InstructionError, match="episode 2, step 2: there is no blue circle"):
        model.interleave(episodes + [bad])
    # A history with several images and an earlier reply goes through the same API.
    history = [
        Turn("user", [rand_image(3), "what color is the circle?"]),
        Turn("assistant", ["red"]),
        Turn("user", [rand_image(4), "and in this one?"]),
    ]
    assert isinstance(model.chat(history), Text)
    # Too many images for the context: the same clear error whatever the recipe.
    most = model.max_prompt_images("text")
    assert isinstance(model.chat([Turn("user", [*map(rand_image, range(most)), "why?"])]), Text)
    crowded = [Turn("user", [*map(rand_image, range(most + 1)), "why?"])]
    with pytest.raises(ValueError, match=f"too many images: the prompt holds {most + 1}"):
        model.chat(crowded)
    with pytest.raises(ValueError, match=f"too many images: the prompt holds {most}"):
        model.chat([Turn("user", [*map(rand_image, range(most)), "draw"])], "image")
    # Inpainting is the one task of the recipe x task table (docs/DESIGN.md) some recipes lack.
    if recipe in ("showo", "mmada"):
        assert model.inpaint([rand_image(5)], ["a red circle"], [(0, 0, 32, 32)])[0].shape == (
            64,
            64,
            3,
        )
    else:
        with pytest.raises(UnsupportedTask, match=f"'{recipe}' recipe cannot inpaint"):
            model.inpaint([rand_image(5)], ["a red circle"], [(0, 0, 32, 32)])


@pytest.mark.parametrize("recipe", ["chameleon", "transfusion"])
def test_interleaved_step_k_is_conditioned_on_every_earlier_output(recipe, monkeypatch):
    model = make_any(recipe)
    prompts = []  # what each step's generate call was given (copied: contexts keep growing)
    real = model.generate

    def spy(batch, modality, sampling=None, seed=0):
        prompts.append((modality, [list(p) for p in batch]))
        return real(batch, modality, sampling, seed)

    monkeypatch.setattr(model, "generate", spy)
    steps = plan_request("draw a red square, then add a blue circle, then how many circles?")
    (out,) = model.interleave([steps])
    assert [m for m, _ in prompts] == ["image", "image", "text"]
    texts = [t for t, _ in steps]
    for k, (_, (ctx,)) in enumerate(prompts):
        assert len(ctx) == 2 * k + 1  # (text, output) per earlier step, then this step's text
        for j in range(k):
            assert ctx[2 * j] == Text(texts[j]) and ctx[2 * j + 1] is out[j]
        assert ctx[-1] == Text(texts[k])
    assert out[2].role == "assistant"  # a text output re-enters the context as a reply


def test_interleaved_benchmark_judges_against_the_previous_output(tmp_path):
    scene = Scene((Obj("square", "red", 20, 20, 14),))
    edited = Scene((*scene.objects, Obj("circle", "blue", 45, 45, 14)))
    steps = [
        ("a red square", "image"),
        ("add a blue circle", "image"),
        ("how many circles are there?", "text"),
    ]
    good = [Image(render(scene)), Image(render(edited)), Text("one")]
    assert judge_episode(steps, good)["correct"] == [True, True, True]
    wrong_draw = [Image(render(edited)), Image(render(edited)), Text("one")]
    assert judge_episode(steps, wrong_draw)["correct"][:2] == [False, False]
    wrong_answer = [Image(render(scene)), Image(render(scene)), Text("one")]
    assert judge_episode(steps, wrong_answer)["correct"] == [True, False, False]

    def oracle(episodes):  # replays the data set's own images and answers
        return [EPISODE_TRUTH[e[0][0], e[1][0]] for e in episodes]

    from unimm.evaluate.understanding import eval_samples

    EPISODE_TRUTH = {
        (s.segments[0].text, s.segments[2].text): [s.segments[1], s.segments[3], s.segments[5]]
        for s in eval_samples("interleaved", "eval", 30, 0)
    }
    res = interleaved_scene(oracle, "eval", 30, progress=False)
    assert res["chain"]["answer"] > 0.9  # the detector reads clean renders almost perfectly
    assert set(res["per_step"]) == {"draw", "edit", "answer"}
    from unimm.evaluate.report import write_report

    report = write_report(tmp_path, {"interleaved_eval": res}).read_text()
    assert "Interleaved-scene (eval, 30 episodes)" in report
    assert (tmp_path / "interleaved_eval_samples.png").is_file()


@pytest.mark.parametrize("recipe", ["chameleon", "transfusion"])
def test_chat_repl_drops_the_oldest_exchange_when_the_context_is_full(recipe, tmp_path):
    """One image per message until the history holds more images (or, for the continuous
    recipes' short image blocks, more tokens) than the context: the REPL drops the oldest
    exchange, says so, and answers every message."""
    from unimm.chat_repl import chat_loop
    from unimm.data.images import save_image

    model = make_any(recipe)
    most = model.max_prompt_images("text")
    lines = []
    for k in range(most + 1):
        save_image(rand_image(k), tmp_path / f"{k}.png")
        lines += [f"/image {tmp_path / f'{k}.png'}", f"what color is shape {k}?"]
    script, written = iter(lines), []

    def read(prompt):
        try:
            return next(script)
        except StopIteration:
            raise EOFError from None

    one_token = SamplingConfig(temperature=0.0, max_new_tokens=1)  # replies stay short
    history = chat_loop(model, one_token, tmp_path, read, written.append)
    assert not [w for w in written if w.startswith("error")]
    assert sum(w.startswith("model> ") for w in written) == most + 1  # every message answered
    drops = sum("outgrew the context" in w for w in written)
    assert drops >= 1
    assert [t.role for t in history] == ["user", "assistant"] * (len(history) // 2)
    assert history[-2].content[-1] == Text(f"what color is shape {most}?")
    images = sum(isinstance(c, Image) for t in history for c in t.content)
    assert images <= most and len(history) == 2 * images  # one image per kept user turn
    if recipe == "chameleon":  # 2 images fit: the third message drops exactly the first pair
        assert drops == 1 and history[0].content[-1] == Text("what color is shape 1?")
