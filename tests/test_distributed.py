"""2 gloo processes at global batch B follow the 1-process loss curve at batch B (DDP, FSDP2)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from tests.train_helpers import stream, tiny_model, tiny_train_config
from unimm.checkpoint import load_tensors
from unimm.train.trainer import train_model

ROOT = Path(__file__).resolve().parents[1]


def losses(run: Path) -> list[float]:
    return [json.loads(x)["loss"] for x in (run / "train_log.jsonl").read_text().splitlines()]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch_two(out: Path, *kv: str) -> None:
    """What torchrun does: two processes with RANK/WORLD_SIZE/MASTER_* in their environment."""
    port = free_port()
    procs = []
    for rank in range(2):
        env = {**os.environ, "PYTHONPATH": f"{ROOT / 'src'}:{ROOT / 'tests'}",
               "OMP_NUM_THREADS": "1", "RANK": str(rank), "LOCAL_RANK": str(rank),
               "WORLD_SIZE": "2", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port)}  # fmt: skip
        cmd = [sys.executable, str(ROOT / "tests/train_helpers.py"), str(out), "0", *kv]
        procs.append(
            subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        )
    for p in procs:
        assert p.wait(120) == 0, p.stdout.read().decode()[-3000:]


@pytest.mark.parametrize("parallel", ["ddp", "fsdp2"])
def test_two_processes_reproduce_one_process_curve(tmp_path, parallel):
    steps = 4
    train_model(tiny_model(), tiny_train_config(steps=steps), stream, tmp_path / "one",
                progress=False)  # fmt: skip
    launch_two(tmp_path / "two", f"steps={steps}", f"parallel={parallel}", "save_every=2")
    one, two = losses(tmp_path / "one"), losses(tmp_path / "two")
    assert len(two) == steps
    # Rank 0 wrote full (unsharded) training state, the same size a 1-process run writes.
    sd = load_tensors(tmp_path / "two/state/step-0000004/model.safetensors")
    assert {k: v.shape for k, v in sd.items()} == {
        k: v.shape for k, v in tiny_model().state_dict().items()
    }
    assert two == pytest.approx(one, rel=2e-5, abs=2e-5)


def test_grad_accum_matches_full_batch(tmp_path):
    train_model(tiny_model(), tiny_train_config(steps=3), stream, tmp_path / "a", progress=False)
    train_model(tiny_model(), tiny_train_config(steps=3, grad_accum=2), stream, tmp_path / "b",
                progress=False)  # fmt: skip
    assert losses(tmp_path / "b") == pytest.approx(losses(tmp_path / "a"), rel=2e-5, abs=2e-5)
