"""Dynamic batching: one worker thread owns the model and runs waiting requests together.

A request is a job of one or more prompt rows, each with its own seed. The worker takes the
oldest job, then for up to `window_s` gathers later jobs with the same modality and sampling
settings (one `generate` call can only use one SamplingConfig) until `max_batch` rows, and runs
them as one call with per-row seeds: every recipe draws row i's randomness from seed i alone,
so a request's output does not depend on who shared its batch (tests/test_serve_batching.py).
Jobs of other settings keep their place for the next batch.

Back-pressure is explicit: `submit` raises QueueFull past `max_queue` waiting jobs, and a job
that has not started after the caller's timeout is cancelled (`Future.cancel` only succeeds
before the worker picks it up), so the server answers 429/503 instead of hanging.
"""

from __future__ import annotations

import collections
import dataclasses
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field

from unimm.data.sample import Segment
from unimm.recipes.base import Modality, SamplingConfig, UnifiedModel


class QueueFull(RuntimeError):
    """More jobs are waiting than the server accepts."""


@dataclass
class Job:
    prompts: list[list[Segment]]
    modality: Modality
    sampling: SamplingConfig
    seeds: list[int]
    future: Future = field(default_factory=Future)
    enqueued: float = field(default_factory=time.perf_counter)

    @property
    def key(self) -> tuple:
        return (self.modality, dataclasses.astuple(self.sampling))


# Called after every model call with (rows, jobs, seconds).
BatchHook = Callable[[int, int, float], None]


class DynamicBatcher:
    def __init__(
        self,
        model: UnifiedModel,
        max_batch: int = 16,
        window_s: float = 0.01,
        max_queue: int = 64,
        on_batch: BatchHook | None = None,
    ):
        self.model, self.max_batch, self.window_s = model, max_batch, window_s
        self.max_queue = max_queue
        self.on_batch = on_batch
        self._queue: collections.deque[Job] = collections.deque()
        self._cond = threading.Condition()
        self._closed = False
        self._thread = threading.Thread(target=self._loop, name="unimm-batcher", daemon=True)
        self._thread.start()

    @property
    def depth(self) -> int:
        """Jobs waiting, not counting the batch on the model."""
        with self._cond:
            return len(self._queue)

    def submit(
        self,
        prompts: list[list[Segment]],
        modality: Modality,
        sampling: SamplingConfig,
        seeds: list[int],
    ) -> Future:
        if len(seeds) != len(prompts):
            raise ValueError(f"{len(seeds)} seeds for {len(prompts)} prompts")
        job = Job(prompts, modality, sampling, seeds)
        with self._cond:
            if self._closed:
                raise QueueFull("the server is shutting down")
            if len(self._queue) >= self.max_queue:
                raise QueueFull(f"{len(self._queue)} requests are already waiting")
            self._queue.append(job)
            self._cond.notify_all()
        return job.future

    def close(self) -> None:
        with self._cond:
            self._closed = True
            for job in self._queue:
                job.future.cancel()
            self._queue.clear()
            self._cond.notify_all()
        self._thread.join(timeout=5)

    def _next_batch(self) -> list[Job] | None:
        """Block for the oldest live job, then gather compatible ones for up to window_s."""
        with self._cond:
            while True:
                while not self._queue and not self._closed:
                    self._cond.wait()
                if self._closed:
                    return None
                first = self._queue.popleft()
                if first.future.set_running_or_notify_cancel():
                    break  # else the caller gave up waiting: drop it
            batch, rows = [first], len(first.prompts)
            deadline = time.perf_counter() + self.window_s
            while rows < self.max_batch:
                for job in list(self._queue):
                    if job.key == first.key and rows + len(job.prompts) <= self.max_batch:
                        self._queue.remove(job)
                        if job.future.set_running_or_notify_cancel():
                            batch.append(job)
                            rows += len(job.prompts)
                left = deadline - time.perf_counter()
                if rows >= self.max_batch or left <= 0 or self._closed:
                    break
                self._cond.wait(left)
            return batch

    def _loop(self) -> None:
        while (batch := self._next_batch()) is not None:
            t0 = time.perf_counter()
            try:
                self._run(batch)
            finally:
                if self.on_batch is not None:
                    rows = sum(len(j.prompts) for j in batch)
                    self.on_batch(rows, len(batch), time.perf_counter() - t0)

    def _run(self, batch: list[Job]) -> None:
        first = batch[0]
        prompts = [p for job in batch for p in job.prompts]
        seeds = [s for job in batch for s in job.seeds]
        try:
            out = self.model.generate(prompts, first.modality, first.sampling, seed=seeds)
        except Exception as e:
            if len(batch) == 1:
                first.future.set_exception(e)
                return
            # One bad request (e.g. a prompt too long for the context) must not fail the
            # others: rerun each alone so the error reaches only its own caller.
            for job in batch:
                self._run_alone(job)
            return
        i = 0
        for job in batch:
            job.future.set_result(out[i : i + len(job.prompts)])
            i += len(job.prompts)

    def _run_alone(self, job: Job) -> None:
        try:
            out = self.model.generate(job.prompts, job.modality, job.sampling, seed=job.seeds)
        except Exception as e:
            job.future.set_exception(e)
        else:
            job.future.set_result(out)
