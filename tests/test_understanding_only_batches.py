"""Every recipe trains on a batch with no image to draw (VQA and the text-only reason task): a
mixture can give a batch nothing but understanding samples."""

from __future__ import annotations

from itertools import islice

import pytest
import torch

from tests.test_conversation import make_any
from unimm.recipes.registry import RECIPES
from unimm.world.tasks import world_samples


@pytest.mark.parametrize("recipe", sorted(RECIPES))
def test_a_batch_without_image_targets_trains(recipe):
    model = make_any(recipe).train()
    batch = list(islice(world_samples("train", 0, {"reason": 0.5, "vqa": 0.5}), 4))
    assert {s.task for s in batch} == {"reason", "vqa"}
    loss = model.loss(batch, torch.Generator().manual_seed(0))["loss"]
    assert torch.isfinite(loss)
    loss.backward()  # and it is a loss of the model (or an exact zero of it when frozen)
