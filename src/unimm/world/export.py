"""Write a slice of the world stream to disk: PNG files plus one JSONL of samples.

Each JSONL line: {"task", "segments": [{"text": ...} | {"image": "images/....png"}],
"targets": [...], "index": i}. Written sample by sample (nothing held in memory) into a
temporary folder that is renamed into place at the end, so a crash never leaves a half set.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

from unimm.data.images import save_image
from unimm.data.sample import Image, Text
from unimm.progress import progress_bar
from unimm.world.scene import HeldoutMode
from unimm.world.tasks import world_samples


def export_world(
    out_dir: str | Path,
    n: int,
    split: str = "train",
    seed: int = 0,
    tasks: dict[str, float] | None = None,
    heldout: HeldoutMode | None = None,
    resolution: int = 64,
    overwrite: bool = False,
    progress: bool = True,
) -> Path:
    """Export samples 0..n-1 of world_samples(split, seed, ...) to out_dir; returns out_dir."""
    out = Path(out_dir)
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    if out.exists() and not overwrite:
        raise ValueError(f"{out} already exists; pass overwrite=True to replace it")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        (tmp / "images").mkdir()
        stream = world_samples(split, seed, tasks, heldout, resolution)
        with open(tmp / "samples.jsonl", "w") as f:
            for _, sample in zip(
                progress_bar(range(n), desc="export", disable=not progress), stream, strict=False
            ):
                i = sample.meta["index"]
                segs = []
                for k, seg in enumerate(sample.segments):
                    if isinstance(seg, Text):
                        segs.append({"text": seg.text})
                    elif isinstance(seg, Image):
                        name = f"images/{i:08d}_{k}.png"
                        save_image(seg.pixels, tmp / name)
                        segs.append({"image": name})
                row = {
                    "task": sample.task,
                    "segments": segs,
                    "targets": list(sample.targets),
                    "index": i,
                }
                f.write(json.dumps(row) + "\n")
        meta = {
            "n": n,
            "split": split,
            "seed": seed,
            "tasks": tasks,
            "heldout": heldout,
            "resolution": resolution,
        }
        (tmp / "info.json").write_text(json.dumps(meta, indent=2))
        if out.exists():
            shutil.rmtree(out)
        os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out
