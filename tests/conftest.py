"""Shared fixtures. Tests run on tiny random configurations.

Threads: one per test process unless OMP_NUM_THREADS says otherwise, so timings stay stable on
the 2-core machines. `make test` runs the suite under OMP_NUM_THREADS=1 and =2, so a result
that holds for one thread count only (a reduction split differently across threads) shows up.
Subprocesses the tests start (resume, torchrun-like ranks) inherit the same count."""

from __future__ import annotations

import os

import pytest
import torch

THREADS = int(os.environ.get("OMP_NUM_THREADS") or 1)
os.environ["OMP_NUM_THREADS"] = str(THREADS)
torch.set_num_threads(THREADS)


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory):
    """A whole tiny run (text tokenizer, image tokenizer, unified model) trained in seconds."""
    from unimm.pipeline import train_run

    out = tmp_path_factory.mktemp("tiny_run")
    train_run(out, "tiny", ["vq_train.seconds=3", "train.steps=6"], progress=False)
    return out
