"""Dual Diffusion (D-DiT) on tiny random parts: the MM-DiT backbone's time modulation, joint
training, the two samplers (each keeps the other modality's clean inputs fixed), guidance on
both sides, batched = single sampling, checkpoints and the pipeline."""

from __future__ import annotations

import random
from dataclasses import replace

import numpy as np
import pytest
import torch

from unimm.data.sample import Image, Sample, Text
from unimm.data.sequence import IMAGE
from unimm.model.config import tiny
from unimm.model.mmdit import MMDiTTransformer
from unimm.model.mot import MoTTransformer
from unimm.presets import get_run_config
from unimm.recipes.base import SamplingConfig
from unimm.recipes.ddit import DDiTModel
from unimm.recipes.ddit_config import DDiTConfig
from unimm.recipes.parts import Parts
from unimm.tokenizers.pixel_patches import PatchConfig, PixelPatches
from unimm.tokenizers.text import TextTokenizer

from .test_transfusion import CORPUS, rand_image, samples

N, L = 16, 8  # image tokens (64 px in 16 px patches), answer slots


def make_model(seed: int = 0, **ddit) -> DDiTModel:
    torch.manual_seed(seed)
    cfg = get_run_config("tiny", ["recipe=ddit"])
    cfg = replace(
        cfg,
        ddit=DDiTConfig(**ddit),
        flow=replace(cfg.flow, num_steps=3),
        diffusion=replace(cfg.diffusion, answer_length=L, text_steps=4),
    )
    text = TextTokenizer.train(CORPUS, cfg.text_vocab_size)
    image = PixelPatches(PatchConfig(patch=16, shift=0.5, scale=0.5))
    # 196 tokens hold 10 context images with a short question and the answer block, but only 9
    # with an image to generate (the shared conversation test wants the two limits to differ).
    model_cfg = replace(cfg.model, vocab_size=text.vocab_size, max_seq_len=196)
    cfg = replace(cfg, model=model_cfg, patches=image.config)
    return DDiTModel(Parts(cfg, text, image)).eval()


