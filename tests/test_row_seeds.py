"""Per-row seeds: with seed=[s0, s1, ...] a prompt's output does not depend on its batch mates
(the server batches several users' requests into one generate call)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tests import (
    test_bagel,
    test_chameleon,
    test_ddit,
    test_diffusion_head,
    test_janus,
    test_janusflow,
    test_metaquery,
    test_transfusion,
)
from tests.test_discrete_diffusion_recipes import make as make_discrete
from unimm.data.sample import Image, Text
from unimm.paradigms import rng
from unimm.recipes.base import SamplingConfig
from unimm.recipes.registry import RECIPES

# The tiny models the recipes' own tests build.
BUILDERS = {
    "chameleon": test_chameleon.make_model,
    "showo": lambda: make_discrete("showo"),
    "mmada": lambda: make_discrete("mmada"),
    "transfusion": test_transfusion.make_model,
    "janusflow": test_janusflow.make_model,
    "mar": test_diffusion_head.make_model,
    "janus": test_janus.make_model,
    "metaquery": test_metaquery.make_model,
    "bagel": test_bagel.make_model,
    "ddit": test_ddit.make_model,
}

# Temperature 1 so that every sampler draws; guidance on for images, so that samplers that
# batch uncond rows with the prompts are covered.
IMAGE_SAMPLING = SamplingConfig(temperature=1.0, cfg_scale=3.0)
TEXT_SAMPLING = SamplingConfig(temperature=1.0, max_new_tokens=6)
SEEDS = [11, 5, 11]  # a repeated seed: each row still has its own generator, and its own output


# Recipes whose images are continuous latents. CPU matrix products round differently for a
# different number of rows (small GEMMs take another kernel), so a batched row's latents differ
# from the same row alone by float rounding (~1e-6), whatever the seeds: these compare within
# tolerance, and their noise (the part the seeds decide) is compared exactly by
# `test_continuous_noise_is_per_row_exactly`. Discrete codes and text ids compare exactly.
CONTINUOUS = {"transfusion", "janusflow", "mar", "metaquery", "bagel", "ddit"}


def record_decoder_input(model):
    """Untrained decoders map most codes / latents to near-identical pixels, so the tests read
    what the sampler produced (the decoder's input) as well as the pixels."""
    decode = model.image_tok.decode
    model.decoded = []

    def recording_decode(x):
        model.decoded.append(x.detach().clone())
        return decode(x)

    model.image_tok.decode = recording_decode
    return model


@pytest.fixture(scope="module", params=sorted(RECIPES))
def model(request):
    model = BUILDERS[request.param]()
    # Zero-initialised output layers (flow velocity, MAR head, adaLN gates) would make a
    # continuous image pure noise; random weights there make it depend on the prompt too.
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in model.parameters():
            if not p.any():
                p.copy_(0.1 * torch.randn(p.shape, generator=g))
    return record_decoder_input(model)


def test_every_recipe_is_covered():
    assert set(BUILDERS) == set(RECIPES)


def image_prompts():
    # Different lengths, so rows are padded differently in the batch than alone.
    return [
        [Text("a red circle")],
        [Text("a blue square left of a green triangle")],
        [Text("red")],
    ]


def text_prompts():
    return [
        [Image(test_chameleon.rand_image(0)), Text("what color?")],
        [Text("a blue square left of a green triangle")],
        [Image(test_chameleon.rand_image(1))],
    ]


def images(model, prompts, seed) -> list[tuple[np.ndarray, np.ndarray]]:
    """(sampled codes or latents, pixels) per prompt."""
    model.decoded.clear()
    out = model.generate(prompts, "image", IMAGE_SAMPLING, seed=seed)
    (sampled,) = model.decoded
    return [(x.numpy(), s.pixels) for x, s in zip(sampled, out, strict=True)]


def texts(model, prompts, seed) -> list[str]:
    return [s.text for s in model.generate(prompts, "text", TEXT_SAMPLING, seed=seed)]


def assert_same(a, b, recipe: str, exact: bool = False) -> None:
    """Text, or (codes or latents, pixels). `exact`: the same batch size, so the same kernels.
    Otherwise the decoder runs on another number of rows, and a pixel that sits on a rounding
    boundary may come out one level apart (tests/test_serve_batching.py sees it happen)."""
    if isinstance(a, str):
        assert a == b
        return
    if exact or recipe not in CONTINUOUS:
        assert np.array_equal(a[0], b[0])
    else:
        np.testing.assert_allclose(a[0], b[0], rtol=0, atol=1e-5)
    if exact:
        assert np.array_equal(a[1], b[1])
    else:
        assert np.abs(a[1].astype(int) - b[1].astype(int)).max() <= 1


@pytest.mark.parametrize("run,prompts", [(images, image_prompts), (texts, text_prompts)])
def test_row_equals_alone_with_its_seed(model, run, prompts):
    prompts = prompts()
    together = run(model, prompts, SEEDS)
    for p, s, row in zip(prompts, SEEDS, together, strict=True):
        alone = run(model, [p], [s])[0]
        assert_same(row, alone, model.recipe)
        # A batch of one draws the same stream with [s] as with s: same sizes, same kernels.
        assert_same(alone, run(model, [p], s)[0], model.recipe, exact=True)


@pytest.mark.parametrize("recipe", sorted(CONTINUOUS))
def test_continuous_noise_is_per_row_exactly(recipe):
    # With the zero-initialised velocity output the sampled latents are the seeds' noise alone
    # (and, for MAR, its random order), so they must match bit for bit.
    model = record_decoder_input(BUILDERS[recipe]())
    prompts = image_prompts()
    together = images(model, prompts, SEEDS)
    for p, s, row in zip(prompts, SEEDS, together, strict=True):
        assert_same(row, images(model, [p], [s])[0], recipe, exact=True)
        assert_same(row, images(model, [p], s)[0], recipe, exact=True)


def test_different_seeds_give_different_images(model):
    a, b = images(model, image_prompts()[:1] * 2, [1, 2])
    assert not np.array_equal(a[0], b[0])


def test_int_seed_keeps_one_stream_for_the_batch(model):
    # One stream over the batch, as before: two copies of a prompt still differ.
    a, b = images(model, image_prompts()[:1] * 2, 3)
    assert not np.array_equal(a[0], b[0])


@pytest.mark.parametrize(
    "seed,match",
    [
        ([1, 2], "3 prompts"),
        ([1, 2, 3, 4], "4 entries"),
        ([1, 2.0, 3], "entry 1 is float"),
        ([1, "2", 3], "entry 1 is str"),
        ([1, True, 3], "entry 1 is bool"),
        ("123", "int or a sequence"),
        (1.5, "int or a sequence"),
    ],
)
def test_bad_seeds_raise(model, seed, match):
    with pytest.raises(ValueError, match=match):
        model.generate(image_prompts(), "image", IMAGE_SAMPLING, seed=seed)


# ----------------------------------------------------------------------------- the helper


def test_row_draws_match_a_single_generator_per_row():
    gens = rng.make_rng([4, 9], 2)
    probs = torch.rand(2, 5, 7)
    draws = rng.rand((2, 3), gens), rng.randn((2, 17), gens), rng.categorical(probs, gens)
    for b, seed in enumerate([4, 9]):
        g = torch.Generator().manual_seed(seed)
        assert torch.equal(draws[0][b], torch.rand(3, generator=g))
        assert torch.equal(draws[1][b], torch.randn(17, generator=g))
        assert torch.equal(draws[2][b], torch.multinomial(probs[b], 1, generator=g).squeeze(-1))


def test_single_generator_draws_as_torch_does():
    probs = torch.rand(2, 5, 7)
    g, ref = torch.Generator().manual_seed(3), torch.Generator().manual_seed(3)
    assert torch.equal(rng.rand((2, 3), g), torch.rand(2, 3, generator=ref))
    assert torch.equal(rng.randn((2, 17), g), torch.randn(2, 17, generator=ref))
    flat = torch.multinomial(probs.flatten(0, 1), 1, generator=ref).view(2, 5)
    assert torch.equal(rng.categorical(probs, g), flat)


def test_row_count_mismatch_raises():
    gens = rng.make_rng([1, 2], 2)
    with pytest.raises(ValueError, match="2 row generators for 3 rows"):
        rng.rand((3, 4), gens)
    with pytest.raises(ValueError, match="do not split evenly"):
        rng.group_rows(5, gens)
