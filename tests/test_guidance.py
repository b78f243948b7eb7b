"""Classifier-free guidance: standard and background-preserving."""

from __future__ import annotations

import torch

from unimm.paradigms.guidance import guide


def logits(seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(3, 10, generator=g) * 2, torch.randn(3, 10, generator=g) * 2


def test_standard_guidance_is_u_plus_s_c_minus_u():
    c, u = logits(0)
    assert torch.allclose(guide(c, u, 3.0), u + 3.0 * (c - u))
    assert torch.allclose(guide(c, u, 1.0), c)


def test_kept_ids_get_the_conditional_mass_and_the_rest_is_guided():
    c, u = logits(1)
    keep = torch.zeros(10, dtype=torch.bool)
    keep[[2, 7]] = True
    p = guide(c, u, 4.0, keep).softmax(-1)
    pc = c.softmax(-1)
    assert torch.allclose(p.sum(-1), torch.ones(3), atol=1e-5)
    assert torch.allclose(p[:, keep], pc[:, keep], atol=1e-6)  # the same per kept id, too
    std = (u + 4.0 * (c - u)).masked_fill(keep, float("-inf")).softmax(-1)
    rest = p[:, ~keep] / p[:, ~keep].sum(-1, keepdim=True)
    assert torch.allclose(rest, std[:, ~keep], atol=1e-5)
    # At scale 1 nothing is guided: the conditional distribution itself.
    assert torch.allclose(guide(c, u, 1.0, keep).softmax(-1), pc, atol=1e-6)


def test_disallowed_ids_get_no_probability():
    c, u = logits(2)
    keep = torch.zeros(10, dtype=torch.bool)
    keep[0] = True
    allowed = torch.ones(10, dtype=torch.bool)
    allowed[5:] = False
    for k in (None, keep):
        p = guide(c, u, 3.0, k, allowed).softmax(-1)
        assert not torch.isnan(p).any() and (p[:, 5:] == 0).all()
        assert torch.allclose(p.sum(-1), torch.ones(3), atol=1e-5)
