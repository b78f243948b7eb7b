"""Intervals over seeds: mean ± the half-width of a Student-t confidence interval, and whether
two recipes' intervals are apart.

With n seeds the interval is mean ± t(1 - (1 - c) / 2, n - 1) * s / sqrt(n), s the sample
standard deviation: with 3 seeds at 95 % that is ± 4.30 s / sqrt(3), wide because three seeds
say little. Two recipes are "separated" on a metric when their intervals do not overlap. That
needs a larger gap than a two-sample t-test at the same level, so the verdict errs toward "not
separated" rather than toward a difference that seed noise could explain.
"""

from __future__ import annotations

import math
import statistics
from dataclasses import asdict, dataclass


def t_quantile(p: float, df: int) -> float:
    """The p quantile of Student's t with df degrees of freedom (scipy.stats.t.ppf)."""
    from scipy.stats import t

    return float(t.ppf(p, df))


@dataclass(frozen=True)
class Interval:
    n: int
    mean: float
    std: float  # sample standard deviation; nan for one value
    half_width: float  # nan for one value: one seed gives no interval
    confidence: float

    @property
    def low(self) -> float:
        return self.mean - self.half_width

    @property
    def high(self) -> float:
        return self.mean + self.half_width

    def to_dict(self) -> dict:
        """JSON-ready: nan (one seed) as null."""
        d = {**asdict(self), "low": self.low, "high": self.high}
        return {k: None if isinstance(v, float) and math.isnan(v) else v for k, v in d.items()}


def t_interval(values: list[float], confidence: float = 0.95) -> Interval:
    if not values:
        raise ValueError("an interval needs at least one value")
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    n, mean = len(values), statistics.fmean(values)
    if n == 1:
        return Interval(1, mean, math.nan, math.nan, confidence)
    std = statistics.stdev(values)
    half = t_quantile(1 - (1 - confidence) / 2, n - 1) * std / math.sqrt(n)
    return Interval(n, mean, std, half, confidence)


def separated(a: Interval, b: Interval) -> bool:
    """True when the two intervals do not overlap (never for a single seed: no interval)."""
    if math.isnan(a.half_width) or math.isnan(b.half_width):
        return False
    return a.high < b.low or b.high < a.low


def si(v: float) -> str:
    """A count with an SI prefix, three significant digits: 1.82k, 15.2M, 3.00e13 as 30.0T."""
    for factor, prefix in ((1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(v) >= factor:
            return f"{v / factor:.3g}{prefix}"
    return f"{v:.3g}"
