"""Edit chains: three instructions in a row, each applied to the model's own previous output.

Episode i starts from Edit-scene's i-th sample (its source and instruction) and continues with
two more world edits drawn from the true intermediate scenes. Each step is judged as Edit-scene
judges one edit, against the instruction applied to what the previous output actually shows
(its detected scene; the true source for the first step), so an "add" that put its object
elsewhere than the data set did is not held against the next step. A chain succeeds when every
step does. An instruction that no longer applies to the previous output (its object is gone or
no longer unique) fails that step.
"""

from __future__ import annotations

import random

import numpy as np

from unimm.evaluate.common import check_image, chunks, describe_scene, mean
from unimm.evaluate.editing import EditImages, edit_correct
from unimm.evaluate.understanding import _pixels, _text, eval_samples
from unimm.progress import progress_bar
from unimm.world.detector import DetectorConfig, detect
from unimm.world.edits import InstructionError, apply_instruction, edit
from unimm.world.scene import Scene


def chain_instructions(first: str, target: Scene, rng: random.Random, steps: int) -> list[str]:
    """The episode's instructions: the sample's own, then world edits of the true scenes that
    follow it (`target`: the scene after the first)."""
    out = [first]
    for _ in range(steps - 1):
        e = edit(target, rng, avoid_heldout=True)
        out.append(e.instruction)
        target = e.target
    return out


def edit_chains(
    edit_images: EditImages,
    n: int = 50,
    seed: int = 0,
    steps: int = 3,
    batch_size: int = 32,
    progress: bool = True,
    detector: DetectorConfig | None = None,
) -> dict:
    episodes = []
    for i, s in enumerate(eval_samples("edit", "eval", n, seed)):
        rng = random.Random(f"unimm-edit-chain:{seed}:{i}")
        try:
            ins = chain_instructions(_text(s.segments[1]), s.meta["target_scene"], rng, steps)
        except ValueError:  # a scene that admits no further edit: rare, left out
            continue
        episodes.append({"source": _pixels(s.segments[0]), "scene": s.meta["scene"], "ins": ins})
    images = [e["source"] for e in episodes]
    scenes: list[Scene] = [e["scene"] for e in episodes]
    correct = [[False] * steps for _ in episodes]
    detected: list[list[str]] = [[] for _ in episodes]
    for k in progress_bar(range(steps), desc="edit chains", disable=not progress):
        outs: list[np.ndarray] = []
        for batch in chunks(list(range(len(episodes))), batch_size):
            got = edit_images([images[j] for j in batch], [episodes[j]["ins"][k] for j in batch])
            outs += [check_image(o, f"edited image, chain step {k + 1}") for o in got]
        for j, out in enumerate(outs):
            det = detect(out, detector)
            try:
                expected = apply_instruction(scenes[j], episodes[j]["ins"][k])
                correct[j][k] = edit_correct(expected.kind, scenes[j], expected.target, det)
            except InstructionError:
                correct[j][k] = False
            detected[j].append(describe_scene(det))
            images[j], scenes[j] = out, det
    records = [
        {"instructions": e["ins"], "detected": d, "correct": c}
        for e, d, c in zip(episodes, detected, correct, strict=True)
    ]
    return {
        "benchmark": "edit_chain",
        "steps": steps,
        "overall": mean([float(all(c)) for c in correct]),
        "per_step": [mean([float(c[k]) for c in correct]) for k in range(steps)],
        "n": len(records),
        "records": records,
    }
