"""Layout fidelity of a model that writes a layout before it draws (train.t2i_plan).

For GenEval-scene prompts the model writes its layout ("a red circle at the top left and a blue
square at the right"), then draws. Three shares per task tell a planning error from a drawing
error: the layouts that satisfy the prompt (read as a scene with each object at the centre of
its region, judged by GenEval-scene's own rule), the images whose detected objects are the
layout's, each in its region, and the images that satisfy the prompt.
"""

from __future__ import annotations

import re
from collections import Counter

from unimm.data.sample import Text
from unimm.evaluate.common import chunks, mean
from unimm.recipes.base import SamplingConfig, UnifiedModel
from unimm.world.detector import detect
from unimm.world.geneval import GENEVAL_TASKS, check, geneval_prompts
from unimm.world.palette import COLOR_NAMES, SHAPES
from unimm.world.qa import REGIONS, region
from unimm.world.scene import Obj, Scene

_PART = re.compile(r"(?:a|an) (\w+) (\w+) at the ([a-z ]+)")
_CELLS = {name: (r, c) for r, row in enumerate(REGIONS) for c, name in enumerate(row)}


def parse_layout(text: str, resolution: int) -> Scene | None:
    """A layout in qa.grounded_description's words as a scene, each object at the centre of
    its region; None when any part does not read as "<a|an> <colour> <shape> at the <region>"."""
    text = text.strip().rstrip(".")
    head, sep, last = text.rpartition(" and ")
    parts = [*head.split(", "), last] if sep else [text]
    objects = []
    for part in parts:
        m = _PART.fullmatch(part)
        if m is None or m[1] not in COLOR_NAMES or m[2] not in SHAPES or m[3] not in _CELLS:
            return None
        row, col = _CELLS[m[3]]
        x, y = ((k + 0.5) * resolution / 3 for k in (col, row))
        objects.append(Obj(m[2], m[1], int(x), int(y), size=max(1, resolution // 8)))
    return Scene(tuple(objects), resolution)


def placed(scene: Scene) -> Counter:
    """The scene's objects as (colour, shape, region) counts."""
    return Counter((o.color, o.shape, region(o, scene.resolution)) for o in scene.objects)


def layout_fidelity(
    model: UnifiedModel,
    per_task: int = 10,
    seed: int = 0,
    sampling: SamplingConfig | None = None,
    batch_prompts: int = 64,
) -> dict:
    """Per GenEval-scene task (in distribution, one image per prompt): "layout", the share of
    written layouts that satisfy the prompt; "drawn", of images that show their layout; "image",
    of images that satisfy the prompt; "parsed", of layouts in the expected words."""
    if not model.plans:
        return {
            "benchmark": "layout_fidelity",
            "applicable": False,
            "reason": "the model draws without writing a layout first (train.t2i_plan is off)",
        }
    sampling = sampling or SamplingConfig()
    prompts = geneval_prompts("in", per_task, seed)
    records = []
    for k, batch in enumerate(chunks(prompts, batch_prompts)):
        planned = model.with_layouts([[Text(p.text)] for p in batch], sampling, seed + k)
        images = model.generate(planned, "image", sampling, seed + k)
        for p, asked, image in zip(batch, planned, images, strict=True):
            layout = parse_layout(asked[-1].text, model.image_resolution)
            seen = detect(image.pixels)
            records.append(
                {
                    "task": p.task,
                    "prompt": p.text,
                    "layout_text": asked[-1].text,
                    "parsed": layout is not None,
                    "layout": layout is not None and check(p, layout),
                    "drawn": layout is not None and placed(layout) == placed(seen),
                    "image": check(p, seen),
                }
            )
    tasks = [t for t in GENEVAL_TASKS if any(r["task"] == t for r in records)]
    keys = ("layout", "drawn", "image", "parsed")
    per_task = {
        t: {key: mean([float(r[key]) for r in records if r["task"] == t]) for key in keys}
        for t in tasks
    }
    return {
        "benchmark": "layout_fidelity",
        "applicable": True,
        "tasks": per_task,
        "overall": {key: mean([v[key] for v in per_task.values()]) for key in keys},
        "records": records,
    }


def layout_fidelity_md(res: dict) -> list[str]:
    if not res["applicable"]:
        return [f"Layout fidelity: not applicable ({res['reason']}).", ""]
    lines = [
        "Layout fidelity (the model writes a layout, then draws; one image per GenEval-scene "
        "prompt): the layouts that satisfy the prompt, the images that show their layout (each "
        "object in its region), the images that satisfy the prompt. A low first column is a "
        "planning error, a low second a drawing one.",
        "",
        "| task | layout right | drawn as laid out | image right | layouts parsed |",
        "|---|---|---|---|---|",
    ]
    for task, v in [*res["tasks"].items(), ("overall", res["overall"])]:
        lines.append(
            f"| {task} | {v['layout']:.2f} | {v['drawn']:.2f} | {v['image']:.2f} | "
            f"{v['parsed']:.2f} |"
        )
    lines += ["", "Some of its layouts (position prompts first):", ""]
    shown = sorted(res["records"], key=lambda r: r["task"] != "position")[:6]
    for r in shown:
        verdict = ", ".join(
            f"{name} {'right' if r[key] else 'wrong'}"
            for name, key in (("layout", "layout"), ("image", "image"))
        )
        lines.append(f"- {r['prompt']!r} -> {r['layout_text']!r} ({verdict})")
    return [*lines, ""]
