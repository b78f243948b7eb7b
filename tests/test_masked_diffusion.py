"""The masked-diffusion paradigm: objective and the confidence-ordered sampler's contract."""

from __future__ import annotations

import pytest
import torch

from unimm.paradigms.masked_diffusion import (
    DiscreteDiffusionConfig,
    MaskedDiffusionConfig,
    MaskedDiffusionScheduler,
    masked_fraction,
    masked_token_loss,
    sample_image_mask,
    sample_text_mask,
    text_diffusion_loss,
)


def run_sampler(config, B=3, N=20, K=7, start=None, editable=None, seed=0):
    g = torch.Generator().manual_seed(seed)
    sched = MaskedDiffusionScheduler(config)
    tokens = torch.randint(0, K, (B, N), generator=g)
    masked = torch.ones(B, N, dtype=torch.bool) if start is None else start.clone()
    before = tokens.clone()
    counts = [masked.sum(1)]
    for i in range(sched.num_steps):
        logits = torch.randn(B, N, K, generator=g) * 3
        tokens, masked = sched.step(logits, tokens, masked, i, editable=editable, generator=g)
        assert tokens.shape == (B, N) and masked.shape == (B, N)
        counts.append(masked.sum(1))
    return before, tokens, masked, torch.stack(counts)


@pytest.mark.parametrize("schedule", ["cosine", "linear"])
@pytest.mark.parametrize("steps", [1, 4, 16, 32])
def test_mask_count_never_grows_and_reaches_zero(schedule, steps):
    cfg = MaskedDiffusionConfig(steps=steps, schedule=schedule)
    _, tokens, masked, counts = run_sampler(cfg)
    assert (counts[1:] <= counts[:-1]).all()
    assert not masked.any() and counts[-1].sum() == 0
    assert (tokens >= 0).all() and (tokens < 7).all()


def test_known_tokens_never_change_and_partial_start():
    start = torch.zeros(2, 12, dtype=torch.bool)
    start[0, 3:7] = True
    start[1, :] = True
    before, after, masked, counts = run_sampler(
        MaskedDiffusionConfig(steps=5), B=2, N=12, start=start
    )
    assert torch.equal(after[~start], before[~start])
    assert counts[0].tolist() == [4, 12] and not masked.any()


def test_editable_block_only_fills_its_slots():
    editable = torch.zeros(2, 10, dtype=torch.bool)
    editable[:, :5] = True
    _, _, masked, counts = run_sampler(
        MaskedDiffusionConfig(steps=3, schedule="linear"), B=2, N=10, editable=editable
    )
    assert masked[:, 5:].all() and not masked[:, :5].any()


def test_cosine_schedule_spends_steps_on_the_first_tokens():
    # cos(pi r / 2) keeps most slots masked early: after 1 of 4 steps, 92 % remain.
    _, _, _, counts = run_sampler(MaskedDiffusionConfig(steps=4), B=1, N=100)
    assert counts[:, 0].tolist() == [100, 92, 70, 38, 0]
    assert masked_fraction(0.0).item() == 1.0 and masked_fraction(1.0).item() < 1e-12


def test_greedy_without_noise_commits_the_most_confident_slots():
    sched = MaskedDiffusionScheduler(
        MaskedDiffusionConfig(steps=2, schedule="linear", temperature=0, confidence_noise=0)
    )
    logits = torch.full((1, 4, 3), -5.0)
    logits[0, :, 0] = torch.tensor([5.0, 0.0, 9.0, 1.0])  # slot 2 most confident, then 0
    tokens, masked = sched.step(
        logits, torch.zeros(1, 4, dtype=torch.long), torch.ones(1, 4, dtype=torch.bool), 0
    )
    assert masked.tolist() == [[False, True, False, True]]


def test_no_nan_with_extreme_logits():
    cfg = MaskedDiffusionConfig(steps=4, temperature=0.5, confidence_noise=4.5)
    sched = MaskedDiffusionScheduler(cfg)
    logits = torch.tensor([[[1e4, -1e4, 0.0]] * 6])
    logits[0, 2] = float("-inf")
    logits[0, 2, 1] = 0.0
    tokens, masked = torch.zeros(1, 6, dtype=torch.long), torch.ones(1, 6, dtype=torch.bool)
    for i in range(4):
        tokens, masked = sched.step(logits, tokens, masked, i)
    assert tokens[0, 2] == 1 and (tokens[0, [0, 1, 3, 4, 5]] == 0).all() and not masked.any()


