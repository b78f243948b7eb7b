"""What each part of a run trained on, and for how long: `unimm train` prints a line per part
and writes OUT/trained_on.json, so a run that fell back on the built-in world is never taken
for one on the user's data, and a run that mixes both says so."""

from __future__ import annotations

import json
from pathlib import Path

from unimm.data.streams import describe, world_only

FILE = "trained_on.json"


class TrainedOn:
    def __init__(self, spec: dict[str, float]):
        self.spec = dict(spec)
        self.data = describe(spec)
        self.parts: dict[str, dict] = {}

    @property
    def mixes_world(self) -> bool:
        return self.spec.get("world", 0) > 0 and not world_only(self.spec)

    def add(self, part: str, source: str | None = None, **facts) -> str:
        """Record that `part` trained on `source` (default: train.data, in words); facts are
        counts and seconds. Returns the line that says so."""
        self.parts[part] = {"source": source or self.data, **facts}
        return line(part, self.parts[part])

    def lines(self) -> list[str]:
        out = [f"data: {self.data}"]
        if self.mixes_world:
            out.append("note: the built-in scene world is part of this run's data (train.data)")
        return out + [line(p, facts) for p, facts in self.parts.items()]

    def save(self, out_dir: str | Path) -> None:
        record = {"data": self.spec, "in_words": self.data, "mixes_world": self.mixes_world}
        (Path(out_dir) / FILE).write_text(json.dumps(record | {"parts": self.parts}, indent=2))


def line(part: str, facts: dict) -> str:
    counts = [f"{facts[k]} {k}" for k in ("steps", "images", "pairs", "texts", "samples")
              if k in facts]  # fmt: skip
    text = f"{part}: " + (", ".join(counts) + " of " if counts else "") + facts["source"]
    if "seconds" in facts:
        text += f", {facts['seconds']:.1f} s"
    return text
