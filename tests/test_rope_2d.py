"""model.rope_2d_pairs: image codes rotate by their row and column on the highest-frequency
RoPE pairs, text as under 1-D RoPE; exact in cached generation and under left padding."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch

from tests.test_chameleon import rand_image, samples
from tests.test_chameleon_loss_options import make_model
from unimm.data.sample import Image, Sample, Text
from unimm.data.sequence import collate
from unimm.interop.hf_files import HFImportError
from unimm.interop.hf_llama import hf_config_from_model
from unimm.model.config import ModelConfig
from unimm.model.layers import rope_axes, rope_cos_sin
from unimm.model.transformer import Transformer
from unimm.paradigms.autoregressive import generate
from unimm.presets import get_run_config
from unimm.recipes.registry import recipe_class


def model_2d(pairs: int = 2):
    model = make_model()
    config = replace(model.backbone.config, rope_2d_pairs=pairs)
    torch.manual_seed(1)
    model.backbone = Transformer(config).eval()
    return model


def test_axes_put_rows_and_columns_on_the_highest_frequencies():
    assert rope_axes(16, 3).tolist() == [1, 2, 1, 2, 1, 2, 0, 0]
    assert rope_axes(16, 0).tolist() == [0] * 8


def test_equal_axes_are_1d_rope():
    positions = torch.randint(0, 50, (2, 7))
    one = rope_cos_sin(positions, 16)
    three = rope_cos_sin(positions[..., None].expand(2, 7, 3), 16, axes=rope_axes(16, 4))
    assert torch.equal(one[0], three[0]) and torch.equal(one[1], three[1])


def test_image_codes_get_their_cell_text_its_sequence_id():
    model = model_2d()
    h, w = model.image_tok.grid
    n = h * w
    text = [5, 6]  # two text tokens, then an image, then text again
    ids = text + [model.image_offset + 3] * n + [7]
    tokens = torch.tensor([ids])
    index = model.image_grid_index(tokens)
    pos = model.rope_positions(None, index, None)[0]  # (T, 3)
    assert pos[:2].tolist() == [[0, 0, 0], [1, 1, 1]]
    for k in range(n):
        r, c = divmod(k, w)
        assert pos[2 + k].tolist() == [2 + k, 2 + r, 2 + c]
    assert pos[-1].tolist() == [2 + n] * 3  # text after the image: ahead of every code


def test_the_cell_below_is_one_row_and_no_column_away():
    """Under 1-D RoPE the cell below is w positions back, like any code w steps earlier in
    raster order; on the spatial axes it is one row and no column away."""
    model = model_2d()
    w = model.image_tok.grid[1]
    index = torch.arange(model.image_tokens)[None]
    pos = model.rope_positions(torch.arange(model.image_tokens)[None], index, None)[0]
    below = pos[w] - pos[0]  # the cell below the first one
    assert below.tolist() == [w, 1, 0]  # 8 back in sequence, 1 row, same column


def test_cached_generation_equals_recomputation_and_padding_is_neutral():
    model = model_2d()
    prompts = [
        model._prompt_ids([Text("a red circle")], "image"),
        model._prompt_ids([Image(rand_image(5)), Text("make it blue")], "image"),
    ]
    kw = dict(allowed_ids=model.code_ids, max_new_tokens=model.image_tokens, temperature=0.0)
    cached = generate(model, prompts, **kw)
    assert cached == generate(model, prompts, use_cache=False, **kw)
    assert generate(model, prompts[:1], **kw)[0] == cached[0]  # batched = single


def test_text_before_an_image_is_1d_rope_codes_are_not():
    model = model_2d()
    batch = collate(
        model.build([Sample([Text("a red circle"), Image(rand_image(3))], (1,), "t2i")]),
        model.text_tok.pad_id,
    )
    inputs = batch.ids[:, :-1]
    with torch.no_grad():
        two_d = model(inputs)
        plain = replace(model.backbone.config, rope_2d_pairs=0)
        state = model.backbone.state_dict()
        model.backbone = Transformer(plain).eval()
        model.backbone.load_state_dict(state)
        one_d = model(inputs)
    first_code = int(model.image_slots(inputs)[0].nonzero()[0])
    assert torch.equal(two_d[:, : first_code + 1], one_d[:, : first_code + 1])  # nothing 2-D yet
    assert not torch.allclose(two_d[:, first_code + 1 :], one_d[:, first_code + 1 :])


def test_training_loss_is_finite_and_differentiable():
    model = model_2d().train()
    loss = model.loss(samples(4), torch.Generator().manual_seed(0))["loss"]
    loss.backward()
    assert torch.isfinite(loss)
    grads = [p.grad for p in model.backbone.layers[0].attn.parameters()]
    assert all(g is not None and g.abs().sum() > 0 for g in grads)


def test_refused_where_it_cannot_act():
    with pytest.raises(ValueError, match="rope_2d_pairs must be in"):
        ModelConfig(vocab_size=10, dim=32, n_heads=4, rope_2d_pairs=3)  # head_dim 8: at most 2
    cfg = get_run_config("tiny", ["model.rope_2d_pairs=2"])
    recipe_class("chameleon").check_config(cfg)
    for recipe in ("showo", "transfusion", "janus"):
        with pytest.raises(ValueError, match="rope_2d_pairs"):
            recipe_class(recipe).check_config(replace(cfg, recipe=recipe))
    with pytest.raises(HFImportError, match="2-D RoPE"):
        hf_config_from_model(cfg.model)