def wake(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Random values in the zero-initialised weights (velocity output, every adaLN map and
    table), so that outputs depend on the prompt and the time modulation is live."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            if not p.any():
                p.copy_(0.1 * torch.randn(p.shape, generator=g))
    return model


def no_dropout(model: DDiTModel) -> DDiTModel:
    cfg = model.parts.config
    model.parts.config = replace(cfg, train=replace(cfg.train, cfg_dropout=0.0))
    model.ddit = replace(model.ddit, text_cfg_dropout=0.0)
    return model


def record_runs(model: DDiTModel) -> list[dict]:
    """Wrap `model.run` to record every network evaluation's inputs."""
    calls: list[dict] = []
    run = model.run

    def recording(x, valid, positions, is_image, noised, t):
        record = {"x": x, "valid": valid, "is_image": is_image, "noised": noised, "t": t}
        calls.append({k: v.detach().clone() for k, v in record.items()})
        return run(x, valid, positions, is_image, noised, t)

    model.run = recording
    return calls


# ----------------------------------------------------------------------------- backbone


def test_mmdit_modulates_noised_tokens_only():
    torch.manual_seed(0)
    cfg = tiny(qk_norm=True)
    mmdit = MMDiTTransformer(cfg)
    mot = MoTTransformer(cfg)
    mot.load_state_dict(mmdit.state_dict(), strict=False)  # the MoT's own weights
    B, T = 2, 12
    x = torch.randn(B, T, cfg.dim)
    gen = torch.zeros(B, T, dtype=torch.bool)
    gen[:, 4:10] = True
    noised = torch.zeros_like(gen)
    noised[0, 4:10] = noised[1, 10:] = True  # row 0: its image; row 1: text after it
    cond = torch.randn(B, cfg.dim)

    def run(model, **kw):
        with torch.no_grad():
            return model(None, embeds=x, gen=gen, return_hidden=True, **kw)

    ref = run(mot)
    # Untrained, every modulation is zero: exactly the MoT, noised tokens or not.
    assert torch.equal(run(mmdit), ref)
    assert torch.equal(run(mmdit, cond=cond, noised=noised), ref)
    wake(mmdit)
    # With live modulation, clean tokens still see none of it when nothing is noised ...
    assert torch.equal(run(mmdit, cond=cond, noised=torch.zeros_like(noised)), ref)
    # ... and the noised tokens change (and, through the joint attention, the others too).
    out = run(mmdit, cond=cond, noised=noised)
    assert ((out - ref)[noised].abs().amax(-1) > 1e-3).all()
    # The condition acts through the noised tokens only: a row with none ignores its own.
    clean_row1 = noised.clone()
    clean_row1[1] = False
    ref1 = run(mmdit, cond=cond, noised=clean_row1)
    other = torch.stack([cond[0], torch.randn(cfg.dim)])
    assert torch.equal(run(mmdit, cond=other, noised=clean_row1), ref1)
    assert torch.equal(ref1[1], ref[1])  # rows do not attend to each other
    with pytest.raises(ValueError, match="together"):
        run(mmdit, cond=cond)


def test_expert_parameters_split_the_modulation_too():
    b = make_model().backbone
    und, gen = b.expert_params("und"), b.expert_params("gen")
    assert not {id(p) for p in und} & {id(p) for p in gen}
    assert sum(p.numel() for p in und) == sum(p.numel() for p in gen)
    describe = make_model().describe()
    assert describe["active_parameters"] < describe["parameters"]


def test_the_flop_budget_counts_the_parameters_a_token_passes_through():
    from unimm.train.schedule import flop_parameters

    model = make_model()
    d = model.describe()
    trained = sum(p.numel() for p in model.parameters() if p.requires_grad)
    # a token runs through its own modality's tower: the other tower's weights are not its FLOPs
    assert flop_parameters(model) == trained - (d["parameters"] - d["active_parameters"])
    assert flop_parameters(model) < trained


# ----------------------------------------------------------------------------- training


def same(a: list, b: list) -> bool:
    """Segment lists equal (images by their pixels)."""
    if [type(x) for x in a] != [type(y) for y in b]:
        return False
    return all(
        np.array_equal(x.pixels, y.pixels) if isinstance(x, Image) else x == y
        for x, y in zip(a, b, strict=True)
    )


def interleaved() -> Sample:
    a, b = Image(rand_image(0)), Image(rand_image(1))
    segs = [Text("a red circle"), a, Text("make it green"), b, Text("what color?"), Text("red")]
    return Sample(segs, (1, 3, 5), "interleaved")


def test_each_sample_trains_one_target_cut_after_it():
    model = no_dropout(make_model())
    seen = set()
    for seed in range(30):
        s, drop = model.training_sample(interleaved(), random.Random(seed))
        (k,) = s.targets
        assert k == len(s.segments) - 1 and not drop
        assert same(s.segments, interleaved().segments[: k + 1])  # earlier targets: plain context
        seen.add(k)
    assert seen == {1, 3, 5}
    # An earlier text target is laid out as a reply (<assistant> ... <eos>), not user text.
    qa = Sample(
        [Image(rand_image(0)), Text("what?"), Text("red"), Image(rand_image(1))], (2, 3), "x"
    )
    cuts = [model.training_sample(qa, random.Random(i))[0] for i in range(20)]
    s = next(s for s in cuts if len(s.segments) == 4)
    assert s.segments[2] == Text("red", role="assistant")


def test_condition_dropout_on_both_sides():
    model = make_model(text_cfg_dropout=0.999)
    cfg = model.parts.config
    model.parts.config = replace(cfg, train=replace(cfg.train, cfg_dropout=0.999))
    t2i, vqa = samples(2)[1], samples(2)[0]
    assert t2i.task == "t2i" and vqa.task == "vqa"
    s, drop = model.training_sample(t2i, random.Random(0))
    assert drop and same(s.segments, t2i.segments)  # the builder empties its text
    s, drop = model.training_sample(vqa, random.Random(0))
    assert not drop and same(s.segments, vqa.segments[1:]) and s.targets == (1,)  # image removed
    batch, latents = model.build([t2i, vqa], random.Random(0))
    tok = model.text_tok
    assert latents.shape[0] == 1  # the t2i target; the VQA image was dropped
    assert batch.ids[0, :2].tolist() == [tok.bos_id, tok.boi_id]  # no prompt text
    no_dropout(model)
    s, drop = model.training_sample(t2i, random.Random(0))
    assert same(s.segments, t2i.segments) and s.targets == t2i.targets and not drop


def test_training_keeps_the_conditioning_modality_clean():
    model = no_dropout(make_model())
    calls = record_runs(model)
    data = samples(4)  # vqa, t2i, vqa, t2i
    model.loss(data, torch.Generator().manual_seed(0))
    (call,) = calls
    batch, latents = model.build(data, random.Random(0))
    x, is_image, noised = call["x"], call["is_image"], call["noised"]
    assert torch.equal(is_image, batch.modality == IMAGE)
    clean_images = model.image_embed(latents)  # (M, N, D): rows 0 and 2's images are context
    with torch.no_grad():
        words = model.backbone.tok_embeddings(batch.ids)
    for b, sample in enumerate(data):
        img = is_image[b]
        m = int(is_image[:b].sum()) // N  # index of this row's image
        if sample.task == "t2i":
            # The noised image is the target; every text token is the prompt's, unmasked.
            assert torch.equal(noised[b], batch.loss_mask[b] & img)
            assert torch.equal(x[b][~img], words[b][~img])
            assert not torch.allclose(x[b][img], clean_images[m], atol=1e-3)
            assert 0 < float(call["t"][b]) < 1
        else:
            # The image is clean (the latents themselves), only the answer slots are noised.
            assert torch.equal(x[b][img], clean_images[m].detach())
            assert torch.equal(noised[b], batch.loss_mask[b] & ~img)
            assert int(noised[b].sum()) == L


def test_both_losses_fall_on_a_fixed_batch():
    model = make_model().train()
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    data = samples(8)
    image, text = [], []
    for step in range(30):
        out = model.loss(data, torch.Generator().manual_seed(step % 2))
        image.append(float(out["loss_image"]))
        text.append(float(out["loss_text"]))
        opt.zero_grad()
        out["loss"].backward()
        opt.step()
    # Steps alternate between two fixed draws of noise and masks: compare like with like.
    assert image[-2] < 0.8 * image[0] and image[-1] < 0.8 * image[1]
    assert text[-2] < 0.5 * text[0] and text[-1] < 0.5 * text[1]
    w = model.ddit
    assert torch.allclose(
        out["loss"].detach(), w.image_loss_weight * out["loss_image"] + out["loss_text"]
    )


def test_loss_weights_are_config_fields():
    data = samples(4)
    a = make_model().loss(data, torch.Generator().manual_seed(0))
    b = make_model(image_loss_weight=1.0, text_loss_weight=2.0).loss(
        data, torch.Generator().manual_seed(0)
    )
    assert torch.equal(a["loss_image"], b["loss_image"])
    assert torch.allclose(b["loss"], b["loss_image"] + 2.0 * b["loss_text"])
    with pytest.raises(ValueError, match="loss weights"):
        DDiTConfig(image_loss_weight=0.0, text_loss_weight=0.0)


# ----------------------------------------------------------------------------- sampling


def test_captioning_reads_the_clean_image_at_every_step():
    model = wake(make_model())
    calls = record_runs(model)
    prompts = [[Image(rand_image(0)), Text("what color?")], [Image(rand_image(1))]]
    guided = SamplingConfig(temperature=0.0, text_cfg_scale=2.0)
    out = model.generate(prompts, "text", guided)
    assert len(out) == 2 and all(isinstance(t, Text) for t in out)
    assert len(calls) == 4  # diffusion.text_steps
    latents = model.encode_images([rand_image(0), rand_image(1)])
    clean = model.image_embed(latents).detach()
    tok = model.text_tok
    for call in calls:
        x, is_image, noised = call["x"], call["is_image"], call["noised"]
        assert x.shape[0] == 4  # two prompts, then the two without their images
        assert int(is_image[:2].sum()) == 2 * N and not is_image[2:].any()
        # The images fed to the network are exactly the clean latents' tokens, every step.
        assert torch.equal(x[:2][is_image[:2]].view(2, N, -1), clean)
        # Only the answer block is noised: the last L columns.
        assert not noised[:, :-L].any() and noised[:, -L:].all()
    # The answer block unmasks from all masks: t = 1 - masked fraction rises with the steps.
    assert [float(c["t"][0]) for c in calls] == [0.0, 0.25, 0.5, 0.75]
    mask = model.backbone.tok_embeddings.weight[tok.mask_id]
    first = calls[0]["x"][:, -L:]
    assert torch.equal(first, mask.expand_as(first).detach())
    # Guidance is off by default: one row per prompt.
    calls.clear()
    model.generate(prompts, "text", SamplingConfig(temperature=0.0))
    assert all(c["x"].shape[0] == 2 for c in calls)


def test_text_to_image_keeps_the_prompt_at_every_step():
    model = wake(make_model())
    calls = record_runs(model)
    prompts = [[Text("a red circle")], [Text("a blue square left of a green triangle")]]
    out = model.generate(prompts, "image", SamplingConfig(cfg_scale=3.0), seed=0)
    assert len(out) == 2 and out[0].pixels.shape == (64, 64, 3)
    assert len(calls) == 3  # flow.num_steps
    tok = model.text_tok
    ids = [[tok.bos_id, *tok.encode(p[0].text), tok.boi_id] for p in prompts]
    with torch.no_grad():
        words = [model.backbone.tok_embeddings(torch.tensor(r)) for r in ids]
    times = []
    for call in calls:
        x, valid, noised = call["x"], call["valid"], call["noised"]
        assert x.shape[0] == 4  # two prompts, then their text-free copies
        span = slice(x.shape[1] - 1 - N, x.shape[1] - 1)  # <boi> span <eoi> end every row
        for r, w in enumerate(words):
            P = x.shape[1] - 1 - N
            assert torch.equal(x[r, P - len(w) : P], w)  # the prompt, exactly, every step
            assert int(valid[r].sum()) == len(w) + N + 1
            assert int(valid[r + 2].sum()) == 2 + N + 1  # <bos> <boi> span <eoi>: no text
        assert noised[:, span].all() and int(noised.sum()) == 4 * N
        assert call["is_image"][:, span].all() and int(call["is_image"].sum()) == 4 * N
        times.append(float(call["t"][0]))
    assert times == [0.0, pytest.approx(1 / 3), pytest.approx(2 / 3)]


def test_semi_autoregressive_blocks_fill_left_to_right():
    model = wake(make_model())
    calls = record_runs(model)
    prompts = [[Image(rand_image(0)), Text("what color?")], [Text("a red circle")]]
    greedy = SamplingConfig(temperature=0.0, text_blocks=2)  # two blocks of 4, 2 steps each
    out = model.generate(prompts, "text", greedy)
    mask = model.backbone.tok_embeddings.weight[model.text_tok.mask_id]
    counts = [
        (c["x"][:, -L:] == mask).all(-1).view(2, 2, 4).sum(-1).tolist() for c in calls
    ]  # (B, block) masked slots at each step's input
    assert counts == [[[4, 4]] * 2, [[2, 4]] * 2, [[0, 4]] * 2, [[0, 2]] * 2]
    assert all(isinstance(t, Text) for t in out)
    with pytest.raises(ValueError, match="divide"):
        model.generate(prompts, "text", replace(greedy, text_blocks=3))


def test_batched_sampling_equals_single():
    model = wake(make_model())
    image_prompts = [[Text("a red circle")], [Text("a blue square left of a green triangle")]]
    text_prompts = [[Image(rand_image(0)), Text("what color?")], [Image(rand_image(1))]]
    decoded = []
    decode = model.image_tok.decode
    model.image_tok.decode = lambda x: decoded.append(x.clone()) or decode(x)
    for sampling in (SamplingConfig(cfg_scale=3.0), SamplingConfig(cfg_scale=1.0)):
        both = model.generate(image_prompts, "image", sampling, seed=[4, 7])
        together = decoded.pop()
        for r, (p, s) in enumerate(zip(image_prompts, [4, 7], strict=True)):
            alone = model.generate([p], "image", sampling, seed=[s])
            # The noise is the row's own (exact); the network's float rounding is not batch
            # invariant (CPU GEMMs pick other kernels for other row counts and the shorter
            # prompt is left-padded), so the latents agree to ~1e-6, the pixels to one level.
            torch.testing.assert_close(decoded.pop()[0], together[r], rtol=0, atol=1e-5)
            diff = np.abs(alone[0].pixels.astype(int) - both[r].pixels.astype(int))
            assert diff.max() <= 1
    for sampling in (
        SamplingConfig(temperature=0.0),
        SamplingConfig(temperature=1.0, text_cfg_scale=2.0),
    ):
        both = model.generate(text_prompts, "text", sampling, seed=[4, 7])
        for r, (p, s) in enumerate(zip(text_prompts, [4, 7], strict=True)):
            # Token choices absorb the rounding (a draw flips only at a tie): exact.
            assert model.generate([p], "text", sampling, seed=[s])[0] == both[r]


def test_checkpoint_round_trip_gives_identical_outputs(tmp_path):
    model = wake(make_model())
    model.save_pretrained(tmp_path / "ckpt")
    loaded = DDiTModel.from_pretrained(tmp_path / "ckpt")
    assert loaded.parts.config == model.parts.config
    data = samples(4)
    a = model.loss(data, torch.Generator().manual_seed(3))
    b = loaded.loss(data, torch.Generator().manual_seed(3))
    assert torch.equal(a["loss"], b["loss"])
    prompts = [[Text("a red circle")], [Image(rand_image(1)), Text("make it green")]]
    sampling = SamplingConfig(cfg_scale=2.0)
    for x, y in zip(
        model.generate(prompts, "image", sampling, seed=1),
        loaded.generate(prompts, "image", sampling, seed=1),
        strict=True,
    ):
        assert np.array_equal(x.pixels, y.pixels)
    sampling = SamplingConfig(temperature=1.0, text_cfg_scale=2.0)
    questions = [[Image(rand_image(0)), Text("what color?")], [Image(rand_image(2))]]
    assert model.generate(questions, "text", sampling, seed=5) == loaded.generate(
        questions, "text", sampling, seed=5
    )


def test_pipeline_trains_and_loads_a_ddit_run(tmp_path):
    from unimm.pipeline import load_checkpoint, train_run

    overrides = ["recipe=ddit", "train.steps=2", "ddit.text_cfg_scale=1.5"]
    train_run(tmp_path, "tiny", overrides, progress=False)
    model, _ = load_checkpoint(tmp_path)
    assert isinstance(model, DDiTModel) and model.ddit.text_cfg_scale == 1.5
    assert isinstance(model.image_tok, PixelPatches)
    images = model.generate_images(["a red circle"], n_per_prompt=2)
    assert len(images[0]) == 2 and images[0][0].shape == (64, 64, 3)
    assert isinstance(model.caption([images[0][0]])[0], str)


def test_text_guidance_scale_from_the_command_line():
    from unimm.cli import _parser, _sampling

    args = _parser().parse_args(["chat", "run", "--text-cfg", "2.5", "--text-blocks", "2"])
    sampling = _sampling(args)
    assert sampling.text_cfg_scale == 2.5 and sampling.text_blocks == 2
    assert _sampling(_parser().parse_args(["generate", "run", "x"])).text_cfg_scale is None
