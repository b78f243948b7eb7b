"""MetaQuery recipe on tiny random parts: what a frozen LLM lets train, the decoder's null
condition, train/inference layouts agreeing, sampling, checkpoints, starting from a trained
understanding model, and the pipeline end to end."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch

from unimm.data.sample import Image, Sample, Text
from unimm.pipeline import describe_training
from unimm.presets import get_run_config
from unimm.recipes.base import SamplingConfig
from unimm.recipes.chameleon import ChameleonModel
from unimm.recipes.metaquery import MetaQueryModel, is_llm_param
from unimm.recipes.metaquery_config import MetaQueryConfig
from unimm.recipes.parts import Parts
from unimm.recipes.transfusion import TransfusionModel
from unimm.tokenizers.pixel_patches import PatchConfig, PixelPatches
from unimm.tokenizers.text import TextTokenizer
from unimm.tokenizers.vq import VQTokenizer
from unimm.train.config import TrainConfig
from unimm.train.trainer import make_optimizer

from .test_transfusion import CORPUS, rand_image, samples

TINY_MQ = dict(num_queries=8, decoder_dim=32, decoder_layers=2, decoder_heads=2)


def tiny_parts(recipe: str = "metaquery", overrides: list[str] = (), **mq) -> Parts:
    cfg = get_run_config("tiny", [f"recipe={recipe}", *overrides])
    cfg = replace(cfg, metaquery=MetaQueryConfig(**{**TINY_MQ, **mq}))
    cfg = replace(cfg, flow=replace(cfg.flow, num_steps=3))
    text = TextTokenizer.train(CORPUS, cfg.text_vocab_size)
    image = PixelPatches(PatchConfig(patch=16, shift=0.5, scale=0.5))
    cfg = replace(cfg, model=replace(cfg.model, vocab_size=text.vocab_size), patches=image.config)
    return Parts(cfg, text, image)


def make_model(seed: int = 0, overrides: list[str] = (), **mq) -> MetaQueryModel:
    torch.manual_seed(seed)
    return MetaQueryModel(tiny_parts("metaquery", overrides, **mq)).eval()


def wake(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Random values in the zero-initialised layers (velocity output, adaLN gates), which
    otherwise block every gradient upstream of them at step 0."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            if not p.any():
                p.copy_(0.1 * torch.randn(p.shape, generator=g))
    return model


def backward(model: MetaQueryModel) -> dict:
    model.train()
    out = model.loss(samples(8), torch.Generator().manual_seed(0))  # t2i and VQA samples
    out["loss"].backward()
    return out


def grad_norm(p: torch.nn.Parameter) -> float:
    return 0.0 if p.grad is None else float(p.grad.norm())


def test_frozen_llm_trains_only_queries_connector_and_decoder():
    model = wake(make_model(freeze_llm=True))
    backward(model)
    named = dict(model.named_parameters())
    llm = {n: p for n, p in named.items() if is_llm_param(n)}
    rest = {n: p for n, p in named.items() if not is_llm_param(n)}
    assert any(n.startswith("backbone.layers.") for n in llm) and "image_in.weight" in llm
    assert all(not p.requires_grad and p.grad is None for p in llm.values())
    # The gradient reaches the queries through the frozen backbone.
    assert grad_norm(model.queries) > 0
    assert all(grad_norm(p) > 0 for n, p in rest.items() if n.startswith(("connector", "decoder")))
    before = {n: p.detach().clone() for n, p in named.items()}
    opt = make_optimizer(model, TrainConfig(lr=1e-2, weight_decay=0.1))
    opt.step()
    assert all(torch.equal(before[n], p) for n, p in llm.items())  # bit-identical
    assert not torch.equal(before["queries"], model.queries)
    assert not torch.equal(before["decoder.out.weight"], model.decoder.out.weight)


def test_trainable_llm_learns_from_both_losses():
    model = wake(make_model(freeze_llm=False))
    out = backward(model)
    assert "loss_text" in out and "loss_image" in out
    for name in ("backbone.tok_embeddings.weight", "backbone.layers.0.attn.wqkv.weight",
                 "backbone.output.weight", "image_in.weight", "queries"):  # fmt: skip
        assert grad_norm(dict(model.named_parameters())[name]) > 0, name


def solid_samples() -> list[Sample]:
    """Three prompts drawing three flat colours (a flow the decoder can learn in a few steps),
    and VQA samples for the text loss."""
    colours = [("a red circle", (255, 0, 0)), ("red", (0, 255, 0)), ("what color?", (0, 0, 255))]
    out = []
    for i, (prompt, colour) in enumerate(colours):
        out.append(
            Sample([Text(prompt), Image(np.full((64, 64, 3), colour, np.uint8))], (1,), "t2i")
        )
        out.append(Sample([Image(rand_image(i)), Text("what color?"), Text("red")], (2,), "vqa"))
    return out


@pytest.mark.parametrize("freeze", [False, True])
def test_loss_falls_with_training(freeze):
    model = make_model(freeze_llm=freeze)
    model.train()
    opt = make_optimizer(model, TrainConfig(lr=3e-3, weight_decay=0.0))
    data = solid_samples()
    losses = []
    for step in range(20):
        out = model.loss(data, torch.Generator().manual_seed(step % 2))
        losses.append(float(out["loss"].detach()))
        opt.zero_grad()
        out["loss"].backward()
        opt.step()
    # Over init seeds 0-19 the worst ratio was 0.25 (trainable) and 0.24 (frozen); untrained
    # (lr 0) 0.99-1.01 (AMD Zen 4, 2026-12-06).
    assert losses[-1] < 0.5 * losses[0]


def test_queries_see_the_prompt_alike_in_training_and_generation():
    # The training pass (right padding, full forward) and generation's (left padding, prompt in
    # the KV cache, queries after it) give the same query features.
    model = wake(make_model())
    prompts = [[Text("a red circle")], [Image(rand_image(1)), Text("make the circle green")]]
    train = [Sample([*p, Image(rand_image(2))], (len(p),), "t2i") for p in prompts]
    cond, x1, _, _ = model.condition(train)
    assert cond.shape == (2, 8, 32) and x1.shape == (2, 16, model.image_tok.latent_dim)
    torch.testing.assert_close(model.query_features(prompts), cond, atol=1e-5, rtol=1e-5)
    # and the features depend on the prompt
    assert not torch.allclose(cond[0], cond[1], atol=1e-3)


def record_decoder_conditions(model: MetaQueryModel) -> list[torch.Tensor]:
    seen: list[torch.Tensor] = []
    forward = model.decoder.forward

    def recording(x, t, cond):
        seen.append(cond.detach().clone())
        return forward(x, t, cond)

    model.decoder.forward = recording
    return seen


def test_guidance_unconditional_row_is_the_null_condition():
    model = wake(make_model())
    seen = record_decoder_conditions(model)
    prompts = [[Text("a red circle")], [Text("a blue square left of a green triangle")]]
    model.generate(prompts, "image", SamplingConfig(cfg_scale=3.0), seed=0)
    assert len(seen) == 3  # one decoder call per Euler step, cond and uncond rows together
    null = model.null_cond.detach().expand(2, -1, -1)
    for cond in seen:
        assert torch.equal(cond[2:], null)
        torch.testing.assert_close(cond[:2], model.query_features(prompts))
    seen.clear()
    model.generate(prompts, "image", SamplingConfig(cfg_scale=1.0), seed=0)
    assert all(cond.shape[0] == 2 for cond in seen)  # no guidance, no uncond rows


@pytest.mark.parametrize("p_drop,dropped", [(0.0, 0), (0.95, 4)])
def test_condition_dropout_trains_the_null_condition(p_drop, dropped):
    model = wake(make_model(overrides=[f"train.cfg_dropout={p_drop}"]))
    seen = record_decoder_conditions(model)
    model.loss(samples(8), torch.Generator().manual_seed(0))  # 4 image targets
    (cond,) = seen
    is_null = [torch.equal(c, model.null_cond.detach()) for c in cond]
    assert len(is_null) == 4 and sum(is_null) == dropped


def test_generate_and_checkpoint_round_trip(tmp_path):
    model = wake(make_model(freeze_llm=True))
    prompts = [[Text("a red circle")], [Text("a blue square left of a green triangle")]]
    out = model.generate(prompts, "image", SamplingConfig(cfg_scale=2.0), seed=1)
    assert len(out) == 2 and all(o.pixels.shape == (64, 64, 3) for o in out)
    assert not np.array_equal(out[0].pixels, out[1].pixels)
    model.save_pretrained(tmp_path / "ckpt")
    loaded = MetaQueryModel.from_pretrained(tmp_path / "ckpt")
    assert loaded.parts.config.metaquery.freeze_llm and loaded.queries.requires_grad
    assert not any(p.requires_grad for n, p in loaded.named_parameters() if is_llm_param(n))
    again = loaded.generate(prompts, "image", SamplingConfig(cfg_scale=2.0), seed=1)
    assert all(np.array_equal(a.pixels, b.pixels) for a, b in zip(out, again, strict=True))
    question = ([rand_image(0)], ["what color?"])
    assert loaded.answer(*question) == model.answer(*question)


def test_init_llm_starts_from_a_trained_transfusion_model(tmp_path):
    torch.manual_seed(1)
    source = TransfusionModel(tiny_parts("transfusion"))
    source.save_pretrained(tmp_path / "tf" / "checkpoint")  # a run directory also works
    model = make_model(init_llm=str(tmp_path / "tf"), freeze_llm=True)
    src = source.state_dict()
    for name, value in model.state_dict().items():
        if is_llm_param(name):
            assert torch.equal(value, src[name]), name
    question = ([rand_image(0)], ["what color?"])
    assert model.answer(*question) == source.answer(*question)  # understands as its source
    assert MetaQueryModel.init_checkpoint(model.parts.config) == tmp_path / "tf" / "checkpoint"
    note = describe_training({}, model.describe())
    assert "frozen" in note and "not learned by this run" in note
    # A checkpoint of another shape, tokenizer or image path is refused, saying why.
    with pytest.raises(ValueError, match="another model config .*n_layers"):
        make_model(init_llm=str(tmp_path / "tf"), overrides=["model.n_layers=1"])
    torch.manual_seed(1)
    other = tiny_parts("transfusion")
    other.image = PixelPatches(PatchConfig(patch=16, shift=0.4, scale=0.5))
    other.config = replace(other.config, patches=other.image.config)
    TransfusionModel(other).save_pretrained(tmp_path / "tf2")
    with pytest.raises(ValueError, match="another image tokenizer"):
        make_model(init_llm=str(tmp_path / "tf2"))
    cfg = get_run_config("tiny")
    text = TextTokenizer.train(CORPUS, cfg.text_vocab_size)
    vq = VQTokenizer(cfg.vq).eval()
    cfg = replace(cfg, model=replace(cfg.model, vocab_size=text.vocab_size + vq.codebook_size))
    ChameleonModel(Parts(cfg, text, vq)).save_pretrained(tmp_path / "ar")
    with pytest.raises(ValueError, match="holds a 'chameleon' model"):
        make_model(init_llm=str(tmp_path / "ar"))


def test_pipeline_trains_a_frozen_metaquery_on_a_trained_run(tmp_path):
    from unimm.pipeline import train_run

    steps = ["train.steps=2", "train.batch_size=4", "metaquery.num_queries=4",
             "metaquery.decoder_dim=32", "metaquery.decoder_layers=1",
             "metaquery.decoder_heads=2"]  # fmt: skip
    first = train_run(tmp_path / "und", "tiny", ["recipe=metaquery", *steps], progress=False)
    frozen = train_run(
        tmp_path / "gen",
        "tiny",
        [
            "recipe=metaquery",
            *steps,
            f"metaquery.init_llm={tmp_path / 'und'}",
            "metaquery.freeze_llm=true",
            "train.tasks=t2i:1.0",
        ],  # fmt: skip
        progress=False,
    )
    a, b = first.state_dict(), frozen.state_dict()
    assert all(torch.equal(a[n], b[n]) for n in a if is_llm_param(n))  # trained, yet unchanged
    assert not torch.equal(a["queries"], b["queries"])
    assert (tmp_path / "gen" / "image_tokenizer").is_dir()
    assert frozen.text_tok._tok.get_vocab() == first.text_tok._tok.get_vocab()
