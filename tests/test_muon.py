"""MuonAdamW against the reference optimizers: its Muon groups step as torch.optim.Muon
(match_rms_adamw scaling), its AdamW groups as torch.optim.AdamW, over several steps."""

import shutil

import pytest
import torch

from tests.train_helpers import stream, tiny_model, tiny_train_config
from unimm.train import state as st
from unimm.train.muon import MuonAdamW, orthogonalise, orthogonalise_all
from unimm.train.trainer import read_log, train_model


def _run(make, params, steps=4):
    params = [p.detach().clone().requires_grad_(True) for p in params]
    opt = make(params)
    g = torch.Generator().manual_seed(1)
    for _ in range(steps):
        for p in params:
            p.grad = torch.randn(p.shape, generator=g)
        opt.step()
    return params


def test_muon_groups_match_torch_muon():
    torch.manual_seed(0)
    params = [torch.randn(8, 20), torch.randn(24, 6)]
    ours = _run(
        lambda ps: MuonAdamW([{"params": ps, "use_muon": True, "weight_decay": 0.1}], lr=0.01),
        params,
    )
    ref = _run(
        lambda ps: torch.optim.Muon(ps, lr=0.01, weight_decay=0.1, adjust_lr_fn="match_rms_adamw"),
        params,
    )
    for a, b in zip(ours, ref):
        # Same operations in the same order and dtypes: equal up to bf16 matmul ordering.
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


def test_adamw_groups_match_torch_adamw():
    torch.manual_seed(0)
    params = [torch.randn(5, 7), torch.randn(7)]
    ours = _run(
        lambda ps: MuonAdamW([{"params": ps, "weight_decay": 0.05}], lr=0.01, betas=(0.9, 0.95)),
        params,
    )
    ref = _run(
        lambda ps: torch.optim.AdamW(ps, lr=0.01, betas=(0.9, 0.95), weight_decay=0.05),
        params,
    )
    for a, b in zip(ours, ref):
        # The same single-tensor AdamW kernel on the same inputs: exact.
        assert torch.equal(a, b)


def test_orthogonalise_pushes_singular_values_towards_one():
    gen = torch.Generator().manual_seed(0)
    u, _ = torch.linalg.qr(torch.randn(32, 32, generator=gen))
    v, _ = torch.linalg.qr(torch.randn(64, 32, generator=gen))
    g = u @ torch.diag(torch.logspace(-1.3, 0.7, 32)) @ v.T  # singular values 0.05 ... 5
    s = torch.linalg.svdvals(orthogonalise(g).float())
    # The quintic iteration leaves singular values in about (0.5, 1.5) whatever g's spread
    # (torch.optim.Muon's docstring); 100x in, under 4x out.
    assert s.min() > 0.3 and s.max() < 1.6


def test_muon_refuses_non_matrix_parameters():
    with pytest.raises(ValueError, match="2-D"):
        MuonAdamW([{"params": [torch.zeros(3, requires_grad=True)], "use_muon": True}], lr=0.1)


def test_muon_training_resumes_step_for_step(tmp_path):
    """Muon's momentum buffers go through the training-state checkpoints like AdamW's moments:
    stopping after step 3 and resuming gives the uninterrupted run's losses exactly."""
    cfg = tiny_train_config(steps=6, optimizer="muon", save_every=3)
    train_model(tiny_model(), cfg, stream, tmp_path / "full", progress=False)
    short = tiny_train_config(steps=6, optimizer="muon", save_every=3)
    # the same run stopped after its step-3 checkpoint, then resumed in a fresh model
    train_model(tiny_model(), short, stream, tmp_path / "part", progress=False)
    for extra in st.list_states(tmp_path / "part")[1:]:
        shutil.rmtree(extra)
    log = tmp_path / "part" / "train_log.jsonl"
    log.write_text("".join(line + "\n" for line in log.read_text().splitlines()[:3]))
    train_model(tiny_model(), short, stream, tmp_path / "part", progress=False, resume=True)
    full = [(r["step"], r["loss"]) for r in read_log(tmp_path / "full" / "train_log.jsonl")]
    part = [(r["step"], r["loss"]) for r in read_log(tmp_path / "part" / "train_log.jsonl")]
    assert part == full


def test_batched_orthogonalisation_matches_one_matrix_at_a_time():
    """orthogonalise_all stacks same-shape matrices (tall ones transposed to wide) into one
    batched iteration; each result must be what orthogonalise gives that matrix alone."""
    gen = torch.Generator().manual_seed(0)
    shapes = [(8, 20), (20, 8), (8, 20), (12, 12), (6, 9)]
    updates = [torch.randn(s, generator=gen) for s in shapes]
    batched = orthogonalise_all(updates)
    for u, b in zip(updates, batched):
        assert b.shape == u.shape
        # the same bf16 arithmetic per matrix; allow only bf16-rounding-level kernel differences
        torch.testing.assert_close(b.float(), orthogonalise(u).float(), rtol=0, atol=1e-2)
    assert orthogonalise_all([]) == []
