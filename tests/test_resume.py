"""Faults: kill -9 then --resume equals the uninterrupted run; corrupt checkpoints fall back;
non-finite losses are skipped, counted and abort after N in a row."""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from tests.train_helpers import stream, tiny_model, tiny_train_config
from unimm.train import state as st
from unimm.train.trainer import train_model

ROOT = Path(__file__).resolve().parents[1]
# OMP_NUM_THREADS is inherited (tests/conftest.py sets it): the killed and resumed scripts use
# the thread count of the in-process run they are compared with bit for bit.
ENV = {**os.environ, "PYTHONPATH": f"{ROOT / 'src'}:{ROOT / 'tests'}"}


def losses(run: Path) -> list[tuple[int, float]]:
    rows = [json.loads(x) for x in (run / "train_log.jsonl").read_text().splitlines()]
    return [(r["step"], r["loss"]) for r in rows]


def script(out: Path, resume: bool, *kv: str) -> subprocess.Popen:
    cmd = [sys.executable, str(ROOT / "tests/train_helpers.py"), str(out), str(int(resume)), *kv]
    return subprocess.Popen(cmd, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)


def complete_rows(log: Path) -> list[dict]:
    text = log.read_text() if log.exists() else ""
    return [json.loads(x) for x in text.splitlines(keepends=True) if x.endswith("\n")]


def test_kill_9_at_a_random_moment_then_resume_matches_uninterrupted_run(tmp_path):
    # A random moment: after k of the 8 steps have logged, plus a random fraction of a step,
    # so the kill lands anywhere (mid-step, mid-checkpoint-write, before the first checkpoint).
    # The seed is in every failure message, so a failure can be replayed.
    seed = int.from_bytes(os.urandom(4), "little")
    rng = random.Random(seed)
    k, frac = rng.randint(1, 6), rng.random()
    kv = ("steps=8", "save_every=2")
    victim = script(tmp_path / "killed", False, *kv)
    deadline = time.time() + 240  # a loaded machine starts python + torch slowly
    while len(rows := complete_rows(tmp_path / "killed/train_log.jsonl")) < k:
        assert victim.poll() is None and time.time() < deadline, f"seed {seed}"
        time.sleep(0.005)
    time.sleep(frac * rows[-1]["seconds"] / rows[-1]["step"])  # within about one more step
    victim.send_signal(signal.SIGKILL)
    victim.wait()
    # It really died mid-run: the final checkpoint was never written.
    assert not (tmp_path / "killed/state/step-0000008").exists(), f"seed {seed}"
    resumed = script(tmp_path / "killed", True, *kv)
    assert resumed.wait(240) == 0, resumed.stdout.read().decode()
    train_model(
        tiny_model(), tiny_train_config(steps=8), stream, tmp_path / "whole", progress=False
    )
    got, want = losses(tmp_path / "killed"), losses(tmp_path / "whole")
    assert [s for s, _ in got] == list(range(1, 9)), f"seed {seed}, k {k}, frac {frac}"
    # Bit-for-bit: same data position, RNG, optimizer state.
    assert got == want, f"seed {seed}, k {k}, frac {frac}"


def test_resume_drops_a_log_line_torn_by_the_kill(tmp_path):
    cfg = tiny_train_config(steps=4, save_every=2)
    train_model(tiny_model(), cfg, stream, tmp_path / "whole", progress=False)
    run = tmp_path / "run"
    shutil.copytree(tmp_path / "whole", run)
    # As if killed at step 4: its checkpoint never happened, its log line half written.
    shutil.rmtree(run / "state/step-0000004")
    log = run / "train_log.jsonl"
    log.write_text(log.read_text()[:-25])
    train_model(tiny_model(), cfg, stream, run, progress=False, resume=True)
    assert losses(run) == losses(tmp_path / "whole")


def test_corrupt_newest_checkpoint_falls_back_to_previous(tmp_path, capsys):
    cfg = tiny_train_config(steps=4, save_every=2, keep_checkpoints=2)
    train_model(tiny_model(), cfg, stream, tmp_path, progress=False)
    states = st.list_states(tmp_path)
    assert [p.name for p in states] == ["step-0000002", "step-0000004"]
    weights = states[-1] / "optimizer.safetensors"
    weights.write_bytes(weights.read_bytes()[:-7])  # truncated
    path, meta = st.latest_good_state(tmp_path)
    assert path == states[0] and meta["step"] == 2
    assert "truncated" in capsys.readouterr().out
    data = bytearray((states[0] / "model.safetensors").read_bytes())
    data[-3] ^= 0xFF  # same size, one flipped byte
    (states[0] / "model.safetensors").write_bytes(bytes(data))
    with pytest.raises(st.CorruptCheckpoint, match="SHA-256"):
        st.verify_state(states[0])
    assert st.latest_good_state(tmp_path) is None


def test_keep_last_k_and_no_pickle(tmp_path):
    train_model(tiny_model(), tiny_train_config(steps=6, save_every=1, keep_checkpoints=2),
                stream, tmp_path, progress=False)  # fmt: skip
    states = st.list_states(tmp_path)
    assert [p.name for p in states] == ["step-0000005", "step-0000006"]
    names = {f.name for f in states[-1].iterdir()}
    assert names == {"model.safetensors", "optimizer.safetensors", "state.json"}
    meta = st.verify_state(states[-1])
    assert meta["data_position"] == 6 * 4 and meta["step"] == 6


class NaNAt:
    """Wraps the model so chosen calls of loss() return NaN."""

    def __init__(self, bad_steps: set[int]):
        self.bad, self.calls = bad_steps, 0

    def __call__(self, loss_fn):
        def loss(samples, generator=None):
            self.calls += 1
            out = loss_fn(samples, generator)
            if self.calls in self.bad:
                out["loss"] = out["loss"] * float("nan")
            return out

        return loss


def test_nonfinite_steps_are_skipped_counted_then_abort(tmp_path):
    model = tiny_model()
    model.loss = NaNAt({2, 3})(model.loss)
    rows = train_model(model, tiny_train_config(steps=4, max_nonfinite=3), stream, tmp_path,
                       progress=False)  # fmt: skip
    assert [r["nonfinite_total"] for r in rows] == [0, 1, 2, 2]
    assert all(torch.isfinite(p).all() for p in model.parameters())
    model = tiny_model()
    model.loss = NaNAt({2, 3, 4})(model.loss)
    with pytest.raises(FloatingPointError, match="3 non-finite losses in a row"):
        train_model(model, tiny_train_config(steps=6, max_nonfinite=3), stream, tmp_path / "b",
                    progress=False)  # fmt: skip


@pytest.mark.slow  # two tiny `unimm train` runs (text tokenizer training included)
def test_cli_resume_after_losing_the_newest_checkpoint(tiny_run, tmp_path):
    from unimm.cli import main

    args = ["train", "--out", str(tmp_path), "--preset", "tiny", "--image-tokenizer",
            str(tiny_run / "image_tokenizer"), "train.steps=4", "train.save_every=2",
            "train.log_every=1"]  # fmt: skip
    assert main(args) == 0
    whole = losses(tmp_path)
    # As if killed between the step-2 and step-4 saves: the later state never happened.
    shutil.rmtree(tmp_path / "state/step-0000004")
    assert main([*args, "--resume"]) == 0
    assert losses(tmp_path) == whole
