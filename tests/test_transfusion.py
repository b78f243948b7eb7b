"""Transfusion recipe on tiny random parts: loss masks, a train step, sampling, checkpoints."""

from __future__ import annotations

import random
from dataclasses import replace

import numpy as np
import pytest
import torch

from unimm.data.sample import Image, Sample, Text
from unimm.data.sequence import IMAGE
from unimm.presets import get_run_config
from unimm.recipes.base import SamplingConfig
from unimm.recipes.parts import Parts
from unimm.recipes.patching import LinearPatching, UNetDown, UNetUp
from unimm.recipes.transfusion import TransfusionModel
from unimm.recipes.transfusion_config import TransfusionConfig
from unimm.tokenizers.pixel_patches import PatchConfig, PixelPatches
from unimm.tokenizers.text import TextTokenizer

CORPUS = ["a red circle", "a blue square left of a green triangle", "what color?", "red"] * 30


def make_model(seed: int = 0, transfusion: TransfusionConfig | None = None, **flow):
    torch.manual_seed(seed)
    cfg = get_run_config("tiny", ["recipe=transfusion"])
    cfg = replace(cfg, flow=replace(cfg.flow, num_steps=3, **flow))
    cfg = replace(cfg, transfusion=transfusion or TransfusionConfig())
    text = TextTokenizer.train(CORPUS, cfg.text_vocab_size)
    image = PixelPatches(PatchConfig(patch=16, shift=0.5, scale=0.5))
    cfg = replace(cfg, model=replace(cfg.model, vocab_size=text.vocab_size), patches=image.config)
    return TransfusionModel(Parts(cfg, text, image)).eval()


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


def test_layout_masks_text_and_image_targets():
    model = make_model()
    batch, latents = model.layout(samples(2))
    assert latents.shape == (2, 16, 3 * 16 * 16)
    is_image = batch.modality == IMAGE
    # row 0: VQA, the image is context: no image slot is a target, the answer + <eos> are
    assert not (batch.loss_mask[0] & is_image[0]).any()
    answer = model.text_tok.encode("red") + [model.text_tok.eos_id]
    assert batch.ids[0][batch.loss_mask[0]].tolist() == answer
    # row 1: T2I, the 16 image slots and <eoi> are targets, no prompt text is
    assert int((batch.loss_mask[1] & is_image[1]).sum()) == 16
    assert batch.ids[1][batch.loss_mask[1] & ~is_image[1]].tolist() == [model.text_tok.eoi_id]
    # image slots carry the block id of their image; nothing else does
    assert bool(((batch.image_block > 0) == is_image).all())


def test_image_loss_only_on_target_images_and_text_loss_only_on_text():
    model = make_model()
    vqa = [s for s in samples(4) if s.task == "vqa"]
    t2i = [s for s in samples(4) if s.task == "t2i"]
    g = torch.Generator().manual_seed(0)
    out = model.loss(vqa, g)
    assert out["loss_image"] == 0.0 and out["loss_text"] > 0
    out = model.loss(t2i, torch.Generator().manual_seed(0))
    # zero-initialised velocity head: the image loss is E|x1 - x0|^2 > 0
    assert out["loss_image"] > 0.5
    weight = model.parts.config.flow.image_loss_weight
    assert torch.allclose(out["loss"], out["loss_text"] + weight * out["loss_image"])


def test_context_image_is_clean_and_changes_the_answer_logits():
    model = make_model()
    batch, latents = model.layout(samples(1))
    is_image = batch.modality == IMAGE
    x_clean = model.embed(batch.ids, is_image, model.image_embed(latents, torch.ones(1)))
    x_other = model.embed(batch.ids, is_image, model.image_embed(latents * 0, torch.ones(1)))
    assert not torch.equal(x_clean, x_other)
    assert torch.equal(x_clean[~is_image], x_other[~is_image])


def test_loss_falls_with_training():
    model = make_model()
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    data = samples(8)
    first = None
    for step in range(25):
        out = model.loss(data, torch.Generator().manual_seed(step % 2))
        first = first if first is not None else float(out["loss"].detach())
        opt.zero_grad()
        out["loss"].backward()
        opt.step()
    # Over init seeds 0-19 the worst ratio was 0.61; untrained (lr 0) 1.00 (AMD Zen 4, 2026-12-06).
    assert float(out["loss"].detach()) < 0.7 * first


@pytest.mark.parametrize("sampler", ["euler", "heun"])
def test_generate_images_shapes_and_determinism(sampler):
    model = make_model(sampler=sampler)
    prompts = [[Text("a red circle")], [Text("a blue square left of a green triangle")]]
    out = model.generate(prompts, "image", SamplingConfig(cfg_scale=2.0), seed=3)
    again = model.generate(prompts, "image", SamplingConfig(cfg_scale=2.0), seed=3)
    assert len(out) == 2 and all(o.pixels.shape == (64, 64, 3) for o in out)
    assert all(np.array_equal(a.pixels, b.pixels) for a, b in zip(out, again, strict=True))


