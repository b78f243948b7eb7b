"""JanusFlow recipe on tiny random parts: decoupled encoders, causal mask, REPA, train + sample."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch

from unimm.data.sample import Sample, Text
from unimm.data.sequence import IMAGE
from unimm.presets import get_run_config
from unimm.recipes.base import SamplingConfig
from unimm.recipes.janusflow import JanusFlowModel
from unimm.recipes.janusflow_config import JanusFlowConfig
from unimm.recipes.parts import Parts
from unimm.tokenizers.pixel_patches import PatchConfig, PixelPatches
from unimm.tokenizers.text import TextTokenizer

from .test_transfusion import CORPUS, rand_image, samples


def make_model(seed: int = 0, **jf) -> JanusFlowModel:
    torch.manual_seed(seed)
    cfg = get_run_config("tiny", ["recipe=janusflow"])
    cfg = replace(cfg, janusflow=JanusFlowConfig(und_dim=16, und_layers=1, **jf))
    cfg = replace(cfg, flow=replace(cfg.flow, num_steps=3))
    text = TextTokenizer.train(CORPUS, cfg.text_vocab_size)
    image = PixelPatches(PatchConfig(patch=16, shift=0.5, scale=0.5))
    cfg = replace(cfg, model=replace(cfg.model, vocab_size=text.vocab_size), patches=image.config)
    return JanusFlowModel(Parts(cfg, text, image)).eval()


def test_understanding_images_use_the_understanding_encoder_only():
    model = make_model()
    batch, latents = model.layout(samples(1))
    is_image = batch.modality == IMAGE
    tokens = model.context_tokens([rand_image(0)], latents)
    assert tokens.shape == (1, 16, model.parts.config.model.dim)
    # the generation encoder does not take part: changing it leaves context tokens alone
    torch.nn.init.normal_(model.image_in.inp.weight)
    assert torch.equal(tokens, model.context_tokens([rand_image(0)], latents))
    assert is_image.sum() == 16


def test_causal_mask_by_default_and_bidirectional_option():
    block = torch.tensor([[0, 1, 1, 0]])
    valid = torch.ones(1, 4, dtype=torch.bool)
    causal = make_model().attention_mask(block, valid)[0, 0]
    assert not causal[1, 2]  # first image token does not see the second
    bidir = make_model(image_attention="bidirectional").attention_mask(block, valid)[0, 0]
    assert bidir[1, 2] and not bidir[0, 1]


@pytest.mark.parametrize("repa", [0.0, 0.5])
def test_loss_falls_with_training(repa):
    model = make_model(repa_weight=repa, repa_layer=1)
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    data = samples(8)
    losses = []
    for step in range(20):
        out = model.loss(data, torch.Generator().manual_seed(step % 2))
        losses.append(float(out["loss"].detach()))
        opt.zero_grad()
        out["loss"].backward()
        opt.step()
    assert ("loss_repa" in out) == (repa > 0)
    # Over init seeds 0-19 the worst ratio was 0.646 (repa 0) and 0.643 (repa 0.5); untrained
    # (lr 0) 0.99-1.01 (AMD Zen 4, 2026-12-06).
    assert losses[-1] < 0.7 * losses[0]


@pytest.mark.parametrize("attention", ["causal", "bidirectional"])
def test_generate_and_checkpoint_round_trip(tmp_path, attention):
    model = make_model(image_attention=attention)
    torch.nn.init.normal_(model.image_out.out.weight, std=0.05)
    prompts = [[Text("a red circle")], [Text("a blue square left of a green triangle")]]
    out = model.generate(prompts, "image", SamplingConfig(cfg_scale=2.0), seed=1)
    assert len(out) == 2 and all(o.pixels.shape == (64, 64, 3) for o in out)
    model.save_pretrained(tmp_path / "ckpt")
    loaded = JanusFlowModel.from_pretrained(tmp_path / "ckpt")
    again = loaded.generate(prompts, "image", SamplingConfig(cfg_scale=2.0), seed=1)
    assert all(np.array_equal(a.pixels, b.pixels) for a, b in zip(out, again, strict=True))
    assert loaded.answer([rand_image(0)], ["what color?"]) == model.answer(
        [rand_image(0)], ["what color?"]
    )


@pytest.mark.parametrize("attention", ["causal", "bidirectional"])
def test_cached_image_span_equals_full_recomputation(attention):
    # One ODE step's hidden states through the prompt's KV cache equal a full forward.
    model = make_model(image_attention=attention)
    prompt = [Text("a red circle")]
    cache, mask, pos, _ = model.image_span_context([prompt], SamplingConfig(cfg_scale=1.0))
    x = torch.randn(1, 16, model.image_tok.latent_dim)
    tokens = model.image_embed(x, torch.full((1,), 0.3))
    cached = model.run_image_span(cache, mask, pos, tokens)

    batch, _ = model.layout([Sample(prompt, (), "prompt")])
    ids = batch.ids[0].tolist() + [model.text_tok.boi_id] + [model.text_tok.pad_id] * 16
    ids = torch.tensor([ids])
    is_image = torch.zeros_like(ids, dtype=torch.bool)
    is_image[0, -16:] = True
    block = is_image.long()
    full = model.backbone(
        None,
        mask=model.attention_mask(block, torch.ones_like(is_image)),
        return_hidden=True,
        embeds=model.embed(ids, is_image, tokens),
    )
    assert torch.allclose(cached, full[:, -16:], atol=1e-5)
