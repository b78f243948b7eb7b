"""The budget every run of `unimm compare` trains for, in one of three currencies:

    15m, 90s, 1.5h      wall-clock time of the unified model's training (train.max_seconds)
    2Mtok, 500ktok      training tokens, the sequence positions the model reads (train.max_tokens)
    3e13flop, 30Tflop   training FLOPs, 6 x trained parameters x tokens (train.max_flops), so a
                        recipe with more trained parameters reads fewer tokens

k, M, G, T multiply tokens and FLOPs by 1e3, 1e6, 1e9, 1e12 ("m" alone means minutes). The
tokenizers (and a semantic encoder) train before it for their preset's fixed seconds, outside
the budget. Training stops at the first step that reaches the budget, so a run overshoots it
by less than one step. Whatever the currency, each run records all three (unimm.compare.run).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

BudgetKind = Literal["seconds", "tokens", "flops"]

_PATTERN = re.compile(
    r"^(?P<number>\d+(?:\.\d*)?(?:[eE][+-]?\d+)?|\.\d+(?:[eE][+-]?\d+)?)"
    r"(?:(?P<prefix>[kMGT])?(?P<count>tok|tokens|flop|flops)|(?P<clock>s|m|h))$"
)
_PREFIX = {None: 1.0, "k": 1e3, "M": 1e6, "G": 1e9, "T": 1e12}
_CLOCK = {"s": 1.0, "m": 60.0, "h": 3600.0}
# The budget, not the step count, must end every run: train.steps only has to stay out of its
# way (the schedule's warm-up counts real steps, the decay follows the budget).
UNBOUNDED_STEPS = 10_000_000
EXAMPLES = "e.g. 15m, 90s, 2Mtok or 3e13flop"


@dataclass(frozen=True)
class Budget:
    kind: BudgetKind
    value: float  # seconds, tokens or FLOPs
    text: str  # as the user wrote it

    def overrides(self) -> list[str]:
        """The train.* settings that give one run this budget."""
        if self.kind == "seconds":
            limit = f"train.max_seconds={self.value!r}"
        elif self.kind == "tokens":
            limit = f"train.max_tokens={int(self.value)}"
        else:
            limit = f"train.max_flops={self.value!r}"
        return [f"train.steps={UNBOUNDED_STEPS}", limit]

    def describe(self) -> str:
        unit = {"seconds": "s of training", "tokens": "training tokens", "flops": "training FLOPs"}
        return f"{self.text} ({self.value:.4g} {unit[self.kind]} per run)"


def parse_budget(text: str) -> Budget:
    """'15m' -> 900 s, '2Mtok' -> 2e6 tokens, '3e13flop' -> 3e13 FLOPs; ValueError otherwise."""
    m = _PATTERN.match(text.strip())
    if m is None:
        raise ValueError(f"bad budget {text!r}: expected a number and a unit, {EXAMPLES}")
    number = float(m["number"])
    if m["clock"]:
        kind, value = "seconds", number * _CLOCK[m["clock"]]
    else:
        kind = "tokens" if m["count"].startswith("tok") else "flops"
        value = number * _PREFIX[m["prefix"]]
    if kind == "tokens":
        value = float(round(value))
    if value <= 0:
        raise ValueError(f"bad budget {text!r}: it must be more than zero ({EXAMPLES})")
    return Budget(kind, value, text.strip())
