"""Attention with a learned sink logit per head or token, in one fused CPU kernel and its backward.

A null key of logit s and value zero turns softmax attention's output o into o * sigmoid(lse - s),
lse being each query's log-normaliser over the real keys. SDPA returns o but not lse, so the
plain way (unimm.model.attention.gate_by_recomputed_sink) scores every key a second time, about
1.3x a training step here. torch's CPU flash-attention kernel returns lse as well, without a
gradient; the gradient that flows through lse is folded into the kernel's own backward instead:

    dL/dscore_ij = p_ij (dO_i . v_j - D_i) + r_i p_ij,   r_i = dL/dlse_i,  D_i = dO_i . o_i

and the backward computes D_i from the `out` it is handed, nothing else, so handing it
o_i - r_i dO_i / |dO_i|^2 (D_i - r_i as the row sum) gives the exact gradient. Where dO_i is
zero, r_i is zero too (both are multiples of dL/dy_i), and o_i goes in unchanged.
"""

from __future__ import annotations

import torch
from torch import Tensor

_flash = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu
_flash_backward = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu_backward


def additive_mask(mask: Tensor | None, dtype: torch.dtype) -> Tensor | None:
    """The kernel takes an additive mask of the queries' dtype: True (may attend) -> 0."""
    if mask is None:
        return None
    if mask.dtype != torch.bool:
        return mask.to(dtype)
    return torch.zeros(mask.shape, dtype=dtype, device=mask.device).masked_fill(
        ~mask, float("-inf")
    )


class SinkAttention(torch.autograd.Function):
    """y = SDPA(q, k, v) * sigmoid(lse - sink): q (B, H, T, hd), k and v (B, H, S, hd) (kv heads
    already repeated), sink (B | 1, H, T | 1) in lse's layout, mask additive or None."""

    @staticmethod
    def forward(ctx, q, k, v, sink, mask, is_causal):  # type: ignore[override]
        o, lse = _flash(q, k, v, 0.0, is_causal, attn_mask=mask)  # (B, H, T, hd), (B, H, T)
        gate = torch.sigmoid(lse - sink.to(lse.dtype))  # (B, H, T)
        ctx.save_for_backward(q, k, v, o, lse, gate, mask)
        ctx.is_causal = is_causal
        ctx.sink_shape = sink.shape
        return o * gate.unsqueeze(-1).to(o.dtype)

    @staticmethod
    def backward(ctx, grad_y):  # type: ignore[override]
        q, k, v, o, lse, gate, mask = ctx.saved_tensors
        grad_y = grad_y.float()
        grad_o = (grad_y * gate.unsqueeze(-1)).to(o.dtype)  # dL/do
        r = (grad_y * o.float()).sum(-1) * gate * (1 - gate)  # dL/dlse, (B, H, T)
        norm2 = grad_o.float().square().sum(-1)
        shift = torch.where(norm2 > 0, r / norm2.clamp_min(1e-30), torch.zeros_like(r))
        out_for_d = (o.float() - shift.unsqueeze(-1) * grad_o.float()).to(o.dtype)
        dq, dk, dv = _flash_backward(
            grad_o, q, k, v, out_for_d, lse, 0.0, ctx.is_causal, attn_mask=mask
        )
        dsink = -r
        for dim, size in enumerate(ctx.sink_shape):  # sum over what the sink broadcast along
            if size == 1 and dsink.shape[dim] != 1:
                dsink = dsink.sum(dim, keepdim=True)
        return dq, dk, dv, dsink, None, None


def sink_attention(
    q: Tensor, k: Tensor, v: Tensor, sink: Tensor, mask: Tensor | None, is_causal: bool
) -> Tensor:
    """Attention of q (B, H, T, hd) over k, v (B, Hkv, S, hd) with a null key of logit `sink`
    ((H,) per head or (B, T, H) per token) and value zero: (B, H, T, hd). CPU only."""
    if k.shape[1] != q.shape[1]:  # the kernel wants as many kv heads as query heads
        k = k.repeat_interleave(q.shape[1] // k.shape[1], dim=1)
        v = v.repeat_interleave(q.shape[1] // v.shape[1], dim=1)
    sink = sink.view(1, -1, 1) if sink.dim() == 1 else sink.transpose(1, 2)  # lse's layout
    return SinkAttention.apply(q, k, v, sink, additive_mask(mask, q.dtype), is_causal)
