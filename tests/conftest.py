"""Shared fixtures. Tests run on tiny random configurations; torch uses one thread per test
process so timings stay stable on the 2-core machines."""

from __future__ import annotations

import pytest
import torch

torch.set_num_threads(1)


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory):
    """A whole tiny run (text tokenizer, image tokenizer, unified model) trained in seconds."""
    from unimm.pipeline import train_run

    out = tmp_path_factory.mktemp("tiny_run")
    train_run(out, "tiny", ["vq_train.seconds=3", "train.steps=6"], progress=False)
    return out