def test_batched_generation_equals_single():
    model = make_model()
    # give the head weights so the prompt matters
    torch.nn.init.normal_(model.image_out.weight, std=0.02)
    prompts = [[Text("a red circle")], [Text("a blue square left of a green triangle")]]
    both = model._generate_images(prompts, SamplingConfig(cfg_scale=1.0), torch.Generator())
    for i, p in enumerate(prompts):
        g = torch.Generator()
        if i == 1:  # the batched call drew row 0's noise first
            torch.randn(1, 16, 768, generator=g)
        x = model._generate_images([p], SamplingConfig(cfg_scale=1.0), g)
        assert np.abs(x[0].pixels.astype(int) - both[i].pixels.astype(int)).max() <= 1


def test_answer_and_checkpoint_round_trip(tmp_path):
    model = make_model()
    answers = model.answer([rand_image(0), rand_image(1)], ["what color?", ""])
    assert len(answers) == 2 and all(isinstance(a, str) for a in answers)
    model.save_pretrained(tmp_path / "ckpt")
    loaded = TransfusionModel.from_pretrained(tmp_path / "ckpt")
    assert loaded.answer([rand_image(0), rand_image(1)], ["what color?", ""]) == answers
    assert loaded.image_tok.config == model.image_tok.config


def test_pixel_patches_round_trip_and_fit():
    tok = PixelPatches(PatchConfig(patch=8))
    images = torch.rand(3, 3, 64, 64) * 2 - 1
    lat = tok.encode(images)
    assert lat.shape == (3, 64, 192)
    assert torch.allclose(tok.decode(lat), images, atol=1e-6)
    fitted = tok.fit(images)
    z = fitted.encode(images)
    assert abs(float(z.mean())) < 1e-4 and abs(float(z.std()) - 1) < 1e-4
    assert torch.allclose(fitted.decode(z), images, atol=1e-5)
    with pytest.raises(ValueError, match="multiple"):
        PatchConfig(patch=7)


def test_pipeline_trains_and_loads_a_transfusion_run(tmp_path):
    from unimm.pipeline import load_checkpoint, train_run

    train_run(tmp_path, "tiny", ["recipe=transfusion", "train.steps=2"], progress=False)
    assert (tmp_path / "image_tokenizer" / "patches_config.json").is_file()
    model, run_dir = load_checkpoint(tmp_path)
    assert isinstance(model, TransfusionModel) and run_dir == tmp_path
    # the tokenizer was normalised on world images: mostly-white pixels, shift well above 0
    assert model.image_tok.config.shift > 0.3 and model.image_tok.config.scale < 1.0
    images = model.generate_images(["a red circle"], n_per_prompt=2)
    assert len(images[0]) == 2 and images[0][0].shape == (64, 64, 3)


def test_pipeline_trains_transfusion_on_vae_latents(tmp_path):
    from unimm.pipeline import load_checkpoint, train_run
    from unimm.tokenizers.vae import VAETokenizer

    overrides = [
        "recipe=transfusion",
        "continuous_tokenizer=vae",
        "vq_train.seconds=1",
        "train.steps=2",
    ]
    train_run(tmp_path, "tiny", overrides, progress=False)
    model, _ = load_checkpoint(tmp_path)
    assert isinstance(model.image_tok, VAETokenizer) and model.image_tok.config.scale != 1.0
    images = model.generate_images(["a red circle"], n_per_prompt=1)
    assert images[0][0].shape == (64, 64, 3)


def test_sampling_steps_override_the_checkpoint_steps():
    model = make_model()
    torch.nn.init.normal_(model.image_out.weight, std=0.05)
    p = [[Text("a red circle")]]
    three = model.generate(p, "image", SamplingConfig(steps=3), seed=0)[0].pixels
    default = model.generate(p, "image", SamplingConfig(), seed=0)[0].pixels  # config: 3 steps
    one = model.generate(p, "image", SamplingConfig(steps=1), seed=0)[0].pixels
    assert np.array_equal(three, default) and not np.array_equal(one, default)


