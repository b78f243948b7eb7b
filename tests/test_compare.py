"""`unimm compare`: budget syntax, interval maths, the verdict sentences, and a whole compare of
2 recipes x 2 seeds on the tiny preset, killed with SIGKILL mid-way and resumed."""

from __future__ import annotations

import json
import math
import os
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path

import pytest

from unimm.cli import main
from unimm.compare.budget import UNBOUNDED_STEPS, parse_budget
from unimm.compare.plan import PLAN_FILE, make_plan
from unimm.compare.report import separation, summarize
from unimm.compare.stats import Interval, separated, si, t_interval, t_quantile
from unimm.presets import get_run_config
from unimm.train.state import list_states

ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
# Continuous pixel-patch recipes: no image tokenizer to train, so a run takes seconds.
RECIPES = ("transfusion", "mar")
RUNS = [f"{r}-s{s}" for r in RECIPES for s in (0, 1)]
ARGS = [
    "compare", "--recipes", ",".join(RECIPES), "--budget", "2ktok", "--seeds", "2",
    "--preset", "tiny", "--per-task", "1", "--images-per-prompt", "1", "--questions", "4",
    "--captions", "2", "--curve-points", "2", "--curve-per-task", "1", "--curve-questions", "2",
    "--curve-captions", "2",
]  # fmt: skip
# Two-sided 95 % Student-t quantiles t(0.975, df) from the published tables.
T975 = {1: 12.7062047, 2: 4.30265273, 4: 2.77644511, 30: 2.04227246}


# Budget syntax


@pytest.mark.parametrize(
    "text, kind, value",
    [
        ("15m", "seconds", 900.0),
        ("90s", "seconds", 90.0),
        ("1.5h", "seconds", 5400.0),
        ("2Mtok", "tokens", 2e6),
        ("500ktok", "tokens", 5e5),
        ("2e6tokens", "tokens", 2e6),
        ("3e13flop", "flops", 3e13),
        ("30Tflops", "flops", 3e13),
        (" 1.5Gflop ", "flops", 1.5e9),
    ],
)
def test_budget_syntax(text, kind, value):
    b = parse_budget(text)
    assert (b.kind, b.value) == (kind, value)


@pytest.mark.parametrize("text", ["15", "15x", "m", "-5m", "0tok", "15M", "2 Mtok", "1e3", ""])
def test_bad_budget_is_refused(text):
    with pytest.raises(ValueError, match="bad budget"):
        parse_budget(text)


def test_budget_becomes_train_settings_that_let_the_budget_bind():
    for text, key, value in (
        ("90s", "max_seconds", 90.0),
        ("2Mtok", "max_tokens", 2_000_000),
        ("3e13flop", "max_flops", 3e13),
    ):
        cfg = get_run_config("tiny", parse_budget(text).overrides())
        assert getattr(cfg.train, key) == value
        assert cfg.train.steps == UNBOUNDED_STEPS


# Interval maths


def test_t_quantiles_match_the_tables():
    for df, want in T975.items():
        assert t_quantile(0.975, df) == pytest.approx(want, abs=1e-6)


def test_t_interval_by_hand():
    iv = t_interval([1.0, 2.0, 3.0])  # mean 2, sample std 1
    assert (iv.n, iv.mean, iv.std) == (3, 2.0, 1.0)
    assert iv.half_width == pytest.approx(T975[2] / math.sqrt(3))
    assert (iv.low, iv.high) == pytest.approx((2 - 2.48414, 2 + 2.48414), abs=1e-5)
    two = t_interval([0.40, 0.46])
    assert two.half_width == pytest.approx(T975[1] * statistics.stdev([0.40, 0.46]) / math.sqrt(2))
    one = t_interval([0.5])
    assert math.isnan(one.half_width) and one.to_dict()["half_width"] is None


def test_separated_means_the_intervals_do_not_overlap():
    def iv(mean, half):
        return Interval(3, mean, 1.0, half, 0.95)

    assert separated(iv(0.2, 0.05), iv(0.4, 0.1))
    assert not separated(iv(0.2, 0.1), iv(0.4, 0.15))  # 0.3 > 0.25: overlap
    assert not separated(t_interval([0.1]), t_interval([0.9]))  # one seed: no interval


def test_si_prefixes():
    assert [si(v) for v in (12.5, 1820.0, 2.0e6, 3.0e13)] == ["12.5", "1.82k", "2M", "30T"]


def test_eta_assumes_runs_take_as_long_as_the_finished_ones():
    from unimm.compare.runner import _eta

    assert _eta([], [5.0], 3, 1) is None
    # mean 15 s: the run in flight for 5 s has 10 left, then 2 queued runs of 15.
    assert _eta([10.0, 20.0], [5.0], 2, 1) == 40.0
    assert _eta([10.0, 20.0], [30.0, 5.0], 2, 2) == 20.0  # an overdue run counts as done


