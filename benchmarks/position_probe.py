"""What does a run's answer to a position question depend on? Teacher-forced log-odds of "yes"
over "no" on the eval split's position questions ("is the A <rel> the B?"), grouped by the true
answer and by a first-order cue: whether A lies on the named side of the canvas's centre line
(that cue alone answers about 85 % of the world's position questions). A model that reads
positions separates the groups; one constant log-odds means it answers from the prior. A run
trained with train.vqa_rationale is probed in its own answer form (yes_no_probe.py does the
same): the true description teacher-forced, the log-odds read at the answer after it.

With --where (runs trained with train.vqa_where): greedy answers to "where is the <c> <s>?" for
present objects, by scene: the object alone, among others, or beside one that shares its colour
or its shape.

    PYTHONPATH=src OMP_NUM_THREADS=1 python benchmarks/position_probe.py RUN [--where]
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
from itertools import islice
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script from anywhere
from benchmarks.yes_no_probe import answer_log_odds  # noqa: E402

from unimm.evaluate.common import normalise_answer  # noqa: E402
from unimm.pipeline import load_checkpoint  # noqa: E402
from unimm.recipes.base import SamplingConfig  # noqa: E402
from unimm.world.palette import RELATIONS  # noqa: E402
from unimm.world.qa import region  # noqa: E402
from unimm.world.render import render  # noqa: E402
from unimm.world.scene import sample_scene  # noqa: E402
from unimm.world.tasks import world_samples  # noqa: E402


def named_side(sample) -> bool:
    """Whether A of "is the A <rel> the B?" lies on rel's side of the canvas's centre line."""
    question, scene = sample.segments[1].text, sample.meta["scene"]
    rel = next(r for r in RELATIONS if f" {r} the " in question)
    head = question.removeprefix("is the ").split(f" {rel} the ")[0]
    a = next(o for o in scene.objects if f"{o.color} {o.shape}" == head)
    half = scene.resolution / 2
    return {
        "left of": a.x < half,
        "right of": a.x > half,
        "above": a.y < half,
        "below": a.y > half,
    }[rel]


def position_table(model, n_samples: int) -> None:
    # a run trained with train.vqa_rationale is probed in its own answer form: the true
    # description teacher-forced, the log-odds read at the answer after it
    reasons = model.parts.config.train.vqa_rationale
    stream = world_samples("eval", 0, {"vqa": 1.0}, "exclude", rationale=reasons)
    samples = [s for s in islice(stream, n_samples) if s.meta["qtype"] == "position"]
    odds = answer_log_odds(model, samples)
    rows = [
        (normalise_answer(s.segments[2].text), named_side(s), lo)
        for s, lo in zip(samples, odds, strict=True)
    ]
    print(f"{len(rows)} position questions; accuracy of the sign of the log-odds: "
          f"{statistics.mean((lo > 0) == (t == 'yes') for t, _, lo in rows):.3f}")  # fmt: skip
    print("| group | n | log-odds yes/no, mean | sd | answer yes |")
    print("|---|---|---|---|---|")
    groups = {
        "truth yes": [r for r in rows if r[0] == "yes"],
        "truth no": [r for r in rows if r[0] == "no"],
        "A on the named side": [r for r in rows if r[1]],
        "A on the other side": [r for r in rows if not r[1]],
    }
    for name, g in groups.items():
        v = [lo for *_, lo in g]
        print(f"| {name} | {len(v)} | {statistics.mean(v):.3f} | {statistics.pstdev(v):.3f} | "
              f"{statistics.mean(x > 0 for x in v):.2f} |")  # fmt: skip


def where_table(model, n: int) -> None:
    rng = random.Random(7)
    images, questions, truth, kinds = [], [], [], []
    while len(questions) < n:
        scene = sample_scene(rng, model.image_resolution, 1, 4, "exclude")
        pairs = scene.pairs()
        unique = [o for o in scene.objects if pairs[o.pair] == 1]
        if not unique:
            continue
        o = rng.choice(unique)
        alike = any(
            x is not o and (x.color == o.color or x.shape == o.shape) for x in scene.objects
        )
        images.append(render(scene))
        questions.append(f"where is the {o.color} {o.shape}?")
        truth.append(region(o, scene.resolution))
        kinds.append("alone" if len(scene.objects) == 1 else "alike" if alike else "others")
    answers = model.answer(images, questions, SamplingConfig(temperature=0.0))
    right = [a.strip().rstrip(".") == t for a, t in zip(answers, truth, strict=True)]
    print(f"\nwhere answers: {statistics.mean(right):.3f} right of {n} (a 3 x 3 region each)")
    for kind in ("alone", "others", "alike"):
        v = [r for r, k in zip(right, kinds, strict=True) if k == kind]
        print(f"  {kind}: {statistics.mean(v):.3f} of {len(v)}")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("run")
    ap.add_argument("--samples", type=int, default=3000, help="eval VQA samples to draw from")
    ap.add_argument("--where", type=int, nargs="?", const=300, default=0, help="where questions")
    args = ap.parse_args()
    model, _ = load_checkpoint(args.run)
    if not hasattr(model, "train_mask"):
        raise SystemExit(f"{model.recipe}: the probe reads next-token logits (chameleon, janus)")
    position_table(model, args.samples)
    if args.where:
        where_table(model, args.where)


if __name__ == "__main__":
    main()
