"""Progress bars that stay readable when the output is a log file.

On a terminal (and in a notebook) `progress_bar` is tqdm. Anywhere else (CI, `nohup ... > log`,
a batch scheduler) tqdm's frames are carriage-return overwrites: in a file they pile up into
one line of thousands of frames. There it returns a `LineProgress` instead, which prints one
plain line at most every `every` seconds and one when it closes:

    train: 120/576 (21%), 1m02s elapsed, eta 3m55s, loss=3.210, tok_s=1204
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any, TextIO

EVERY = 30.0  # seconds between two lines in a log


def _is_interactive(file: TextIO) -> bool:
    """A terminal, or a Jupyter kernel's stream (where tqdm.auto draws a widget)."""
    if type(file).__module__.startswith("ipykernel"):
        return True
    isatty = getattr(file, "isatty", None)
    return bool(isatty and isatty())


def duration(seconds: float) -> str:
    """How long, for a person: 7s, 2m05s, 1h02m03s."""
    s = int(seconds)
    h, m = divmod(s // 60, 60)
    return f"{h}h{m:02d}m{s % 60:02d}s" if h else f"{m}m{s % 60:02d}s" if m else f"{s}s"


class LineProgress:
    """The part of tqdm's interface that unimm uses (iterate, update, set_postfix, close, n),
    writing plain lines: at most one per `every` seconds, plus a last one on close."""

    def __init__(
        self,
        iterable: Iterable | None = None,
        *,
        total: int | None = None,
        desc: str = "",
        unit: str = "it",
        initial: int = 0,
        every: float = EVERY,
        file: TextIO | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if total is None and iterable is not None and hasattr(iterable, "__len__"):
            total = len(iterable)
        self.iterable, self.total, self.desc, self.unit = iterable, total, desc, unit
        self.n = self.initial = initial
        self.every, self.file, self.clock = every, file or sys.stderr, clock
        self.start = self.last = clock()
        self.postfix: dict[str, Any] = {}
        self.closed = False

    def __iter__(self) -> Iterator:
        try:
            for item in self.iterable:
                yield item
                self.update(1)
        finally:
            self.close()

    def __enter__(self) -> LineProgress:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def update(self, n: int = 1) -> None:
        self.n += n
        now = self.clock()
        if now - self.last >= self.every:
            self.last = now
            self._write(now)

    def set_postfix(self, **kw: Any) -> None:
        self.postfix = kw

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self._write(self.clock())

    def line(self, now: float) -> str:
        elapsed = now - self.start
        done = f"{self.n}/{self.total}" if self.total else f"{self.n}"
        parts = [f"{self.desc}: {done} {self.unit}" if self.desc else f"{done} {self.unit}"]
        if self.total:
            parts[0] += f" ({100 * self.n / self.total:.0f}%)"
        parts.append(f"{duration(elapsed)} elapsed")
        rate = (self.n - self.initial) / elapsed if elapsed > 0 else 0.0
        if self.total and rate > 0 and self.n < self.total:
            parts.append(f"eta {duration((self.total - self.n) / rate)}")
        parts += [f"{k}={v}" for k, v in self.postfix.items()]
        return ", ".join(parts)

    def _write(self, now: float) -> None:
        print(self.line(now), file=self.file, flush=True)


class _Silent:
    """progress=False: the same interface, no output."""

    def __init__(self, iterable: Iterable | None = None, initial: int = 0) -> None:
        self.iterable, self.n = iterable, initial

    def __iter__(self) -> Iterator:
        return iter(self.iterable)

    def __enter__(self) -> _Silent:
        return self

    def __exit__(self, *exc) -> None:
        pass

    def update(self, n: int = 1) -> None:
        self.n += n

    def set_postfix(self, **kw: Any) -> None:
        pass

    def close(self) -> None:
        pass


def progress_bar(
    iterable: Iterable | None = None,
    *,
    total: int | None = None,
    desc: str = "",
    unit: str = "it",
    initial: int = 0,
    disable: bool = False,
    every: float = EVERY,
    file: TextIO | None = None,
):
    """tqdm on a terminal or in a notebook; `LineProgress` (a line every `every` s) otherwise;
    silent with `disable`. Progress goes to stderr, like tqdm's."""
    if disable:
        return _Silent(iterable, initial)
    file = file or sys.stderr
    if _is_interactive(file):
        from tqdm.auto import tqdm

        return tqdm(
            iterable, total=total, desc=desc, unit=unit, initial=initial, file=file,
            dynamic_ncols=True,
        )  # fmt: skip
    return LineProgress(
        iterable, total=total, desc=desc, unit=unit, initial=initial, every=every, file=file
    )
