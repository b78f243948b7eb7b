"""The learned attention sink (ModelConfig.attention_sink): equal to softmax over the keys plus a
null key of logit `sink` and value zero, under every mask SDPA takes, and still exact under the
KV cache, batching and left padding."""

from __future__ import annotations

import pytest
import torch

from unimm.model import MODEL_PRESETS, Transformer
from unimm.model.attention import Attention, KVCache
from unimm.model.masks import padding_mask
from unimm.model.mot import MoTBlock
from unimm.paradigms.autoregressive import generate


def with_null_key(q, k, v, sink, seen):
    """Softmax over [null, keys] written out: the null key scores `sink`, its value is zero."""
    k = k.repeat_interleave(q.shape[1] // k.shape[1], dim=1)
    v = v.repeat_interleave(q.shape[1] // v.shape[1], dim=1)
    scores = (q @ k.transpose(-1, -2)) / q.shape[-1] ** 0.5
    scores = scores.masked_fill(~seen, float("-inf"))
    null = sink.view(1, -1, 1, 1).expand(*scores.shape[:-1], 1)
    weights = torch.cat([null, scores], -1).softmax(-1)[..., 1:]
    return weights @ v  # (B, H, T, hd)


@pytest.mark.parametrize("how", ["causal", "bool mask"])
def test_the_sink_is_a_null_key_of_value_zero(how):
    torch.manual_seed(0)
    cfg = MODEL_PRESETS["tiny"](attention_sink=True, n_heads=4, n_kv_heads=2)
    attn = Attention(cfg)
    with torch.no_grad():
        attn.sink.copy_(torch.tensor([-1.0, 0.0, 1.5, 3.0]))
    B, T, hd = 2, 7, cfg.head_dim
    q, k, v = torch.randn(B, T, 4, hd), torch.randn(B, T, 2, hd), torch.randn(B, T, 2, hd)
    causal = torch.ones(T, T, dtype=torch.bool).tril()
    if how == "causal":
        seen, kw = causal, {"mask": None, "is_causal": True}
    else:  # a block of bidirectional keys inside a causal mask, as the recipes build them
        seen = causal.clone()
        seen[2:5, 2:5] = True
        kw = {"mask": seen.expand(B, 1, T, T), "is_causal": False}
    got = attn.attend(q, k, v, cache=None, layer=0, **kw)  # (B, T, H * hd)
    want = with_null_key(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), attn.sink, seen)
    torch.testing.assert_close(got, want.transpose(1, 2).reshape(B, T, -1))


def test_a_very_negative_sink_is_plain_attention():
    torch.manual_seed(0)
    plain = Transformer(MODEL_PRESETS["tiny"]())
    sunk = Transformer(MODEL_PRESETS["tiny"](attention_sink=True))
    missing, unexpected = sunk.load_state_dict(plain.state_dict(), strict=False)
    assert not unexpected and missing and all(name.endswith(".sink") for name in missing)
    with torch.no_grad():
        for layer in sunk.layers:
            layer.attn.sink.fill_(-1e4)
    tokens = torch.randint(0, 60, (2, 9))
    torch.testing.assert_close(sunk(tokens), plain(tokens))


@pytest.fixture(scope="module", params=["logit", "key"])
def model(request) -> Transformer:
    """Either kind of sink, its weights random so that each query's null logit matters."""
    torch.manual_seed(1)
    m = Transformer(MODEL_PRESETS["tiny"](attention_sink=True, attention_sink_kind=request.param))
    with torch.no_grad():
        m.output.weight.mul_(20)
        for layer in m.layers:
            sink = layer.attn.sink if request.param == "logit" else layer.attn.null_key
            sink.normal_(0, 1.0)
    return m


def test_cached_and_batched_equal_recomputed_and_single(model):
    prompts = [[5, 9, 2, 7, 7, 1], [3], [11, 4, 60, 8]]
    cached = generate(model, prompts, 10, temperature=0)
    assert cached == generate(model, prompts, 10, temperature=0, use_cache=False)
    assert cached == [generate(model, [p], 10, temperature=0)[0] for p in prompts]
    assert len({tuple(o) for o in cached}) > 1


def test_left_padding_matches_unpadded_logits(model):
    alone = model(torch.tensor([[3, 8, 9]]))[:, -1]
    padded = torch.tensor([[0, 0, 0, 3, 8, 9]])
    pad = torch.tensor([[True] * 3 + [False] * 3])
    got = model(padded, torch.tensor([[0, 0, 0, 0, 1, 2]]), padding_mask(pad))[:, -1]
    torch.testing.assert_close(got, alone, atol=1e-5, rtol=1e-5)


def test_the_sink_trains():
    torch.manual_seed(0)
    m = Transformer(MODEL_PRESETS["tiny"](attention_sink=True))
    m(torch.randint(0, 60, (2, 6))).logsumexp(-1).sum().backward()
    assert all(layer.attn.sink.grad.abs().sum() > 0 for layer in m.layers)


def with_null_key_vector(q, k, v, null_key, seen):
    """The same, the null key's logit being q . k_null / sqrt(hd) for each query."""
    group = q.shape[1] // k.shape[1]
    logits = (q * null_key.repeat_interleave(group, 0)[None, :, None]).sum(-1) / q.shape[-1] ** 0.5
    k = k.repeat_interleave(group, dim=1)
    v = v.repeat_interleave(group, dim=1)
    scores = ((q @ k.transpose(-1, -2)) / q.shape[-1] ** 0.5).masked_fill(~seen, float("-inf"))
    weights = torch.cat([logits[..., None], scores], -1).softmax(-1)[..., 1:]
    return weights @ v  # (B, H, T, hd)


@pytest.mark.parametrize("how", ["causal", "bool mask", "cached"])
def test_the_key_sink_is_a_null_key_vector_of_value_zero(how):
    torch.manual_seed(0)
    cfg = MODEL_PRESETS["tiny"](
        attention_sink=True, attention_sink_kind="key", n_heads=4, n_kv_heads=2
    )
    attn = Attention(cfg)
    assert attn.sink is None and attn.null_key.shape == (2, cfg.head_dim)
    with torch.no_grad():
        attn.null_key.normal_(0, 2.0)
    B, T, hd = 2, 7, cfg.head_dim
    q, k, v = torch.randn(B, T, 4, hd), torch.randn(B, T, 2, hd), torch.randn(B, T, 2, hd)
    causal = torch.ones(T, T, dtype=torch.bool).tril()
    seen, cache, kw = causal, None, {"mask": None, "is_causal": True}
    if how == "bool mask":  # a block of bidirectional keys inside a causal mask
        seen = causal.clone()
        seen[2:5, 2:5] = True
        kw = {"mask": seen.expand(B, 1, T, T), "is_causal": False}
    if how == "cached":  # the first four keys come from the cache, the last three queries ask
        cache = KVCache(1, B, 2, 16, hd)
        cache.update(0, k[:, :4].transpose(1, 2), v[:, :4].transpose(1, 2))
        cache.advance(4)
        kw = {"mask": causal[4:], "is_causal": False}
        got = attn.attend(q[:, 4:], k[:, 4:], v[:, 4:], cache=cache, layer=0, **kw)
        got = torch.cat(
            [
                attn.attend(
                    q[:, :4], k[:, :4], v[:, :4], cache=None, layer=0, mask=None, is_causal=True
                ),
                got,
            ],
            1,
        )
    else:
        got = attn.attend(q, k, v, cache=cache, layer=0, **kw)  # (B, T, H * hd)
    want = with_null_key_vector(
        q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), attn.null_key, seen
    )
    torch.testing.assert_close(got, want.transpose(1, 2).reshape(B, T, -1))


def test_the_key_sink_trains_and_experts_refuse_it():
    torch.manual_seed(0)
    cfg = MODEL_PRESETS["tiny"](attention_sink=True, attention_sink_kind="key")
    m = Transformer(cfg)  # null keys start at zero: every query scores the null key 0
    m(torch.randint(0, 60, (2, 6))).logsumexp(-1).sum().backward()
    assert all(layer.attn.null_key.grad.abs().sum() > 0 for layer in m.layers)
    with pytest.raises(ValueError, match="attention_sink_kind='logit'"):
        MoTBlock(cfg)
    with pytest.raises(ValueError, match="attention_sink_kind"):
        MODEL_PRESETS["tiny"](attention_sink=True, attention_sink_kind="bias")
