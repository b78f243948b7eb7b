"""Under CPU bf16 autocast, differentiated attention runs in fp32 (a faster backward on CPU);
its outputs and gradients agree with plain bf16 SDPA to bf16 precision, inference stays bf16."""

import torch

from unimm.model import MODEL_PRESETS, Transformer, attention


def _grads(upcast: bool):
    torch.manual_seed(0)
    model = Transformer(MODEL_PRESETS["tiny"](vocab_size=50))
    tokens = torch.randint(0, 50, (3, 20), generator=torch.Generator().manual_seed(1))
    attention.UPCAST_CPU_BF16_ATTENTION_GRAD = upcast
    try:
        with torch.autocast("cpu", dtype=torch.bfloat16):
            logits = model(tokens)
        logits.float().square().mean().backward()
    finally:
        attention.UPCAST_CPU_BF16_ATTENTION_GRAD = True
    return logits.float(), {n: p.grad for n, p in model.named_parameters()}


def test_upcast_attention_matches_bf16_attention():
    a, ga = _grads(True)
    b, gb = _grads(False)
    assert not torch.equal(a, b)  # the two paths really differ (fp32 vs bf16 softmax)
    # bf16 keeps 8 bits of mantissa (relative error 2^-8 = 0.4 % per rounding); two layers of
    # roundings on logits of size ~1: agree to a few percent of the logits' scale.
    torch.testing.assert_close(a, b, rtol=0.05, atol=0.05 * b.abs().max().item())
    for name in ga:
        scale = gb[name].abs().max().item() + 1e-12
        torch.testing.assert_close(ga[name], gb[name], rtol=0.1, atol=0.1 * scale)


def test_inference_is_not_upcast():
    q = torch.zeros(1, 2, 3, 4, dtype=torch.bfloat16, requires_grad=True)
    assert attention.upcast_for_backward(q)
    with torch.no_grad():
        assert not attention.upcast_for_backward(q)
    assert not attention.upcast_for_backward(q.float())
