"""Token and FLOP budgets (train.max_tokens, train.max_flops) and saves at fractions of the
budget (train.save_fractions): where training stops, what the schedule does, what is saved."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from tests.train_helpers import stream, tiny_model, tiny_train_config
from unimm.train.config import TrainConfig
from unimm.train.schedule import lr_at
from unimm.train.state import list_states
from unimm.train.trainer import train_model


def trained(out: Path, **kw) -> tuple[list[dict], dict]:
    rows = train_model(tiny_model(), tiny_train_config(**kw), stream, out, progress=False)
    return rows, json.loads((out / "trainer_state.json").read_text())


@pytest.fixture(scope="module")
def tokens_after(tmp_path_factory) -> dict[int, float]:
    """Tokens read after 3 and 4 steps (the stream is a pure function of the step)."""
    root = tmp_path_factory.mktemp("steps")
    return {n: trained(root / str(n), steps=n)[1]["tokens"] for n in (3, 4)}


def test_max_tokens_stops_at_the_first_step_that_reaches_it(tmp_path, tokens_after):
    t3 = tokens_after[3]
    for budget, steps in ((t3, 3), (t3 - 1, 3), (t3 + 1, 4)):
        _, state = trained(tmp_path / str(budget), steps=100, max_tokens=int(budget))
        assert state["step"] == steps
        assert state["tokens"] == tokens_after[steps]


def test_max_flops_is_a_token_budget_of_6_n_tokens(tmp_path, tokens_after):
    n = sum(p.numel() for p in tiny_model().parameters() if p.requires_grad)
    _, state = trained(tmp_path, steps=100, max_flops=6.0 * n * tokens_after[3])
    assert state["step"] == 3
    assert state["trained_parameters"] == n
    assert state["flops"] == 6 * n * tokens_after[3]


def test_schedule_follows_the_token_budget_after_a_warmup_in_steps(tmp_path, tokens_after):
    lr, warmup = 3e-3, 2
    rows, state = trained(
        tmp_path, steps=1000, warmup_steps=warmup, lr=lr, max_tokens=int(tokens_after[4])
    )
    assert state["step"] == 4
    got = [r["lr"] for r in rows]
    # Warm-up: steps 1 and 2 at lr/2 and lr although half the token budget is spent by then.
    assert got[:2] == pytest.approx([lr / 2, lr])
    # Then cosine on the token fraction: at 1000 steps alone the rate would still be ~lr.
    step_only = lr_at(3, 1000, warmup, lr, 0.1)
    assert got[3] < got[2] < step_only
    assert got[3] < 0.6 * lr


def test_states_are_saved_at_each_fraction_of_the_budget_once(tmp_path):
    out = tmp_path / "run"
    train_model(tiny_model(), tiny_train_config(steps=8, save_fractions=4), stream, out,
                progress=False)  # fmt: skip
    assert [p.name for p in list_states(out)] == ["step-0000002", "step-0000004", "step-0000006"]
    # Resumed from step 4, the run saves 6 again but leaves 2 and 4 alone.
    mtimes = {p.name: (p / "state.json").stat().st_mtime_ns for p in list_states(out)}
    shutil.rmtree(out / "state" / "step-0000006")
    train_model(tiny_model(), tiny_train_config(steps=8, save_fractions=4), stream, out,
                progress=False, resume=True)  # fmt: skip
    states = list_states(out)
    assert [p.name for p in states] == ["step-0000002", "step-0000004", "step-0000006"]
    for p in states[:2]:
        assert (p / "state.json").stat().st_mtime_ns == mtimes[p.name]


def test_a_token_budget_fraction_is_saved_where_the_tokens_cross_it(tmp_path, tokens_after):
    half = tokens_after[4] / 2
    train_model(tiny_model(), tiny_train_config(steps=100, save_fractions=2,
                max_tokens=int(tokens_after[4])), stream, tmp_path, progress=False)  # fmt: skip
    (state,) = list_states(tmp_path)
    meta = json.loads((state / "state.json").read_text())
    assert meta["tokens"] >= half and meta["step"] < 4


def test_budgets_must_be_positive():
    for kw in ({"max_tokens": 0}, {"max_flops": -1.0}, {"save_fractions": -1}):
        with pytest.raises(ValueError):
            TrainConfig(**kw)