def test_config_round_trip_and_validation():
    cfg = MaskedDiffusionConfig(steps=8, schedule="linear", temperature=0.7, remasking="random")
    assert MaskedDiffusionConfig.from_dict(cfg.to_dict()) == cfg
    _, _, masked, _ = run_sampler(cfg)
    assert not masked.any()
    with pytest.raises(ValueError, match="schedule"):
        MaskedDiffusionConfig(schedule="exp")
    with pytest.raises(ValueError, match="steps"):
        MaskedDiffusionConfig(steps=0)
    with pytest.raises(ValueError, match="divide"):
        DiscreteDiffusionConfig(answer_length=24, text_blocks=5)


def test_same_seed_same_result():
    a = run_sampler(MaskedDiffusionConfig(steps=6), seed=3)[1]
    b = run_sampler(MaskedDiffusionConfig(steps=6), seed=3)[1]
    assert torch.equal(a, b)


def test_masked_loss_ignores_unmasked_positions():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 5, 9, generator=g, requires_grad=True)
    targets = torch.randint(0, 9, (2, 5), generator=g)
    masked = torch.tensor([[1, 0, 1, 0, 0], [0, 0, 0, 1, 0]], dtype=torch.bool)
    loss = masked_token_loss(logits, targets, masked)
    loss.backward()
    assert (logits.grad[~masked] == 0).all() and (logits.grad[masked] != 0).any()
    other = logits.detach().clone()
    other[~masked] = torch.randn_like(other[~masked]) * 100
    assert torch.equal(masked_token_loss(other, targets, masked), loss.detach())
    ce = torch.nn.functional.cross_entropy(logits.detach()[masked], targets[masked])
    assert torch.allclose(loss.detach(), ce)
    assert masked_token_loss(logits, targets, torch.zeros_like(masked)).item() == 0.0


def test_text_loss_is_weighted_by_inverse_mask_probability():
    logits = torch.zeros(1, 4, 5)  # uniform: CE = log 5 at every slot
    targets = torch.zeros(1, 4, dtype=torch.long)
    slots = torch.tensor([[0, 1, 1, 1]], dtype=torch.bool)
    masked = torch.tensor([[0, 1, 0, 0]], dtype=torch.bool)
    loss = text_diffusion_loss(logits, targets, masked, slots, torch.tensor([0.25]))
    expected = torch.log(torch.tensor(5.0)) / 0.25 / 3  # one masked of 3 answer slots, p = 1/4
    assert torch.allclose(loss, expected)


def test_training_masks_only_slots_and_at_least_one():
    slots = torch.zeros(64, 30, dtype=torch.bool)
    slots[:, 10:26] = True
    g = torch.Generator().manual_seed(0)
    m = sample_image_mask(slots, "cosine", g)
    assert not (m & ~slots).any() and (m.sum(1) >= 1).all()
    assert 0.3 < m.sum().item() / slots.sum().item() < 0.9  # E[cos(pi t / 2)] = 2 / pi
    t, p = sample_text_mask(slots, 1e-3, g)
    assert not (t & ~slots).any() and ((p > 0) & (p <= 1)).all()


def test_confidence_noise_explores_early_and_anneals_late():
    # MaskGIT's Gumbel noise on the confidences is scaled by (1 - r): early steps commit slots
    # out of confidence order often, late steps almost never, and without noise never.
    R, N, K = 400, 8, 64
    d = 0.1 + 0.5 * torch.arange(N, dtype=torch.float64)  # slot j's argmax has log-prob -d_j
    logits = torch.zeros(R, N, K)
    logits[:, :, 1:] = torch.log((d.exp() - 1) / (K - 1)).float()[None, :, None]
    logp = logits.log_softmax(-1)[..., 0]
    assert torch.allclose(logp[0], -d.float(), atol=1e-5)  # slot 0 most confident, then 1, ...

    def out_of_order(noise: float, i: int) -> float:
        sched = MaskedDiffusionScheduler(
            MaskedDiffusionConfig(steps=10, temperature=0, confidence_noise=noise)
        )
        tokens, masked = torch.zeros(R, N, dtype=torch.long), torch.ones(R, N, dtype=torch.bool)
        _, still = sched.step(logits, tokens, masked, i, generator=torch.Generator().manual_seed(0))
        k = int((~still[0]).sum())
        assert ((~still).sum(1) == k).all() and 0 < k < N  # 1 slot at i = 0, 7 at i = 8
        in_order = torch.zeros(N, dtype=torch.bool)
        in_order[:k] = True  # the k most confident slots
        return (~still != in_order).any(1).double().mean().item()

    assert out_of_order(1.0, 0) > 0.3  # r = 0.1: noise scale 0.9 against 0.5-nat gaps
    assert out_of_order(1.0, 8) < 0.05  # r = 0.9: noise scale 0.1
    assert out_of_order(0.0, 0) == 0.0 and out_of_order(0.0, 8) == 0.0
