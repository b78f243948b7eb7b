"""The fused sink kernel (unimm.model.sink_attention) against the sink written with a recomputed
log-normaliser (unimm.model.attention.gate_by_recomputed_sink, the path off the CPU): the same
outputs and the same gradients for queries, keys, values and sinks, under every mask the models
use."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from unimm.model import MODEL_PRESETS, Transformer
from unimm.model.attention import gate_by_recomputed_sink
from unimm.model.sink_attention import sink_attention


def recomputed(q, k, v, sink, mask, is_causal):
    y = F.scaled_dot_product_attention(
        q, k, v, attn_mask=mask, is_causal=is_causal, enable_gqa=True
    )
    return gate_by_recomputed_sink(y, q, k, sink, mask, is_causal)


@pytest.mark.parametrize("how", ["causal", "block mask", "per-token sinks", "left padding"])
def test_fused_sink_equals_recomputed_normaliser_with_gradients(how):
    torch.manual_seed(0)
    B, H, Hkv, T, hd = 2, 4, 2, 7, 16
    q = torch.randn(B, H, T, hd, requires_grad=True)
    k, v = (torch.randn(B, Hkv, T, hd, requires_grad=True) for _ in range(2))
    shape = (B, T, H) if how == "per-token sinks" else (H,)
    sink = torch.randn(shape, requires_grad=True)
    mask, is_causal = None, True
    if how != "causal":
        mask, is_causal = torch.ones(T, T, dtype=torch.bool).tril(), False
        mask[2:5, 2:5] = True  # a bidirectional block, as the recipes' image blocks
        if how == "left padding":
            mask = mask.expand(B, 1, T, T).clone()
            mask[0, ..., :3] = False  # row 0's first three tokens are padding
            mask[0, :, :3, 0] = True  # padding queries see themselves, as padding_mask builds
    grad = torch.randn(B, H, T, hd)
    results = []
    for attend in (recomputed, sink_attention):
        y = attend(q, k, v, sink, mask, is_causal)
        results.append([y, *torch.autograd.grad((y * grad).sum(), (q, k, v, sink))])
    for want, got in zip(*results):
        torch.testing.assert_close(got, want, atol=2e-6, rtol=2e-5)


def test_compiled_blocks_with_sinks_match_eager():
    torch.manual_seed(0)
    cfg = MODEL_PRESETS["tiny"](attention_sink=True, qk_norm=True)
    eager, compiled = Transformer(cfg), Transformer(cfg)
    with torch.no_grad():
        for layer in eager.layers:
            layer.attn.sink.normal_(0, 1.0)
    compiled.load_state_dict(eager.state_dict())
    for block in compiled.layers:
        block.compile()
    tokens = torch.randint(0, 60, (3, 12))
    grads = []
    for m in (eager, compiled):
        out = m(tokens)
        out.logsumexp(-1).sum().backward()
        grads.append((out, m.layers[0].attn.sink.grad))
    torch.testing.assert_close(grads[1][0], grads[0][0], atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(grads[1][1], grads[0][1], atol=1e-4, rtol=1e-4)
