"""flow.background_weight: the flow recipes' velocity loss counts background patches less
(unimm.paradigms.weighting, unimm.data.images.background_cells)."""

from __future__ import annotations

import importlib

import numpy as np
import pytest
import torch

from unimm.data.images import background_cells
from unimm.data.sample import Image, Sample, Text
from unimm.paradigms.flow import FlowMatching
from unimm.presets import get_run_config

FLOW_RECIPES = ("transfusion", "mar", "janusflow", "bagel", "ddit", "metaquery")
TEST_MODULE = {"mar": "tests.test_diffusion_head"}


def scene(seed: int) -> np.ndarray:
    """A white 64 x 64 canvas with one coloured 20 x 20 square at a random place."""
    rng = np.random.default_rng(seed)
    image = np.full((64, 64, 3), 255, dtype=np.uint8)
    y, x = rng.integers(2, 42, size=2)
    image[y : y + 20, x : x + 20] = rng.integers(0, 200, size=3)
    return image


def t2i_batch(n: int = 4) -> list[Sample]:
    return [
        Sample([Text("a red circle"), Image(scene(i))], targets=(1,), task="t2i") for i in range(n)
    ]


def test_background_cells_flag_only_cells_of_pure_background():
    image = np.full((64, 64, 3), 255, dtype=np.uint8)
    image[0:20, 0:20] = (200, 0, 0)  # reaches cells (0, 0), (0, 1), (1, 0), (1, 1) of a 4 x 4 grid
    image[40:44, 40:44] = (0, 0, 200)  # inside cell (2, 2)
    cells = background_cells(image[None], (4, 4))[0].reshape(4, 4)
    expected = np.ones((4, 4), dtype=bool)
    expected[:2, :2] = False
    expected[2, 2] = False
    assert (cells == expected).all()
    # a photograph-like image has no uniform border: nothing is background
    noisy = np.random.default_rng(0).integers(0, 256, (1, 64, 64, 3), dtype=np.uint8)
    assert not background_cells(noisy, (8, 8)).any()
    # a black canvas is its own background
    assert background_cells(np.zeros((1, 64, 64, 3), np.uint8), (8, 8)).all()
    with pytest.raises(ValueError, match="does not divide"):
        background_cells(image[None], (5, 5))


def test_weighted_velocity_loss_is_the_weighted_mean_of_token_errors():
    pred, target = torch.randn(2, 3, 4), torch.randn(2, 3, 4)
    per_token = (pred - target).pow(2).mean(-1)
    uniform = torch.full((2, 3), 1 / 6)
    torch.testing.assert_close(
        FlowMatching.loss(pred, target, uniform), FlowMatching.loss(pred, target)
    )
    weight = torch.rand(2, 3)
    weight = weight / weight.sum()
    torch.testing.assert_close(FlowMatching.loss(pred, target, weight), (per_token * weight).sum())
    with pytest.raises(ValueError, match="weight"):
        FlowMatching.loss(pred, target, torch.ones(3, 2))


def test_bad_background_weight_is_refused():
    with pytest.raises(ValueError, match="flow.background_weight"):
        get_run_config("tiny", ["recipe=transfusion", "flow.background_weight=-1"])


@pytest.mark.parametrize("recipe", FLOW_RECIPES)
def test_every_flow_recipe_weighs_background_patches(recipe):
    module = importlib.import_module(TEST_MODULE.get(recipe, f"tests.test_{recipe}"))
    model = module.make_model()
    model.train()
    batch = t2i_batch()

    def image_loss(weight: float) -> torch.Tensor:
        model.parts.config.flow.background_weight = weight
        return model.loss(batch, torch.Generator().manual_seed(0))["loss_image"]

    plain = image_loss(1.0)
    # the weighted path at a weight of (almost) one is the plain mean
    torch.testing.assert_close(image_loss(1.0 - 1e-7), plain, rtol=1e-4, atol=1e-6)
    assert not torch.isclose(image_loss(0.1), plain, rtol=1e-3)