def test_verdict_sentences():
    plan = make_plan("chameleon,showo", "2Mtok", 3, "tiny")
    scores = {
        "chameleon": ([0.40, 0.42, 0.41], [0.5, 0.7, 0.6]),
        "showo": ([0.60, 0.61, 0.62], [0.55, 0.75, 0.6]),
    }
    results = {
        f"{r}-s{s}": {"recipe": r, "seed": s, "metrics": {"geneval_in": g[s], "vqa_eval": v[s]}}
        for r, (g, v) in scores.items()
        for s in range(3)
    }
    summary = summarize(plan, results)
    assert summary["showo"]["geneval_in"].mean == pytest.approx(0.61)
    geneval, vqa = separation(summary)
    assert geneval["separated"] and not vqa["separated"]
    assert geneval["sentence"].startswith(
        "GenEval-scene in-distribution, chameleon vs showo: separated, showo higher (0.410 ["
    )
    assert vqa["sentence"].startswith("VQA-scene, chameleon vs showo: not separated at this budget")


# Bad input


@pytest.mark.parametrize(
    "change, message",
    [
        ({"--recipes": "chameleon,dalle"}, "unknown recipe 'dalle'"),
        ({"--recipes": "mar,mar"}, "names a recipe twice"),
        ({"--budget": "15x"}, "bad budget '15x'"),
        ({"--seeds": "0"}, "--seeds must be at least 1"),
        ({"--jobs": "0"}, "--jobs must be at least 1"),
        ({"--preset": "galactic"}, "unknown preset 'galactic'"),
        ({"extra": "train.seed=3"}, "train.seed is set by compare itself"),
        ({"extra": "train.stepz=3"}, "unknown config key 'train.stepz'"),
        ({"--image-tokenizer": "no/such/dir"}, "VQ tokenizer file not found"),
    ],
)
def test_bad_input_is_one_line_and_writes_nothing(change, message, tmp_path, capsys):
    argv = list(ARGS)
    for flag, value in change.items():
        if flag == "extra":
            argv.append(value)
        elif flag in argv:
            argv[argv.index(flag) + 1] = value
        else:
            argv += [flag, value]
    out = tmp_path / "cmp"
    assert main([*argv, "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1
    assert not out.exists()


def test_existing_dir_needs_resume_and_the_same_settings(tmp_path, capsys):
    out = tmp_path / "cmp"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    assert main([*ARGS, "--out", str(out)]) == 2
    assert "already exists: pass --resume" in capsys.readouterr().err
    assert main([*ARGS, "--out", str(out), "--resume"]) == 2  # not a compare directory
    assert f"holds no {PLAN_FILE}" in capsys.readouterr().err
    plan = make_plan(",".join(RECIPES), "3ktok", 2, "tiny")
    (out / PLAN_FILE).write_text(json.dumps(plan.to_json()))
    assert main([*ARGS, "--out", str(out), "--resume"]) == 2  # 2ktok now
    err = capsys.readouterr().err
    assert "other settings (budget, eval, curve differ" in err and len(err.splitlines()) == 1
    assert sorted(p.name for p in out.iterdir()) == ["notes.txt", PLAN_FILE]


# A whole compare: killed mid-way, resumed


def mtimes(directory: Path) -> dict[Path, int]:
    return {p: p.stat().st_mtime_ns for p in directory.rglob("*") if p.is_file()}


@pytest.fixture(scope="module")
def compared(tmp_path_factory):
    """Start a compare in its own process group, SIGKILL it once the first run is finished and
    the second has saved a training state (half its budget), then resume it in-process."""
    root = tmp_path_factory.mktemp("compare")
    out = root / "cmp"
    with (root / "killed.log").open("w") as log:
        victim = subprocess.Popen(
            [sys.executable, "-m", "unimm", *ARGS, "--out", str(out)],
            env=ENV,
            cwd=root,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    second = out / "runs" / RUNS[1]
    deadline = time.time() + 600  # a loaded machine starts python + torch slowly
    while not list_states(second):
        assert victim.poll() is None, (root / "killed.log").read_text()
        assert time.time() < deadline, "the compare never reached its second run's state"
        time.sleep(0.01)
    os.killpg(victim.pid, signal.SIGKILL)
    victim.wait()
    finished = out / "runs" / RUNS[0]
    assert (finished / "result.json").is_file() and not (second / "result.json").exists()
    before = mtimes(finished)
    t0 = time.perf_counter()
    code = main([*ARGS, "--out", str(out), "--resume"])
    return out, before, code, time.perf_counter() - t0


def test_resume_finishes_the_rest_and_leaves_finished_runs_alone(compared):
    out, before, code, _ = compared
    assert code == 0
    assert mtimes(out / "runs" / RUNS[0]) == before
    log = (out / "runs" / RUNS[1] / "log.txt").read_text()
    assert "resumed from" in log and "(step 2)" in log  # from its training state, not anew
    for name in RUNS:
        assert (out / "runs" / name / "result.json").is_file()
        assert not list_states(out / "runs" / name)  # states go once a run is finished


def test_report_holds_intervals_verdicts_curve_and_samples(compared):
    out = compared[0]
    data = json.loads((out / "compare.json").read_text())
    runs = {n: json.loads((out / "runs" / n / "result.json").read_text()) for n in RUNS}
    assert set(data["recipes"]) == set(RECIPES) and not data["failed"]
    for recipe, metrics in data["recipes"].items():
        assert {"geneval_in", "geneval_in/counting", "vqa_eval", "caption_eval"} <= set(metrics)
        assert {"images_per_s", "train_tokens_per_s", "trained_parameters"} <= set(metrics)
        for key, iv in metrics.items():
            values = [runs[f"{recipe}-s{s}"]["metrics"][key] for s in (0, 1)]
            assert iv["values"] == values and iv["n"] == 2
            assert iv["mean"] == pytest.approx(statistics.fmean(values))
            half = T975[1] * statistics.stdev(values) / math.sqrt(2)
            assert iv["half_width"] == pytest.approx(half, rel=1e-7, abs=1e-12)
    for r in runs.values():  # every budget currency is recorded, whichever one bound
        m = r["metrics"]
        assert m["train_tokens"] >= 2000 and m["train_seconds"] > 0
        assert m["train_flops"] == 6 * m["trained_parameters"] * m["train_tokens"]
        assert [p["tokens"] for p in r["curve"]][-1] == m["train_tokens"]
    # Verdicts: one per pair and headline metric, each agreeing with the intervals.
    report = (out / "report.md").read_text()
    assert "| metric | transfusion | mar |" in report

    def cell(iv: dict) -> str:  # mean ± half-width; the mean alone where the seeds agree
        return f"{iv['mean']:.3f}" + (f" ± {iv['half_width']:.3f}" if iv["std"] else "")

    geneval = [cell(data["recipes"][r]["geneval_in"]) for r in RECIPES]
    assert f"| GenEval-scene in-distribution | {' | '.join(geneval)} |" in report
    speed = next(x for x in report.splitlines() if x.startswith("| images/s"))
    assert speed.count(" ± ") == 2  # two timings never agree to the digit
    headline = [
        "geneval_in",
        "geneval_heldout",
        "vqa_eval",
        "vqa_heldout",
        "caption_eval",
        "images_per_s",
        "train_tokens_per_s",
    ]
    assert [s["metric"] for s in data["separation"]] == headline
    for s in data["separation"]:
        a, b = data["recipes"][s["a"]][s["metric"]], data["recipes"][s["b"]][s["metric"]]
        assert s["separated"] == (a["high"] < b["low"] or b["high"] < a["low"])
        verdict = "separated, " if s["separated"] else "not separated at this budget ("
        assert verdict in s["sentence"] and f"- {s['sentence']}" in report
    for recipe in RECIPES:  # one state at half the budget, then the final checkpoint
        flops = [p["flops"] for p in data["curve"][recipe]]
        assert len(flops) == 2 and flops[0] < flops[1]
    assert (out / "quality_vs_compute.png").stat().st_size > 0
    assert (out / "samples.png").stat().st_size > 0


def test_resuming_a_finished_compare_redoes_nothing(compared, capsys):
    out = compared[0]
    results = {n: (out / "runs" / n / "result.json").stat().st_mtime_ns for n in RUNS}
    assert main([*ARGS, "--out", str(out), "--resume"]) == 0
    assert "4 finished before, 0 to run" in capsys.readouterr().out
    assert {n: (out / "runs" / n / "result.json").stat().st_mtime_ns for n in RUNS} == results


def test_a_shared_image_tokenizer_serves_the_discrete_recipes_only(tmp_path, capsys):
    from unimm.tokenizers.vq import VQTokenizer

    shared = tmp_path / "vq"
    VQTokenizer(get_run_config("tiny").vq).save_pretrained(shared)
    plan = make_plan("chameleon,transfusion", "2ktok", 1, "tiny", image_tokenizer=str(shared))
    assert plan.image_tokenizer_for("chameleon") == str(shared.resolve())
    assert plan.image_tokenizer_for("transfusion") is None  # continuous: makes its own
    out = tmp_path / "cmp"
    argv = [
        "compare", "--recipes", "chameleon", "--budget", "2ktok", "--seeds", "1",
        "--preset", "tiny", "--per-task", "1", "--images-per-prompt", "1", "--questions", "2",
        "--captions", "1", "--curve-points", "0", "--image-tokenizer", str(shared),
        "--out", str(out),
    ]  # fmt: skip
    assert main(argv) == 0
    log = (out / "runs" / "chameleon-s0" / "log.txt").read_text()
    assert f"image tokenizer: given: {shared.resolve()}" in log
    assert json.loads((out / PLAN_FILE).read_text())["image_tokenizer"] == str(shared.resolve())
    # resuming with another tokenizer would mix runs that do not compare
    other = tmp_path / "vq2"
    VQTokenizer(get_run_config("tiny").vq).save_pretrained(other)
    argv[argv.index("--image-tokenizer") + 1] = str(other)
    assert main([*argv, "--resume"]) == 2
    assert "other settings (image_tokenizer differ" in capsys.readouterr().err
