"""The empty canvas of a tokenizer's data (VQConfig.background): white for the world, the
data's own uniform border colour for user data, none for data without one (photographs)."""

from __future__ import annotations

from itertools import islice

import numpy as np
import pytest
import torch

from tests.test_chameleon_loss_options import make_model
from unimm.data.images import uniform_background
from unimm.tokenizers.vq import VQ_PRESETS, VQConfig, VQTokenizer
from unimm.train.tokenizer_trainer import train_vq
from unimm.world.render import render
from unimm.world.tasks import world_samples


def world_images(n: int) -> np.ndarray:
    return np.stack([render(s.meta["scene"]) for s in islice(world_samples("train", 0), n)])


def test_uniform_background_of_scenes_drawings_and_photos():
    scenes = world_images(16)
    assert uniform_background(scenes) == (255, 255, 255)
    assert uniform_background(255 - scenes) == (0, 0, 0)  # white-on-black drawings
    noise = np.random.default_rng(0).integers(0, 256, (8, 32, 32, 3), dtype=np.uint8)
    assert uniform_background(noise) is None
    with pytest.raises(ValueError, match="expected"):
        uniform_background(scenes[0])


def test_background_is_saved_with_the_tokenizer_and_checked(tmp_path):
    for colour in ((0, 0, 0), None):
        tok = VQTokenizer(VQ_PRESETS["tiny"]())
        tok.config.background = colour
        tok.save_pretrained(tmp_path / str(colour))
        assert VQTokenizer.from_pretrained(tmp_path / str(colour)).config.background == colour
    assert VQConfig(background=[1, 2, 3]).background == (1, 2, 3)  # as JSON gives it back
    with pytest.raises(ValueError, match="background must be"):
        VQConfig(background=(0, 0, 300))


def test_a_tokenizer_trained_on_given_images_takes_their_background(tmp_path):
    drawings = 255 - world_images(32)
    m = train_vq(VQ_PRESETS["tiny"](), tmp_path, steps=2, progress=False,
                 images=iter(list(drawings) * 4), eval_images=drawings)  # fmt: skip
    assert VQTokenizer.from_pretrained(tmp_path).config.background == (0, 0, 0), m
    # the world's own training keeps white
    train_vq(VQ_PRESETS["tiny"](), tmp_path / "w", steps=1, progress=False)
    assert VQTokenizer.from_pretrained(tmp_path / "w").config.background == (255, 255, 255)


def test_the_model_weighs_and_guides_the_data_s_background():
    model = make_model(background_weight=0.3)
    white = model.background_codes()
    assert white and white == sorted(set(white))
    model.image_tok.config.background = (0, 0, 0)
    model._background = None
    black = model.background_codes()
    blank = torch.full((1, 3, 64, 64), -1.0)
    assert black == sorted(set(model.image_tok.encode(blank).flatten().tolist()))
    model.image_tok.config.background = None
    model._background = None
    assert model.background_codes() == [] and model.background_ids() == []
    ids = torch.tensor([[5, model.image_offset + 1]])
    mask = torch.ones_like(ids, dtype=torch.bool)
    w = model.target_weights(ids, mask, ids >= model.image_offset)
    assert torch.allclose(w, torch.full_like(w, 0.5))  # no background: every target alike
