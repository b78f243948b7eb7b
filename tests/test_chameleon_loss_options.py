"""The chameleon recipe's loss pooling, background weight and code prototypes
(chameleon.loss_pooling / background_weight / code_prototypes)."""

from __future__ import annotations

import random
from dataclasses import replace

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from tests.test_chameleon import CORPUS, rand_image, samples
from unimm.data.sample import Text
from unimm.data.sequence import collate
from unimm.paradigms.autoregressive import generate, next_token_loss
from unimm.paradigms.weighting import background_weighted
from unimm.presets import get_run_config
from unimm.recipes.base import SamplingConfig
from unimm.recipes.chameleon import ChameleonModel
from unimm.recipes.code_prototypes import CodePrototypes
from unimm.recipes.parts import Parts
from unimm.tokenizers.text import TextTokenizer
from unimm.tokenizers.vq import VQTokenizer


def make_model(**chameleon) -> ChameleonModel:
    torch.manual_seed(0)
    cfg = get_run_config("tiny")
    text = TextTokenizer.train(CORPUS, cfg.text_vocab_size)
    image = VQTokenizer(cfg.vq).eval()
    cfg = replace(
        cfg,
        model=replace(cfg.model, vocab_size=text.vocab_size + image.codebook_size),
        chameleon=replace(cfg.chameleon, **chameleon),
    )
    return ChameleonModel(Parts(cfg, text, image)).eval()


def _targets(model):
    ids = torch.tensor([[5, 6, model.image_offset + 1, model.image_offset + 2, 0]])
    mask = torch.tensor([[True, True, True, True, False]])
    is_image = ids >= model.image_offset
    return ids, mask, is_image


def test_token_pooling_is_the_plain_mean():
    model = make_model()
    assert model.target_weights(*_targets(model)) is None
    batch = samples(4)
    plain = model.loss(batch, torch.Generator().manual_seed(0))["loss"]
    # background_weight=1 and token pooling through the weighted path give the same mean
    weighted = make_model(background_weight=1.0 - 1e-9)
    again = weighted.loss(batch, torch.Generator().manual_seed(0))["loss"]
    torch.testing.assert_close(plain, again, rtol=1e-5, atol=1e-6)


def test_modality_pooling_gives_each_modality_its_weight():
    model = make_model(loss_pooling="modality", text_loss_weight=0.5, image_loss_weight=2.0)
    ids, mask, is_image = _targets(model)
    w = model.target_weights(ids, mask, is_image)
    assert w[is_image & mask].sum().item() == pytest.approx(2.0)
    assert w[~is_image & mask].sum().item() == pytest.approx(0.5)
    assert w[~mask].sum().item() == 0.0


def test_background_weight_scales_only_background_codes():
    model = make_model(background_weight=0.25)
    bg = model.background_ids()[0]
    other = next(i for i in range(model.image_offset, model.image_offset + 64) if i != bg)
    ids = torch.tensor([[bg, other, 5]])
    mask = torch.ones_like(ids, dtype=torch.bool)
    w = model.target_weights(ids, mask, ids >= model.image_offset)
    assert w[0, 0].item() == pytest.approx(0.25 * w[0, 1].item())
    assert w[0, 2].item() == pytest.approx(w[0, 1].item())
    assert w.sum().item() == pytest.approx(1.0)


def test_text_token_weight_scales_only_text_targets():
    model = make_model(background_weight=0.5, text_token_weight=3.0)
    bg = model.background_ids()[0]
    other = next(i for i in range(model.image_offset, model.image_offset + 64) if i != bg)
    ids = torch.tensor([[bg, other, 5, 6, 7]])
    mask = torch.tensor([[True, True, True, True, False]])
    w = model.target_weights(ids, mask, ids >= model.image_offset)
    # object code 1, background 0.5, text 3 (relative), the padding 0; normalised to sum 1
    assert w[0, :4].tolist() == pytest.approx([0.5 / 7.5, 1 / 7.5, 3 / 7.5, 3 / 7.5])
    assert w[0, 4].item() == 0.0
    # text_token_weight=1 is the other recipes' background-weighted mean exactly
    is_image = ids >= model.image_offset
    unit = make_model(background_weight=0.5).target_weights(ids, mask, is_image)
    is_bg = model.is_background(ids) & is_image
    assert torch.equal(unit, background_weighted(mask, is_bg, 0.5))
    with pytest.raises(ValueError, match=">= 0"):
        get_run_config("tiny", ["chameleon.text_token_weight=-2"])


