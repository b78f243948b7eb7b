"""Run the (recipe, seed) pairs of a compare, `jobs` worker processes at a time, each run's
output going to OUT/runs/RUN/log.txt, while this process prints one progress line per finished
run (and a heartbeat with the ETA while they train). Runs finished before (RUN/result.json)
are not redone; the others resume (unimm.compare.run).

Workers are separate processes even for jobs=1: a run's memory is returned when it ends, its
threads are set before it starts (the cores split evenly over the jobs) and its prints, tqdm
lines and C-level output all land in its log rather than between the progress lines.
"""

from __future__ import annotations

import multiprocessing
import os
import statistics
import sys
import threading
import time
import traceback
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path

from unimm.checkpoint import read_json
from unimm.compare.plan import Plan
from unimm.compare.run import LOG, RESULT, run_one
from unimm.compare.stats import si
from unimm.progress import duration

RUNS_DIR = "runs"
HEARTBEAT = 60.0  # seconds between two progress lines while no run finishes


def run_dir(out: Path, recipe: str, seed: int) -> Path:
    return out / RUNS_DIR / f"{recipe}-s{seed}"


def _init_worker(threads: int, parent: int) -> None:
    import torch

    os.environ["OMP_NUM_THREADS"] = str(threads)
    torch.set_num_threads(threads)

    # A compare killed by SIGKILL cannot stop its workers: each stops itself once its parent
    # is gone, so a resumed compare never races an orphan for the same run directory.
    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(1.0)
        os._exit(1)

    threading.Thread(target=watch, daemon=True).start()


def _work(plan_json: dict, recipe: str, seed: int, directory: str) -> dict:
    """In a worker: one run, with stdout and stderr (file descriptors 1 and 2, so C libraries'
    output too) appended to its log. A failure comes back as {"error": ...}, its traceback in
    the log, so that one diverging run does not stop the others."""
    path = Path(directory)
    path.mkdir(parents=True, exist_ok=True)
    sys.stdout.flush()
    sys.stderr.flush()
    saved = os.dup(1), os.dup(2)
    with (path / LOG).open("a") as log:
        os.dup2(log.fileno(), 1)
        os.dup2(log.fileno(), 2)
        try:
            return run_one(Plan.from_json(plan_json), recipe, seed, path)
        except Exception as e:
            traceback.print_exc()
            return {"error": f"{type(e).__name__}: {e}"}
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            for fd, copy in zip((1, 2), saved):
                os.dup2(copy, fd)
                os.close(copy)


def run_all(
    plan: Plan, out: Path, jobs: int = 1, say: Callable[[str], None] = print
) -> tuple[dict[str, dict], dict[str, str]]:
    """Finish every run of the plan; returns (results by run name, errors by run name)."""
    import torch

    results: dict[str, dict] = {}
    pending: list[tuple[str, int]] = []
    for recipe, seed in plan.runs():
        d = run_dir(out, recipe, seed)
        if (d / RESULT).is_file():
            results[d.name] = read_json(d / RESULT)
        else:
            pending.append((recipe, seed))
    threads = max(1, torch.get_num_threads() // jobs)
    say(
        f"compare: {len(plan.runs())} runs ({len(plan.recipes)} recipes x {len(plan.seeds)} "
        f"seeds) at {plan.budget.text} each; {len(results)} finished before, {len(pending)} to "
        f"run, {jobs} at a time with {threads} thread(s) each; logs in {out / RUNS_DIR}/RUN/{LOG}"
    )
    errors: dict[str, str] = {}
    if not pending:
        return results, errors
    start = time.monotonic()
    took: list[float] = []  # wall seconds of the runs finished in this session
    pool = ProcessPoolExecutor(
        max_workers=min(jobs, len(pending)),
        mp_context=multiprocessing.get_context("spawn"),
        initializer=_init_worker,
        initargs=(threads, os.getpid()),
    )
    queue = list(pending)
    futures: dict[Future, str] = {}
    began: dict[Future, float] = {}

    def submit() -> None:
        # Only `jobs` runs at a time are handed to the pool, so the ones in flight are the
        # ones running (the pool would queue more and call them running).
        while queue and len(futures) < jobs:
            recipe, seed = queue.pop(0)
            d = run_dir(out, recipe, seed)
            f = pool.submit(_work, plan.to_json(), recipe, seed, str(d))
            futures[f], began[f] = d.name, time.monotonic()

    try:
        submit()
        while futures:
            finished, _ = wait(futures, timeout=HEARTBEAT, return_when=FIRST_COMPLETED)
            for f in finished:
                name = futures.pop(f)
                try:
                    res = f.result()
                except BrokenProcessPool:
                    res = {"error": "its worker process died (out of memory?)"}
                if "error" in res:
                    errors[name] = res["error"]
                else:
                    results[name] = res
                    took.append(time.monotonic() - began[f])
                say(_done_line(name, res, len(results) + len(errors), len(plan.runs())))
            submit()
            if futures:
                now = time.monotonic()
                running = [now - began[f] for f in futures]
                eta = _eta(took, running, len(queue), jobs)
                done_now = len(pending) - len(queue) - len(futures)
                say(
                    _status_line(done_now, len(pending), now - start, eta, sorted(futures.values()))
                )
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
    return results, errors


def _done_line(name: str, res: dict, done: int, total: int) -> str:
    if "error" in res:
        return f"compare: [{done}/{total}] {name} failed: {res['error']}"
    m = res["metrics"]
    scores = ", ".join(
        f"{label} {m[key]:.3f}"
        for key, label in (("geneval_in", "GenEval-scene"), ("vqa_eval", "VQA-scene"))
        if key in m
    )
    return (
        f"compare: [{done}/{total}] {name} done in {duration(res['seconds'])} "
        f"({si(m['train_tokens'])} tokens, {si(m['train_flops'])} FLOPs): {scores}"
    )


def _eta(took: list[float], running: list[float], queued: int, jobs: int) -> float | None:
    """Seconds until the last run ends if every run takes as long as the finished ones did on
    average (runs of one compare share a budget, so they take about equally long); None
    before any has finished. running: how long each run in flight has been going."""
    if not took:
        return None
    mean = statistics.fmean(took)
    return (sum(max(mean - t, 0.0) for t in running) + mean * queued) / jobs


def _status_line(
    done: int, total: int, elapsed: float, eta: float | None, running: list[str]
) -> str:
    return (
        f"compare: {done}/{total} of this session's runs done, {duration(elapsed)} elapsed, "
        + ("eta after the first run" if eta is None else f"eta {duration(eta)}")
        + f"; running: {', '.join(running)}"
    )
