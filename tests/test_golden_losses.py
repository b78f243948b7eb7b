"""Golden numbers: the per-step losses of a seeded tiny training run (torchtitan habit).

A refactor of the sequence builder, the model, the objective or the trainer must reproduce
them. When a change is meant to alter them, regenerate with
    UNIMM_UPDATE_GOLDEN=1 PYTHONPATH=src .venv/bin/python -m pytest tests/test_golden_losses.py
and say why in the commit message.
"""

from __future__ import annotations

import json
import os
from itertools import islice
from pathlib import Path

import pytest
import torch

from unimm.world.tasks import world_samples

GOLDEN = Path(__file__).parent / "assets" / "golden_losses.json"


def seeded_losses(steps: int = 8) -> list[float]:
    from tests.test_chameleon import make_model

    model = make_model(seed=0).train()
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    stream = world_samples("train", 0, {"t2i": 0.5, "vqa": 0.3, "caption": 0.2})
    gen = torch.Generator().manual_seed(0)
    losses = []
    for _ in range(steps):
        out = model.loss(list(islice(stream, 6)), gen)
        out["loss"].backward()
        opt.step()
        opt.zero_grad()
        losses.append(out["loss"].item())
    return losses


def test_seeded_run_reproduces_golden_losses():
    losses = seeded_losses()
    if os.environ.get("UNIMM_UPDATE_GOLDEN"):
        GOLDEN.write_text(json.dumps(losses, indent=1) + "\n")
    golden = json.loads(GOLDEN.read_text())
    assert losses[-1] < losses[0]
    # Same torch build, so equal up to kernel choice on another CPU model.
    assert losses == pytest.approx(golden, rel=1e-4)
