"""Backbone tests: config contract, forward/backward, init, KV cache equals recomputation."""

from __future__ import annotations

import math

import pytest
import torch

from unimm.model import MODEL_PRESETS, ModelConfig, Transformer
from unimm.model.masks import causal_mask
from unimm.paradigms.autoregressive import next_token_loss, next_token_targets


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


def test_config_defaults_and_validation() -> None:
    c = ModelConfig(vocab_size=100, dim=256, n_heads=8)
    assert c.n_kv_heads == 8 and c.head_dim == 32
    assert c.hidden_dim % 64 == 0 and abs(c.hidden_dim - 8 * 256 / 3) < 64
    with pytest.raises(ValueError, match="divisible by n_heads"):
        ModelConfig(vocab_size=10, dim=30, n_heads=4)
    with pytest.raises(ValueError, match="n_kv_heads"):
        ModelConfig(vocab_size=10, dim=32, n_heads=4, n_kv_heads=3)
    with pytest.raises(ValueError, match="vocab_size"):
        ModelConfig(vocab_size=0)
    with pytest.raises(ValueError, match="even for RoPE"):
        ModelConfig(vocab_size=10, dim=12, n_heads=4)


def test_config_round_trip_and_unknown_keys() -> None:
    c = MODEL_PRESETS["tiny"](qk_norm=True, vocab_size=77)
    assert ModelConfig.from_dict(c.to_dict()) == c
    with pytest.raises(ValueError, match="unknown ModelConfig keys: bogus, head_dim"):
        ModelConfig.from_dict({**c.to_dict(), "bogus": 1, "head_dim": 8})


def test_small_preset_size() -> None:
    with torch.device("meta"):
        model = Transformer(MODEL_PRESETS["small"]())
    assert 4e6 <= model.num_params() <= 8e6


def test_meta_init_then_materialise() -> None:
    config = MODEL_PRESETS["tiny"](n_layers=8)
    with torch.device("meta"):
        model = Transformer(config)
    model.to_empty(device="cpu")
    model.init_weights()
    emb = model.tok_embeddings.weight
    assert torch.isfinite(emb).all() and abs(emb.std().item() - 0.02) < 0.003
    wo = model.layers[0].attn.wo.weight
    assert abs(wo.std().item() - 0.02 / math.sqrt(16)) < 0.002
    assert torch.equal(model.norm.weight, torch.ones(config.dim))


@pytest.mark.parametrize("variant", [{}, {"qk_norm": True}, {"tie_embeddings": True}])
def test_forward_backward_step(variant: dict) -> None:
    model = Transformer(MODEL_PRESETS["tiny"](**variant))
    tokens = torch.randint(0, 64, (3, 12))
    logits = model(tokens)
    assert logits.shape == (3, 12, 64)
    loss = next_token_loss(logits, *next_token_targets(tokens))
    loss.backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters())
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    before = model.output.weight.detach().clone()
    opt.step()
    assert torch.isfinite(model(tokens)).all()
    assert not torch.equal(before, model.output.weight)
    if variant.get("tie_embeddings"):
        assert model.output.weight is model.tok_embeddings.weight


def test_loss_drops_on_copy_task() -> None:
    """[x_1..x_8, SEP, x_1..x_8]: loss on the copy half must fall well below its start."""
    model = Transformer(MODEL_PRESETS["tiny"](vocab_size=20))
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    losses = []
    for _ in range(30):
        x = torch.randint(1, 16, (32, 8))
        tokens = torch.cat([x, torch.full((32, 1), 19), x], dim=1)  # (32, 17)
        mask = torch.zeros_like(tokens, dtype=torch.bool)
        mask[:, 9:] = True
        loss = next_token_loss(model(tokens), *next_token_targets(tokens, mask))
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[0] > math.log(15) * 0.9  # starts near uniform over 15 symbols
    # Over init seeds 0-19 the worst ratio was 0.66; untrained (lr 0) 1.00-1.01 (AMD Zen 4,
    # 2026-12-06).
    assert sum(losses[-5:]) / 5 < 0.75 * losses[0], losses


def test_kv_cache_equals_recomputation() -> None:
    model = Transformer(MODEL_PRESETS["tiny"](qk_norm=True))
    tokens = torch.randint(0, 64, (2, 20))
    full = model(tokens)  # (2, 20, V)
    cache = model.make_cache(2, 20)
    parts = [model(tokens[:, :8], cache=cache)]  # prefill
    parts.append(model(tokens[:, 8:12], cache=cache))  # a chunk of 4 (offset causal mask)
    for t in range(12, 20):  # one token at a time
        parts.append(model(tokens[:, t : t + 1], cache=cache))
    assert cache.length == 20
    torch.testing.assert_close(torch.cat(parts, dim=1), full, atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError, match="overflow"):
        model(tokens[:, :1], cache=cache)


def test_cache_crop_and_select() -> None:
    model = Transformer(MODEL_PRESETS["tiny"]())
    tokens = torch.randint(0, 64, (3, 10))
    full = model(tokens)
    cache = model.make_cache(3, 16)
    model(tokens[:, :6], cache=cache)
    model(torch.randint(0, 64, (3, 4)), cache=cache)  # a span we then forget
    cache.crop(6)
    cache.select([2, 0])
    rest = model(tokens[[2, 0], 6:], cache=cache)
    torch.testing.assert_close(rest, full[[2, 0], 6:], atol=1e-5, rtol=1e-5)


def test_explicit_mask_equals_causal_fast_path() -> None:
    model = Transformer(MODEL_PRESETS["tiny"]())
    tokens = torch.randint(0, 64, (2, 9))
    torch.testing.assert_close(model(tokens, mask=causal_mask(9)), model(tokens))
    with pytest.raises(ValueError, match="bool"):
        model(tokens, mask=causal_mask(9).float())


def test_rope_is_relative_and_embeds_path() -> None:
    model = Transformer(MODEL_PRESETS["tiny"]())
    tokens = torch.randint(0, 64, (2, 7))
    pos = torch.arange(7).expand(2, 7)
    base = model(tokens, positions=pos)
    torch.testing.assert_close(model(tokens, positions=pos + 100), base, atol=1e-4, rtol=1e-4)
    emb = model.tok_embeddings(tokens)
    torch.testing.assert_close(model(None, embeds=emb), base)
    hidden = model(tokens, return_hidden=True)
    assert hidden.shape == (2, 7, 32)
    torch.testing.assert_close(model.head(hidden), base)


def test_bf16_autocast_forward_and_cache() -> None:
    model = Transformer(MODEL_PRESETS["tiny"]())
    tokens = torch.randint(0, 64, (2, 10))
    ref = model(tokens)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        full = model(tokens)
        cache = model.make_cache(2, 10)
        stepped = torch.cat(
            [model(tokens[:, :6], cache=cache)]
            + [model(tokens[:, t : t + 1], cache=cache) for t in range(6, 10)],
            dim=1,
        )
    assert full.dtype == torch.bfloat16
    torch.testing.assert_close(full.float(), ref, atol=0.05, rtol=0.05)
    torch.testing.assert_close(stepped.float(), full.float(), atol=0.05, rtol=0.05)
