"""Edit-scene: does the edited image show exactly the target scene?

Judged by the detector: the output must hold the target's objects with centres within 4 px
(scaled) and nothing else. For "add" the instruction does not say where, so the added object
may stand anywhere; the other objects must stay within tolerance.

Two partial readings separate what an edit got right (issue 22: a model can redraw the whole
scene and get the asked change, or copy the source and miss it):
- instruction: the asked change is there (the recoloured or moved object at its new state, the
  removed one gone, one more of the added pair);
- preservation: the share of the objects the instruction does not name that are still there,
  same colour and shape, centre within the tolerance.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Sequence

import numpy as np

from unimm.data.sample import Sample
from unimm.evaluate.common import batched_records, check_image, describe_scene, mean
from unimm.evaluate.understanding import _pixels, _text, eval_samples
from unimm.world.detector import DetectorConfig, detect
from unimm.world.scene import Obj, Scene, scenes_match

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


def _near(o: Obj, pool: list[Obj], tol: float) -> int | None:
    """Index of an object of o's colour and shape in `pool` within tol px of it, if any."""
    for k, q in enumerate(pool):
        if q.pair == o.pair and abs(q.x - o.x) <= tol and abs(q.y - o.y) <= tol:
            return k
    return None


def edit_parts(
    kind: str, index: int, source: Scene, target: Scene, detected: Scene
) -> tuple[bool, float]:
    """(the asked change is there, share of the untouched source objects kept), see above.
    index: the edited object, in the source (recolor, move, remove) or the target (add)."""
    tol = POS_TOL * target.resolution / 64
    found = list(detected.objects)
    if kind == "add":
        pair = target.objects[index].pair
        asked = sum(o.pair == pair for o in found) > sum(o.pair == pair for o in source.objects)
        untouched = list(source.objects)
    else:
        if kind == "remove":
            asked = _near(source.objects[index], found, tol) is None
        else:  # recolor, move: the object in its new state
            asked = _near(target.objects[index], found, tol) is not None
        untouched = source.objects[:index] + source.objects[index + 1 :]
    kept = 0
    for o in untouched:  # one detected object vouches for one source object
        k = _near(o, found, tol)
        if k is not None:
            kept += 1
            found.pop(k)
    return asked, kept / len(untouched) if untouched else 1.0


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
        meta = s.meta
        asked, kept = edit_parts(
            meta["edit_kind"], meta["edit_index"], meta["scene"], meta["target_scene"], det
        )
        return {
            "instruction": ins,
            "kind": s.meta["edit_kind"],
            "target": describe_scene(s.meta["target_scene"]),
            "detected": describe_scene(det),
            "correct": edit_correct(
                s.meta["edit_kind"], s.meta["scene"], s.meta["target_scene"], det
            ),
            "instruction_done": asked,
            "preserved": kept,
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
    by_kind: dict[str, list[dict]] = defaultdict(list)
    for r in records:
        by_kind[r["kind"]].append(r)

    def rate(rs: list[dict], key: str) -> float:
        return mean([float(r[key]) for r in rs])

    return {
        "benchmark": "edit_scene",
        "split": split,
        "overall": rate(records, "correct"),
        "per_kind": {k: rate(v, "correct") for k, v in sorted(by_kind.items())},
        "instruction": rate(records, "instruction_done"),
        "preservation": rate(records, "preserved"),
        "per_kind_instruction": {
            k: rate(v, "instruction_done") for k, v in sorted(by_kind.items())
        },
        "per_kind_preservation": {k: rate(v, "preserved") for k, v in sorted(by_kind.items())},
        "n": len(records),
        "records": records,
    }
