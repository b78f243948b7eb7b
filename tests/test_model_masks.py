"""Mask policies: structure, no fully masked rows, and SDPA with them equals a hand-written
softmax attention."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from unimm.model.masks import (
    block_causal_mask,
    causal_mask,
    full_mask,
    keep_diagonal,
    padding_mask,
)


def reference_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor):
    scores = q @ k.transpose(-1, -2) / q.shape[-1] ** 0.5  # (B, H, T, S)
    scores = scores.masked_fill(~mask, float("-inf"))
    return scores.softmax(dim=-1) @ v


def _pad() -> torch.Tensor:
    pad = torch.zeros(2, 8, dtype=torch.bool)
    pad[1, :3] = True  # left padding on row 1
    pad[0, 7] = True  # right padding on row 0
    return pad


def test_causal_mask_with_offset() -> None:
    m = causal_mask(2, 5)
    assert m.tolist() == [[True, True, True, True, False], [True] * 5]
    assert torch.equal(causal_mask(4), torch.ones(4, 4, dtype=torch.bool).tril())
    with pytest.raises(ValueError):
        causal_mask(5, 2)


def test_block_causal_structure() -> None:
    # text text [img0 img0 img0] text [img1 img1]
    ids = torch.tensor([[-1, -1, 0, 0, 0, -1, 1, 1]])
    m = block_causal_mask(ids)[0, 0]
    assert m[2, 4] and m[3, 4] and m[6, 7]  # image tokens see later tokens of their block
    assert not m[1, 2] and not m[5, 6] and not m[4, 5]  # text and other blocks stay causal
    assert not m[2, 6]  # block 0 does not see block 1
    same_block = (ids[0][:, None] == ids[0]) & (ids[0] >= 0)
    above = ~causal_mask(8)
    assert torch.equal(m & above, same_block & above)  # the only non-causal links are in-block


def test_padding_keys_hidden_and_rows_never_empty() -> None:
    pad = _pad()
    ids = torch.tensor([[-1, 0, 0, -1, -1, 1, 1, -1]] * 2)
    for m in (padding_mask(pad), block_causal_mask(ids, pad), full_mask(pad)):
        assert m.shape == (2, 1, 8, 8)
        assert m.any(dim=-1).all()  # no NaN rows
        off_diag = m[:, 0] & ~torch.eye(8, dtype=torch.bool)
        assert not (off_diag & pad[:, None, :]).any()  # padding keys only on the diagonal
    fm = full_mask(pad)
    assert fm[1, 0, 3, 7] and fm[0, 0, 6, 0] and not fm[0, 0, 6, 7]


@pytest.mark.parametrize("policy", ["causal", "padding", "block_causal", "full", "cached"])
def test_sdpa_with_mask_equals_reference(policy: str) -> None:
    torch.manual_seed(0)
    B, H, T, S, hd = 2, 3, 8, 8, 16
    pad = _pad()
    ids = torch.tensor([[-1, 0, 0, 0, -1, 1, 1, -1], [-1, -1, -1, -1, 2, 2, -1, -1]])
    if policy == "cached":  # 3 queries against 8 keys, as in a cached chunk
        T = 3
        mask = keep_diagonal(causal_mask(T, S) & ~pad[:, None, None, :])
    else:
        mask = {
            "causal": lambda: causal_mask(T).expand(B, 1, T, T),
            "padding": lambda: padding_mask(pad),
            "block_causal": lambda: block_causal_mask(ids, pad),
            "full": lambda: full_mask(pad),
        }[policy]()
    q, k, v = torch.randn(B, H, T, hd), torch.randn(B, H, S, hd), torch.randn(B, H, S, hd)
    got = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
    want = reference_attention(q, k, v, mask)
    assert torch.isfinite(got).all()
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)


def test_bad_inputs() -> None:
    with pytest.raises(ValueError, match="bool"):
        padding_mask(torch.zeros(2, 4))
    with pytest.raises(ValueError, match="integers"):
        block_causal_mask(torch.zeros(2, 4))