def test_linear_patching_groups_p_by_p_cells_and_inverts():
    # With identity weights the in-projection is space-to-depth and the out-projection undoes it.
    x = torch.randn(2, 16, 3)  # a 4x4 grid of 3-channel cells
    inp = LinearPatching(3, 12, (4, 4), 2, inward=True)
    out = LinearPatching(12, 3, (4, 4), 2, inward=False)
    for lin in (inp, out):
        torch.nn.init.eye_(lin.weight)
        torch.nn.init.zeros_(lin.bias)
    tokens = inp(x)
    assert tokens.shape == (2, 4, 12)
    # token 0 holds grid cells (0, 0), (0, 1), (1, 0), (1, 1) and nothing else
    cells = x.view(2, 4, 4, 3)[:, :2, :2].reshape(2, 4, 3)
    assert torch.equal(tokens[:, 0].sort(-1).values, cells.flatten(1).sort(-1).values)
    assert torch.equal(out(tokens), x)
    one = LinearPatching(3, 5, (4, 4), 1, inward=True)
    assert torch.equal(one(x), torch.nn.functional.linear(x, one.weight, one.bias))


def test_unet_blocks_shapes_time_conditioning_and_zero_start():
    down, up = UNetDown(3, 16, 8, (4, 4), 2, 1), UNetUp(3, 16, 8, (4, 4), 2, 1)
    x, c = torch.randn(2, 16, 3), torch.randn(2, 16)
    tokens = down(x, c)
    assert tokens.shape == (2, 4, 16)
    assert not torch.allclose(tokens, down(x, c + 1))  # the time embedding reaches the tokens
    assert torch.equal(up(tokens, c), torch.zeros(2, 16, 3))  # zero-initialised last conv
    torch.nn.init.normal_(up.conv_out.weight, std=0.1)
    v = up(tokens, c)
    assert v.shape == (2, 16, 3) and not torch.allclose(v, up(tokens, c + 1))


@pytest.mark.parametrize("patching", ["linear", "unet"])
def test_patch_2_train_step_sample_and_checkpoint(tmp_path, patching):
    tf = TransfusionConfig(patching=patching, patch=2, unet_width=16)
    model = make_model(transfusion=tf)
    batch, latents = model.layout(samples(2))
    # a 4x4 grid in 2x2 patches: 4 sequence slots per image, the latents keep their 16 cells
    assert int((batch.modality == IMAGE).sum(1)[1]) == 4 and latents.shape[1] == 16
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    data, losses = samples(8), []
    for step in range(20):
        out = model.loss(data, torch.Generator().manual_seed(step % 2))
        losses.append(float(out["loss"].detach()))
        opt.zero_grad()
        out["loss"].backward()
        opt.step()
    # Over init seeds 0-19 the worst ratio was 0.61 (linear) and 0.55 (unet); untrained (lr 0)
    # 0.99-1.01 (AMD Zen 4, 2026-12-06).
    assert out["loss_image"] > 0 and losses[-1] < 0.7 * losses[0]
    model.eval()
    prompts = [[Text("a red circle")], [Text("a blue square left of a green triangle")]]
    images = model.generate(prompts, "image", SamplingConfig(cfg_scale=2.0), seed=1)
    assert all(o.pixels.shape == (64, 64, 3) for o in images)
    model.save_pretrained(tmp_path / "ckpt")
    loaded = TransfusionModel.from_pretrained(tmp_path / "ckpt")
    assert loaded.parts.config.transfusion == tf
    again = loaded.generate(prompts, "image", SamplingConfig(cfg_scale=2.0), seed=1)
    assert all(np.array_equal(a.pixels, b.pixels) for a, b in zip(images, again, strict=True))


def test_patching_options_are_checked():
    with pytest.raises(ValueError, match="does not divide"):
        make_model(transfusion=TransfusionConfig(patch=3))
    with pytest.raises(ValueError):
        TransfusionConfig(patching="conv")


def test_training_drops_the_text_condition_of_image_targets_only():
    # Classifier-free guidance: with train.cfg_dropout a text-to-image row loses its prompt (its
    # sequence is then the unconditional prompt <bos> <boi> the sampler uses), VQA rows never do.
    model = make_model()
    cfg = model.parts.config
    tok, data = model.text_tok, samples(6)
    for p_drop, dropped in ((0.0, False), (0.99, True)):
        model.parts.config = replace(cfg, train=replace(cfg.train, cfg_dropout=p_drop))
        batch, _ = model.layout(data, random.Random(0))
        for row, sample in zip(batch.ids.tolist(), data, strict=True):
            head = row[: row.index(tok.boi_id) + 1] if tok.boi_id in row else row
            prompt_text = [i for i in head if i not in (tok.bos_id, tok.boi_id)]
            if sample.task == "t2i":
                assert (head == [tok.bos_id, tok.boi_id]) == dropped
                assert bool(prompt_text) != dropped
            else:
                assert tok.decode([i for i in row if i != tok.pad_id]).count("what color?") == 1
    # without an rng (evaluation, prompts) nothing is dropped whatever the rate
    batch, _ = model.layout(data)
    assert (batch.ids[1, :2] != torch.tensor([tok.bos_id, tok.boi_id])).any()
