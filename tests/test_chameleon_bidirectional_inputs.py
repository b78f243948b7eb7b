"""chameleon.bidirectional_inputs: the codes of an image the model reads attend to each other in
both directions; images it draws stay causal, in training and in cached generation."""

from __future__ import annotations

import pytest
import torch

from tests.test_chameleon import rand_image
from tests.test_chameleon_loss_options import make_model
from unimm.data.sample import Image, Sample, Text
from unimm.data.sequence import collate
from unimm.model.masks import input_image_blocks
from unimm.paradigms.autoregressive import generate


def test_input_image_blocks_number_complete_images_only():
    boi, eoi = 90, 91
    tokens = torch.tensor([[1, boi, 5, 6, eoi, 2, boi, 7, eoi, 3, boi, 8, 9]])
    got = input_image_blocks(tokens, boi, eoi)[0].tolist()
    # two complete images (markers excluded), then one still open: causal
    assert got == [-1, -1, 1, 1, -1, -1, -1, 2, -1, -1, -1, -1, -1]


def logits_of(model, sample: Sample) -> torch.Tensor:
    seq = model.build([sample])
    batch = collate(seq, model.text_tok.pad_id)
    with torch.no_grad():
        return model.train_logits(batch.ids[:, :-1], batch.ids[:, 1:], model.train_mask(batch))


def test_read_images_see_their_later_codes_drawn_images_do_not(monkeypatch):
    model = make_model(bidirectional_inputs=True)
    n, first = model.image_tokens, 2  # the image's first code is input position 2 (bos, boi)
    a, b = rand_image(1), rand_image(1).copy()
    b[-8:] = 255 - b[-8:]  # change only the image's last rows of codes
    codes_a, codes_b = model.encode_images([a])[0], model.encode_images([b])[0]
    changed = min(i for i in range(n) if codes_a[i] != codes_b[i])
    assert changed > 0
    read = [
        Sample([Image(im), Text("what is it?"), Text("a circle")], (2,), "vqa") for im in (a, b)
    ]
    la, lb = logits_of(model, read[0]), logits_of(model, read[1])
    # the read image's first code already sees the change further down the image
    assert not torch.allclose(la[0, first], lb[0, first])
    drawn = [Sample([Text("a red circle"), Image(im)], (1,), "t2i") for im in (a, b)]
    da, db = logits_of(model, drawn[0]), logits_of(model, drawn[1])
    start = 1 + len(model.text_tok.encode("a red circle")) + 1  # bos, text, boi
    # a drawn image stays causal: positions before the first changed code are unchanged
    assert torch.equal(da[0, : start + changed], db[0, : start + changed])
    # and with the option off, a read image is causal too
    model.bidirectional_inputs = False
    assert torch.equal(logits_of(model, read[0])[0, first], logits_of(model, read[1])[0, first])


@pytest.mark.parametrize("modality", ["text", "image"])
def test_cached_generation_equals_recomputation(modality):
    model = make_model(bidirectional_inputs=True)
    # (two images and an image to draw would not fit the tiny model's context)
    last = [Image(rand_image(5))] + ([Image(rand_image(6))] if modality == "text" else [])
    prompts = [
        model._prompt_ids([Image(rand_image(4)), Text("what color is it?")], modality),
        model._prompt_ids([Text("a red circle")], modality),
        model._prompt_ids([*last, Text("same?")], modality),
    ]
    if modality == "image":
        kw = dict(allowed_ids=model.code_ids, max_new_tokens=model.image_tokens)
    else:
        kw = dict(allowed_ids=model.text_ids(), max_new_tokens=6)
    markers = model.image_markers()
    cached = generate(model, prompts, temperature=0.0, image_markers=markers, **kw)
    fresh = generate(model, prompts, temperature=0.0, image_markers=markers, use_cache=False, **kw)
    assert cached == fresh
    # the blocks matter, so the equality is not vacuous (a random model's greedy text is the
    # same few tokens either way; its 64 codes are not)
    if modality == "image":
        assert generate(model, prompts, temperature=0.0, **kw) != cached
    # one prompt alone gives what it gave among others (left padding is no marker)
    alone = generate(model, prompts[2:], temperature=0.0, image_markers=markers, **kw)
    assert alone[0] == cached[2]


def test_the_model_answers_and_the_option_is_refused_elsewhere():
    from dataclasses import replace

    from unimm.recipes.parts import Parts
    from unimm.recipes.showo import ShowoModel

    model = make_model(bidirectional_inputs=True)
    assert len(model.answer([rand_image(1)], ["what is it?"])) == 1
    other = make_model()
    cfg = replace(
        other.parts.config,
        recipe="showo",
        chameleon=replace(other.parts.config.chameleon, bidirectional_inputs=True),
    )
    with pytest.raises(ValueError, match="bidirectional_inputs"):
        ShowoModel(Parts(cfg, other.text_tok, other.image_tok))


def test_training_refuses_the_option_for_other_recipes_before_any_tokenizer(tmp_path):
    from unimm.pipeline import train_run

    for bad in (["recipe=showo", "chameleon.bidirectional_inputs=true"],
                ["recipe=janus", "chameleon.copy_source=true"]):  # fmt: skip
        with pytest.raises(ValueError, match="is for the chameleon recipe"):
            train_run(tmp_path / "run", "tiny", bad, progress=False)
        assert not (tmp_path / "run").exists()  # refused before anything was written
