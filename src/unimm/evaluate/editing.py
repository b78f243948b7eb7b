"""Edit-scene: does the edited image show exactly the target scene?

Judged by the detector: the output must hold the target's objects with centres within 4 px
(scaled) and nothing else. For "add" the instruction does not say where, so the added object
may stand anywhere; the other objects must stay within tolerance.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Sequence

import numpy as np

from unimm.data.sample import Sample
from unimm.evaluate.common import batched_records, check_image, describe_scene, mean
from unimm.evaluate.understanding import _pixels, _text, eval_samples
from unimm.world.detector import DetectorConfig, detect
from unimm.world.scene import Scene, scenes_match

EditImages = Callable[[list[np.ndarray], list[str]], list[np.ndarray]]
POS_TOL = 4  # px at 64 px


def edit_correct(kind: str, source: Scene, target: Scene, detected: Scene) -> bool:
    tol = POS_TOL * target.resolution / 64
    if kind != "add":
        return scenes_match(target, detected, pos_tol=tol)
    if target.pairs() != detected.pairs():
        return False
    added = target.objects[-1].pair
    for i, o in enumerate(detected.objects):  # drop one candidate for the new object
        if o.pair == added:
            rest = Scene(detected.objects[:i] + detected.objects[i + 1 :], detected.resolution)
            if scenes_match(source, rest, pos_tol=tol):
                return True
    return False


def edit_scene(
    edit_images: EditImages,
    split: str = "eval",
    n: int = 200,
    seed: int = 0,
    batch_size: int = 32,
    progress: bool = True,
    detector: DetectorConfig | None = None,
) -> dict:
    samples = eval_samples("edit", split, n, seed)

    def predict(batch: Sequence[Sample]) -> Sequence[object]:
        return edit_images(
            [_pixels(s.segments[0]) for s in batch], [_text(s.segments[1]) for s in batch]
        )

    def record(s: Sample, out: object) -> dict:
        ins = _text(s.segments[1])
        out = check_image(out, f"edited image for {ins!r}")
        det = detect(out, detector)
        return {
            "instruction": ins,
            "kind": s.meta["edit_kind"],
            "target": describe_scene(s.meta["target_scene"]),
            "detected": describe_scene(det),
            "correct": edit_correct(
                s.meta["edit_kind"], s.meta["scene"], s.meta["target_scene"], det
            ),
            "images": [_pixels(s.segments[0]), out],
        }

    records = batched_records(
        samples,
        predict,
        record,
        what="edit_images",
        desc=f"edit[{split}]",
        batch_size=batch_size,
        progress=progress,
    )
    by_kind: dict[str, list[float]] = defaultdict(list)
    for r in records:
        by_kind[r["kind"]].append(float(r["correct"]))
    return {
        "benchmark": "edit_scene",
        "split": split,
        "overall": mean([float(r["correct"]) for r in records]),
        "per_kind": {k: mean(v) for k, v in sorted(by_kind.items())},
        "n": len(records),
        "records": records,
    }