def test_prototypes_are_mean_patches_and_zero_when_unseen():
    protos = CodePrototypes(codebook_size=4, patch=2)
    images = torch.ones(1, 3, 4, 4)  # white, then one red patch
    images[0, :, 0:2, 2:4] = torch.tensor([1.0, -1.0, -1.0])[:, None, None]
    codes = torch.tensor([[0, 1, 0, 0]])  # raster order over the 2 x 2 grid
    protos.observe(images, codes)
    f = protos.features()  # mean patch minus white
    assert torch.equal(f[0], torch.zeros(12))  # white patches
    assert torch.equal(f[2], torch.zeros(12)) and torch.equal(f[3], torch.zeros(12))  # unseen
    red = f[1].view(3, 4)  # unfold lays channels first
    assert torch.equal(red[0], torch.zeros(4)) and torch.equal(red[1], torch.full((4,), -2.0))


def test_prototypes_learn_in_training_and_survive_save_load(tmp_path):
    model = make_model(code_prototypes=True)
    model.train()
    model.loss(samples(4), torch.Generator().manual_seed(0))
    assert model.code_prototypes.count.sum().item() == 4 * model.image_tokens
    with torch.no_grad():  # make the output projection matter
        model.proto_out.weight.normal_(0, 1.0)
    model.eval()
    model.save_pretrained(tmp_path / "ckpt")
    again = ChameleonModel.from_pretrained(tmp_path / "ckpt")
    assert torch.equal(again.code_prototypes.pixel_sum, model.code_prototypes.pixel_sum)
    s = SamplingConfig(temperature=0.0, cfg_scale=2.0)
    a = model.generate_images(["a red circle"], 1, sampling=s)[0][0]
    assert np.array_equal(a, again.generate_images(["a red circle"], 1, sampling=s)[0][0])
    # eval mode does not update the prototypes
    before = model.code_prototypes.count.clone()
    model.answer([rand_image(0)], ["what color?"])
    assert torch.equal(before, model.code_prototypes.count)


def test_prototypes_change_outputs_and_cache_equals_recomputation():
    model = make_model(code_prototypes=True)
    model.train()
    model.loss(samples(4), torch.Generator().manual_seed(0))
    model.eval()
    with torch.no_grad():
        model.proto_out.weight.normal_(0, 1.0)
        model.proto_in.weight.normal_(0, 1.0)
    prompts = [model._prompt_ids([Text("a red circle")], "image")]
    codes = range(model.image_offset, model.image_offset + model.image_tok.codebook_size)
    kw = dict(temperature=0.0, allowed_ids=codes)
    cached = generate(model, prompts, model.image_tokens, use_cache=True, **kw)
    assert cached == generate(model, prompts, model.image_tokens, use_cache=False, **kw)
    with torch.no_grad():
        model.proto_out.weight.zero_()
        model.proto_in.weight.zero_()
    assert generate(model, prompts, model.image_tokens, **kw) != cached


def test_bad_loss_options_are_refused():
    with pytest.raises(ValueError, match="loss_pooling"):
        get_run_config("tiny", ["chameleon.loss_pooling=mean"])
    with pytest.raises(ValueError, match=">= 0"):
        get_run_config("tiny", ["chameleon.background_weight=-1"])


@pytest.mark.parametrize("background_weight", [1.0, 0.3])
def test_loss_and_its_diagnostics_from_one_cross_entropy(background_weight):
    """The loss and its text / image parts, computed from one per-token cross-entropy, equal
    each one computed on its own from the same logits."""
    model = make_model(background_weight=background_weight).train()
    batch_samples = samples(4)
    g = torch.Generator().manual_seed(0)
    out = model.loss(batch_samples, torch.Generator().manual_seed(0))
    seed = int(torch.randint(0, 2**31, (1,), generator=g))
    batch = collate(model.build(batch_samples, random.Random(seed)), model.text_tok.pad_id)
    targets, mask = batch.ids[:, 1:], batch.loss_mask[:, 1:]
    with torch.no_grad():
        logits = model.train_logits(batch.ids[:, :-1], targets, model.train_mask(batch))
    is_image = batch.modality[:, 1:] == 1
    for name, part in (("loss_text", mask & ~is_image), ("loss_image", mask & is_image)):
        assert float(out[name]) == pytest.approx(float(next_token_loss(logits, targets, part)))
    weights = model.target_weights(targets, mask, is_image)
    if weights is None:
        expected = next_token_loss(logits, targets, mask)
    else:
        per = F.cross_entropy(logits.flatten(0, 1).float(), targets.flatten(), reduction="none")
        expected = (per * weights.flatten()).sum()
    assert float(out["loss"]) == pytest.approx(float(expected))
