"""Trainer options: activation checkpointing, bf16 autocast, EMA weights, torch.compile."""

from __future__ import annotations

import json

import pytest
import torch

from tests.train_helpers import stream, tiny_model, tiny_train_config
from unimm.checkpoint import load_tensors
from unimm.train import distributed as du
from unimm.train.trainer import micro_batch_size, train_model


def losses(rows: list[dict]) -> list[float]:
    return [r["loss"] for r in rows]


def test_activation_checkpointing_changes_nothing_but_memory(tmp_path):
    plain = train_model(tiny_model(), tiny_train_config(steps=3), stream, tmp_path / "a",
                        progress=False)  # fmt: skip
    model = tiny_model()
    ckpt = train_model(model, tiny_train_config(steps=3, activation_checkpointing=True), stream,
                       tmp_path / "b", progress=False)  # fmt: skip
    assert losses(ckpt) == pytest.approx(losses(plain), rel=1e-6)
    # The saved state uses the bare model's names, whatever wrapper training added.
    train_model(tiny_model(), tiny_train_config(steps=2, activation_checkpointing=True,
                save_every=2), stream, tmp_path / "c", progress=False)  # fmt: skip
    names = load_tensors(tmp_path / "c/state/step-0000002/model.safetensors").keys()
    assert set(names) == set(tiny_model().state_dict())


def test_bf16_autocast_tracks_fp32(tmp_path):
    fp32 = train_model(tiny_model(), tiny_train_config(steps=3), stream, tmp_path / "a",
                       progress=False)  # fmt: skip
    bf16 = train_model(tiny_model(), tiny_train_config(steps=3, precision="bf16"), stream,
                       tmp_path / "b", progress=False)  # fmt: skip
    assert losses(bf16) == pytest.approx(losses(fp32), rel=2e-2)
    assert losses(bf16) != losses(fp32)  # autocast really ran in bf16


def test_ema_weights_are_saved_and_lag_the_model(tmp_path):
    model = tiny_model()
    train_model(model, tiny_train_config(steps=3, ema_decay=0.5, save_every=3), stream, tmp_path,
                progress=False)  # fmt: skip
    ema = load_tensors(tmp_path / "ema.safetensors")
    trained = dict(model.named_parameters())
    assert set(ema) == {n for n, p in trained.items() if p.requires_grad}
    start = dict(tiny_model().named_parameters())
    name = next(n for n in ema if n.startswith("backbone.layers.0"))
    # After 3 updates with decay 1/2 the average sits strictly between start and end.
    assert not torch.equal(ema[name], trained[name].detach())
    assert not torch.equal(ema[name], start[name].detach())
    meta = json.loads((tmp_path / "state/step-0000003/state.json").read_text())
    assert "ema.safetensors" in meta["files"]


def test_batch_must_split_evenly():
    with pytest.raises(ValueError, match="equal micro-batches"):
        micro_batch_size(tiny_train_config(batch_size=6, grad_accum=4), 1)
    assert micro_batch_size(tiny_train_config(batch_size=8, grad_accum=2), 2) == 2


@pytest.mark.slow  # inductor compiles the blocks: tens of seconds on CPU
def test_compile_matches_eager(tmp_path):
    eager = train_model(tiny_model(), tiny_train_config(steps=2), stream, tmp_path / "a",
                        progress=False)  # fmt: skip
    model = tiny_model()
    compiled = train_model(model, tiny_train_config(steps=2, compile=True), stream,
                           tmp_path / "b", progress=False)  # fmt: skip
    assert losses(compiled) == pytest.approx(losses(eager), rel=1e-4)
    # Training compiled the blocks; what follows (evaluation, sampling) runs them eager again.
    assert all(block._compiled_call_impl is None for block in model.backbone.layers)


def test_compile_without_a_compiler_trains_eager(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("PATH", str(tmp_path))  # no g++, clang++ or c++ to be found
    monkeypatch.delenv("CXX", raising=False)
    cpu = torch.device("cpu")
    assert "C++ compiler" in du.compile_unavailable(cpu)
    model = tiny_model()
    du.compile_blocks(model, du.Dist())
    assert "training eager" in capsys.readouterr().out
    assert all(block._compiled_call_impl is None for block in model.backbone.layers)


def test_uncompile_restores_eager_blocks():
    model = tiny_model()
    if du.compile_unavailable(torch.device("cpu")) is None:
        du.compile_blocks(model, du.Dist())  # lazy: nothing is built until a block runs
        assert all(block._compiled_call_impl is not None for block in model.backbone.layers)
    du.uncompile(model)
    assert all(block._compiled_call_impl is None for block in model.backbone.layers)


def test_tensorboard_and_progress_bar(tmp_path, capsys):
    rows = train_model(tiny_model(), tiny_train_config(steps=2, tensorboard=True), stream,
                       tmp_path, progress=True)  # fmt: skip
    assert list((tmp_path / "tensorboard").glob("events.out.tfevents.*"))
    assert rows[-1]["tokens_per_s"] > 0
    bar = capsys.readouterr().err
    # stderr is not a terminal here: plain lines, no carriage-return frames (unimm.progress;
    # the ETA of an unfinished run is checked in tests/test_progress.py)
    assert "\r" not in bar and "train: 2/2 it (100%)" in bar and "elapsed" in bar
    assert "loss=" in bar and "tok_s=" in bar and "lr=" in bar
