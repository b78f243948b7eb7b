"""The relation-use diagnostic: image NLL under a position prompt against its opposite."""

from __future__ import annotations

import pytest
import torch

from tests.test_diagnostics import t2i_samples
from tests.train_helpers import tiny_model
from unimm.evaluate.relation_use import image_nll, relation_pairs, relation_use, relation_use_md
from unimm.world.detector import detect
from unimm.world.geneval import prompt_from_text
from unimm.world.palette import RELATIONS
from unimm.world.scene import holds, opposite


def test_image_nll_is_the_training_image_loss_per_sample_and_batch_free():
    model = tiny_model().eval()
    samples = t2i_samples(6)
    nll = image_nll(model, samples, batch_size=4)
    with torch.no_grad():
        want = float(model.loss(samples)["loss_image"])  # the mean over every image target
    assert float(nll.sum()) / (6 * model.image_tokens) == pytest.approx(want, rel=1e-5)
    alone = torch.cat([image_nll(model, [s]) for s in samples])  # padding changes nothing
    torch.testing.assert_close(nll, alone, rtol=1e-5, atol=1e-4)


def test_pairs_differ_in_the_relation_only_and_the_image_obeys_the_first():
    true, flipped = relation_pairs(12, seed=3, resolution=64)
    assert len(true) == len(flipped) == 12
    for t, f in zip(true, flipped, strict=True):
        a, b = t.segments[0].text, f.segments[0].text
        rel = next(r for r in RELATIONS if f" {r} " in a)
        assert b == a.replace(f" {rel} ", f" {opposite(rel)} ")
        assert t.segments[1] is f.segments[1]  # the same image under both prompts
        spec = prompt_from_text(a).spec
        (ca, sa, _), (cb, sb, _) = spec.groups
        scene = detect(t.segments[1].pixels)
        first = next(o for o in scene.objects if o.pair == (ca, sa))
        second = next(o for o in scene.objects if o.pair == (cb, sb))
        assert holds(first, rel, second) and not holds(first, opposite(rel), second)


def test_report_fields_and_the_recipes_it_refuses():
    from tests.test_janus import make_model as make_janus

    for model in (tiny_model().eval(), make_janus()):
        res = relation_use(model, n=5)
        assert res["applicable"] and res["n"] == 5
        assert 0.0 <= res["true_preferred"] <= 1.0 and res["gap_sd"] >= 0.0
        assert "nats" in relation_use_md(res)[0]
    from tests.test_discrete_diffusion_recipes import make
    from tests.test_transfusion import make_model

    for other in (make("showo"), make_model()):
        res = relation_use(other, n=2)
        assert not res["applicable"] and other.recipe in res["reason"]
        assert "not applicable" in relation_use_md(res)[0]
