"""The AR shared-vocabulary recipe on tiny random parts."""

from __future__ import annotations

import random
from dataclasses import replace

import numpy as np
import pytest
import torch

from unimm.data.sample import Image, Sample, Text
from unimm.presets import get_run_config
from unimm.recipes.base import SamplingConfig
from unimm.recipes.chameleon import ChameleonModel
from unimm.recipes.parts import Parts
from unimm.tokenizers.text import TextTokenizer
from unimm.tokenizers.vq import VQTokenizer

CORPUS = ["a red circle", "a blue square left of a green triangle", "what color?", "red"] * 30


def make_model(seed: int = 0) -> ChameleonModel:
    torch.manual_seed(seed)
    cfg = get_run_config("tiny")
    text = TextTokenizer.train(CORPUS, cfg.text_vocab_size)
    image = VQTokenizer(cfg.vq).eval()
    cfg = replace(cfg, model=replace(cfg.model, vocab_size=text.vocab_size + image.codebook_size))
    return ChameleonModel(Parts(cfg, text, image)).eval()


def rand_image(seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (64, 64, 3), dtype=np.uint8)


def samples(n: int) -> list[Sample]:
    rng = random.Random(0)
    out = []
    for i in range(n):
        img = Image(rand_image(i % 3))
        if i % 2:
            out.append(Sample([Text(rng.choice(CORPUS)), img], (1,), "t2i"))
        else:
            out.append(Sample([img, Text("what color?"), Text("red")], (2,), "vqa"))
    return out


def test_loss_falls_with_training():
    model = make_model()
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    batch = samples(8)
    gen = torch.Generator().manual_seed(0)
    first = None
    for _ in range(40):
        out = model.loss(batch, gen)
        first = first if first is not None else out["loss"].item()
        out["loss"].backward()
        opt.step()
        opt.zero_grad()
    # Over init seeds 0-19 the worst ratio was 0.41; untrained (lr 0) 1.00 (AMD Zen 4, 2026-12-06).
    assert out["loss"].item() < 0.6 * first
    assert {"loss_text", "loss_image"} <= set(out)


def test_image_generation_shapes_and_codes_in_image_range():
    model = make_model()
    imgs = model.generate_images(["a red circle", "a blue square"], n_per_prompt=2, seed=1)
    assert len(imgs) == 2 and all(len(x) == 2 for x in imgs)
    assert imgs[0][0].shape == (64, 64, 3) and imgs[0][0].dtype == np.uint8


def test_batched_generation_equals_single():
    model = make_model()
    greedy = SamplingConfig(temperature=0.0, cfg_scale=2.0)
    prompts = ["a red circle", "a blue square left of a green triangle"]
    together = model.generate_images(prompts, 1, sampling=greedy)
    alone = [model.generate_images([p], 1, sampling=greedy)[0] for p in prompts]
    for a, b in zip(together, alone):
        assert np.array_equal(a[0], b[0])
    imgs = [rand_image(1), rand_image(2)]
    qs = ["what color?", "a red circle"]
    assert model.answer(imgs, qs) == [model.answer([i], [q])[0] for i, q in zip(imgs, qs)]


def test_save_load_identical_outputs(tmp_path):
    model = make_model()
    model.save_pretrained(tmp_path / "ckpt")
    again = ChameleonModel.from_pretrained(tmp_path / "ckpt")
    s = SamplingConfig(temperature=1.0, top_k=5)
    a = model.generate_images(["a red circle"], 2, seed=3, sampling=s)
    b = again.generate_images(["a red circle"], 2, seed=3, sampling=s)
    assert all(np.array_equal(x, y) for x, y in zip(a[0], b[0]))
    batch = samples(4)
    la = model.loss(batch, torch.Generator().manual_seed(0))["loss"]
    lb = again.loss(batch, torch.Generator().manual_seed(0))["loss"]
    assert torch.equal(la, lb)


def test_bad_prompts():
    model = make_model()
    with pytest.raises(ValueError, match="empty prompt"):
        model.generate_images([""], 1)
    with pytest.raises(ValueError, match="64x64"):
        model.answer([np.zeros((32, 32, 3), np.uint8)], ["what?"])
    with pytest.raises(ValueError, match="prompt too long"):
        model.generate_images(["a red circle " * 100], 1)


def test_cached_generation_equals_recomputation_with_image_positions():
    """The (row, col) embedding index is carried in the KV cache's state: decoding with the
    cache must give exactly what recomputing the whole sequence gives."""
    from unimm.paradigms.autoregressive import generate

    model = make_model()
    with torch.no_grad():  # make the 2-D embedding matter
        model.image_row.normal_(0, 1.0)
        model.image_col.normal_(0, 1.0)
    prompt_with_image = model._prompt_ids([Image(rand_image(4)), Text("a red circle")], "image")
    prompts = [model._prompt_ids([Text("a red circle")], "image"), prompt_with_image]
    codes = range(model.image_offset, model.image_offset + model.image_tok.codebook_size)
    kw = dict(temperature=0.0, allowed_ids=codes)
    cached = generate(model, prompts, model.image_tokens, use_cache=True, **kw)
    fresh = generate(model, prompts, model.image_tokens, use_cache=False, **kw)
    assert cached == fresh
    # and the embedding changes the result, so the equality above is not vacuous
    with torch.no_grad():
        model.image_col.zero_()
        model.image_row.zero_()
    assert generate(model, prompts, model.image_tokens, **kw) != cached
