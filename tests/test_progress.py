"""Progress output: tqdm on a terminal, a plain line every N seconds in a log file."""

from __future__ import annotations

import io

from tqdm import tqdm

from unimm.progress import LineProgress, progress_bar


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


class Clock:
    """A fake clock that advances `step` seconds per reading."""

    def __init__(self, step: float) -> None:
        self.t, self.step = 0.0, step

    def __call__(self) -> float:
        self.t += self.step
        return self.t


def test_a_fast_loop_in_a_log_writes_one_plain_line():
    log = io.StringIO()
    bar = progress_bar(range(10_000), desc="export", file=log)
    assert isinstance(bar, LineProgress)
    assert sum(1 for _ in bar) == 10_000
    text = log.getvalue()
    assert "\r" not in text and "\x1b" not in text  # no carriage returns, no terminal codes
    assert text.count("\n") == 1  # done well within 30 s: only the closing line
    assert text.startswith("export: 10000/10000 it (100%), ")


def test_a_slow_loop_writes_at_most_one_line_per_period():
    log = io.StringIO()
    # 1000 steps, one clock second each: 1000 s in all, so about 1000 / 30 periodic lines.
    bar = LineProgress(total=1000, desc="train", unit="step", every=30, file=log, clock=Clock(1.0))
    for step in range(1000):
        bar.set_postfix(loss=f"{1 / (step + 1):.3f}")
        bar.update(1)
    bar.close()
    bar.close()  # closing twice writes nothing more
    lines = log.getvalue().splitlines()
    assert 30 <= len(lines) <= 1000 // 30 + 2 and "\r" not in log.getvalue()
    assert lines[0].startswith("train: 30/1000 step (3%), 30s elapsed, eta ")
    assert lines[-1].startswith("train: 1000/1000 step (100%), 16m41s elapsed, loss=0.001")


def test_resumed_bar_counts_from_initial_and_estimates_from_this_run():
    log = io.StringIO()
    bar = LineProgress(total=100, initial=50, desc="train", every=10, file=log, clock=Clock(1.0))
    for _ in range(10):
        bar.update(1)
    # 10 steps in 10 s since the resume: 40 left at 1 step/s
    assert log.getvalue().splitlines() == ["train: 60/100 it (60%), 10s elapsed, eta 40s"]


def test_terminal_gets_tqdm_and_disable_is_silent():
    assert isinstance(progress_bar(total=3, file=Terminal()), tqdm)
    log = io.StringIO()
    bar = progress_bar(total=3, desc="x", file=log, disable=True)
    bar.update(2)
    bar.set_postfix(loss="1.0")
    bar.close()
    assert bar.n == 2 and log.getvalue() == ""
    assert list(progress_bar(range(3), disable=True)) == [0, 1, 2]


def test_a_clock_budget_sets_the_bar_total_to_where_the_clock_ends():
    from unimm.train.config import TrainConfig
    from unimm.train.schedule import expected_steps

    cfg = TrainConfig(steps=2400, max_seconds=510.0)
    # 400 steps in 170 s: a third of the clock spent, so the run ends near step 1200
    assert expected_steps(cfg, 400, 170 / 510) == 1200
    assert expected_steps(cfg, 400, 0.1) == 2400  # never past train.steps
    assert expected_steps(cfg, 400, 0.0) == 2400
    assert expected_steps(cfg, 400, 1.2) == 400  # never before the step it is at


def test_a_run_the_clock_ends_closes_its_bar_at_100_percent(tmp_path, capsys):
    from tests.train_helpers import stream, tiny_model, tiny_train_config
    from unimm.train.trainer import train_model

    cfg = tiny_train_config(steps=100_000, max_seconds=1.0)
    train_model(tiny_model(), cfg, stream, tmp_path, progress=True)
    last = [line for line in capsys.readouterr().err.splitlines() if line.startswith("train:")][-1]
    done, total = last.split()[1].split("/")
    assert done == total and "(100%)" in last and int(done) < 100_000
