"""Why a GenEval-scene image failed: one failure class per wrong image, from the detector's scene.

The classes, checked in this order (the first that applies wins), with N the number of objects
the prompt asks for and "named shapes" the shapes it mentions:

1. blank           the detector finds no object at all.
2. wrong_count     fewer objects in the image than asked (fewer than N in all), or a prompt that
                   asks for 2-4 of a shape shows that shape a different number of times (the
                   count was attempted and missed).
3. wrong_shape     a named shape appears fewer times than asked although the image holds at
                   least N objects: objects were drawn, but as another shape.
4. wrong_colour    every named shape appears at least as often as asked, but a named colour is
                   short among its instances ("a blue square" drawn as a red square).
5. extra_objects   the asked objects are there with their colours, plus extra instances of a
                   named shape (WORLD.md's strict rule fails them; GenEval's own rule would pass
                   them outside its counting task).
6. wrong_relation  exactly the asked objects with the asked colours, the relation fails.

Counts before shape: a missing object is a failure to lay out the scene, whatever the other
objects look like. Shape before colour: a colour can only be wrong on an object of the right
shape. Extra objects before relation: with two candidates the relation is ill-defined.
Together with `check` these classes cover every wrong image: an image none of 1-6 applies to
passes the check.
"""

from __future__ import annotations

from collections import Counter

from unimm.world.geneval import GenEvalPrompt, check
from unimm.world.scene import Scene

FAILURES: tuple[str, ...] = (
    "blank",
    "wrong_count",
    "wrong_shape",
    "wrong_colour",
    "extra_objects",
    "wrong_relation",
)


def classify_failure(prompt: GenEvalPrompt, detected: Scene) -> str | None:
    """The failure class of `detected` for `prompt` (module docstring), None when it passes."""
    if check(prompt, detected):
        return None
    objs = detected.objects
    if not objs:
        return "blank"
    groups = prompt.spec.groups
    want = Counter()  # named shape -> instances asked
    for _, s, n in groups:
        want[s] += n
    have = Counter(o.shape for o in objs if o.shape in want)
    n_asked = sum(want.values())
    short = any(have[s] < n for s, n in want.items())
    counted = {s for _, s, n in groups if n >= 2}
    if (short and len(objs) < n_asked) or any(0 < have[s] != want[s] for s in counted):
        return "wrong_count"
    if short:
        return "wrong_shape"
    for shape in want:
        colours = Counter(o.color for o in objs if o.shape == shape)
        asked = Counter()
        for c, s, n in groups:
            if s == shape and c is not None:
                asked[c] += n
        if any(colours[c] < n for c, n in asked.items()):
            return "wrong_colour"
    if any(have[s] > n for s, n in want.items()):
        return "extra_objects"
    return "wrong_relation"


def failure_table(records: list[dict]) -> dict[str, dict]:
    """Per task: images, wrong images and the count of each failure class, from GenEval-scene
    records that carry a "failure" label per image (None for a correct one)."""
    table: dict[str, dict] = {}
    for r in records:
        row = table.setdefault(
            r["task"], {"images": 0, "wrong": 0, "counts": dict.fromkeys(FAILURES, 0)}
        )
        for f in r["failure"]:
            row["images"] += 1
            if f is not None:
                row["wrong"] += 1
                row["counts"][f] += 1
    return table


def failures_md(name: str, table: dict[str, dict]) -> list[str]:
    """A markdown table: per task, each failure class's share of the task's images (the shares
    add up to 1 - accuracy)."""
    head = " | ".join(f.replace("_", " ") for f in FAILURES)
    lines = [
        f"Why {name} fail: each wrong image's first failure class, as a share of the task's "
        "images (the shares add up to 1 - accuracy; order of precedence: "
        "unimm.evaluate.taxonomy).",
        "",
        f"| task | wrong | {head} |",
        "|---|---" + "|---" * len(FAILURES) + "|",
    ]
    for task, row in table.items():
        n = max(row["images"], 1)
        cells = " | ".join(f"{row['counts'][f] / n:.2f}" for f in FAILURES)
        lines.append(f"| {task} | {row['wrong'] / n:.2f} | {cells} |")
    return lines + [""]
