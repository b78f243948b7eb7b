"""Endless deterministic streams of world samples for every task.

Sample i of (split, seed) is generated from its own RNG seeded by the string
"unimm-world:{split}:{seed}:{i}", so streams are reproducible, resumable at any index, and the
train and eval splits never share a scene generator. Held-out colour-shape pairs never appear in
the train split (images, captions, questions, edits); tests check this on thousands of samples.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from itertools import count

from unimm.data.sample import Image, Sample, Text
from unimm.world.edits import edit
from unimm.world.language import canonical_caption, caption
from unimm.world.palette import HELDOUT_PAIRS
from unimm.world.qa import (
    QA,
    grounded_description,
    questions,
    twin,
    where_question,
    with_rationale,
)
from unimm.world.render import render
from unimm.world.scene import HeldoutMode, Scene, sample_scene

TASKS: tuple[str, ...] = ("t2i", "caption", "vqa", "edit", "interleaved", "reason")
# "reason": text only, no image: a question and its reasoned answer ("is there a red circle?" ->
# "a blue circle and a red square. answer: no"), the form train.vqa_rationale gives VQA answers.
# It teaches the last step, matching the question against a description, on ~25 tokens a
# sample instead of an image's ~100.
REASON_QTYPES: tuple[str, ...] = ("count", "exists", "position")
DEFAULT_TASKS: dict[str, float] = {
    "t2i": 0.35,
    "caption": 0.15,
    "vqa": 0.25,
    "edit": 0.15,
    "interleaved": 0.10,
}
SPLITS: tuple[str, ...] = ("train", "eval")


def sample_rng(split: str, seed: int, index: int) -> random.Random:
    return random.Random(f"unimm-world:{split}:{seed}:{index}")


def _pick_question(
    scene: Scene, rng: random.Random, heldout: HeldoutMode, easy_yes_no: bool = False
) -> QA:
    qs = questions(scene, rng, avoid_heldout=heldout == "exclude", easy_yes_no=easy_yes_no)
    if heldout == "only":  # ask about the held-out pairs themselves where possible
        about = [q for q in qs if any(p in HELDOUT_PAIRS for p in q.pairs)]
        qs = about or qs
    if not qs:
        raise ValueError(f"no question for scene {scene}")
    return rng.choice(qs)


def reasoned_answer(qa: QA, scene: Scene) -> QA:
    """qa answered by describing the scene first (qa.with_rationale): where things are for a
    position question (qa.grounded_description), the canonical caption otherwise."""
    if qa.qtype == "position":
        return with_rationale(qa, grounded_description(scene))
    return with_rationale(qa, canonical_caption(scene))


def laid_out(sample: Sample, before: dict[int, Scene]) -> Sample:
    """sample with the layout of scene before[i] (qa.grounded_description: every object with the
    3 x 3 region of its centre) as a target text just ahead of its segment i, an image the
    model draws; meta["layouts"] lists where the layouts went (train.t2i_plan, edit_plan;
    Sample.without_layouts takes them out)."""
    segments: list = []
    targets: list[int] = []
    layouts: list[int] = []
    for i, seg in enumerate(sample.segments):
        if i in before:
            layouts.append(len(segments))
            targets.append(len(segments))
            segments.append(Text(grounded_description(before[i])))
        if i in sample.targets:
            targets.append(len(segments))
        segments.append(seg)
    meta = {**sample.meta, "layouts": tuple(layouts)}
    return Sample(segments, tuple(targets), sample.task, meta)


def with_layout(sample: Sample) -> Sample:
    """A world text-to-image sample (caption, image) in the form train.t2i_plan trains:
    caption, then the scene's layout as a target text, then the image."""
    return laid_out(sample, {1: sample.meta["scene"]})


def make_sample(
    task: str,
    rng: random.Random,
    resolution: int = 64,
    heldout: HeldoutMode = "exclude",
    min_objects: int = 1,
    max_objects: int = 4,
    vqa_questions: int = 1,
    yes_no_twins: bool = False,
    where: bool = False,
    rationale: tuple[str, ...] = (),
    easy_yes_no: bool = False,
    plan: bool = False,
    edit_plan: bool = False,
) -> Sample:
    """One sample of `task` from a fresh random scene. vqa_questions > 1 asks up to that many
    questions about a VQA image (one per question type, in random order) as the turns of one
    conversation: every answer is a target, for one image's worth of compute. yes_no_twins
    follows each yes/no question of that conversation by its twin with the other answer
    (qa.twin). where adds a grounding turn ("where is the red circle?", qa.where_question) at a
    random place in that conversation. rationale: the question types whose answers (in VQA and
    interleaved samples) first describe the image, with its canonical caption or for position
    questions qa.grounded_description, then give the answer after qa.ANSWER_MARK
    (qa.with_rationale). easy_yes_no asks VQA's yes/no questions in their easy form
    (qa.questions). plan: a text-to-image sample first answers its caption with a layout, where
    each object goes (qa.grounded_description), then draws the image (TrainConfig.t2i_plan
    says why), and so does the first image of an interleaved sample; edit_plan: so does an
    edit's target, after the instruction, and an interleaved sample's edited image."""
    if task not in TASKS:
        raise ValueError(f"unknown task {task!r}; expected one of {TASKS}")
    avoid = heldout == "exclude"
    scene = sample_scene(rng, resolution, min_objects, max_objects, heldout)

    def reasoned(qa: QA, about: Scene) -> QA:
        return reasoned_answer(qa, about) if qa.qtype in rationale else qa

    if task == "reason":  # text only: no image to render
        qs = questions(scene, rng, avoid_heldout=avoid, qtypes=REASON_QTYPES)
        if not qs:
            raise ValueError(f"no question for scene {scene}")
        qa = reasoned_answer(qs[0], scene)
        meta = {"scene": scene, "qtype": qa.qtype}
        return Sample([Text(qa.question), Text(qa.answer)], (1,), task, meta)
    image = Image(render(scene))
    if task == "t2i":
        sample = Sample([Text(caption(scene, rng)), image], (1,), task, {"scene": scene})
        return with_layout(sample) if plan else sample
    if task == "caption":
        return Sample([image, Text(canonical_caption(scene))], (1,), task, {"scene": scene})
    if task == "vqa" and (vqa_questions > 1 or yes_no_twins or where):
        qs = questions(scene, rng, avoid_heldout=avoid, easy_yes_no=easy_yes_no)[:vqa_questions]
        if not qs:
            raise ValueError(f"no question for scene {scene}")
        if yes_no_twins:
            twins = [twin(qa, scene, rng, avoid) for qa in qs]
            qs = [q for qa, t in zip(qs, twins, strict=True) for q in (qa, t) if q is not None]
        grounding = where_question(scene, rng, avoid) if where else None
        if grounding is not None:
            qs.insert(rng.randint(0, len(qs)), grounding)
        qs = [reasoned(qa, scene) for qa in qs]
        segments: list = [image]
        for qa in qs:
            segments += [Text(qa.question), Text(qa.answer)]
        meta = {"scene": scene, "qtype": qs[0].qtype, "qtypes": [qa.qtype for qa in qs]}
        return Sample(segments, tuple(range(2, 2 * len(qs) + 1, 2)), task, meta)
    if task == "vqa":
        qa = reasoned(_pick_question(scene, rng, heldout, easy_yes_no), scene)
        meta = {"scene": scene, "qtype": qa.qtype}
        return Sample([image, Text(qa.question), Text(qa.answer)], (2,), task, meta)
    while True:  # a rare scene admits no edit (full, and no object nameable uniquely)
        try:
            e = edit(scene, rng, avoid_heldout=avoid, max_objects=max_objects)
            break
        except ValueError:
            scene = sample_scene(rng, resolution, min_objects, max_objects, heldout)
            image = Image(render(scene))
    target = Image(render(e.target))
    meta = {"scene": scene, "target_scene": e.target, "edit_kind": e.kind, "edit_index": e.index}
    if task == "edit":
        sample = Sample([image, Text(e.instruction), target], (2,), task, meta)
        return laid_out(sample, {2: e.target}) if edit_plan else sample
    qa = reasoned(_pick_question(e.target, rng, heldout), e.target)
    meta["qtype"] = qa.qtype
    segments = [
        Text(caption(scene, rng)),
        image,
        Text(e.instruction),
        target,
        Text(qa.question),
        Text(qa.answer),
    ]
    sample = Sample(segments, (1, 3, 5), task, meta)
    before = ({1: scene} if plan else {}) | ({3: e.target} if edit_plan else {})
    return laid_out(sample, before) if before else sample


def easy_share(index: int, ramp: int) -> float:
    """The share of sample `index`'s yes/no questions asked in their easy form under a linear
    curriculum of `ramp` samples: all at first, none from sample `ramp` on."""
    if ramp <= 0 or index >= ramp:
        return 0.0
    return 1.0 - index / ramp


def ramp_max_objects(index: int, ramp: int, min_objects: int, max_objects: int) -> int:
    """The most objects sample `index` may have under a linear curriculum of `ramp` samples:
    equal shares of the ramp for each count from min_objects up, max_objects after it."""
    if ramp <= 0 or index >= ramp:
        return max_objects
    return min_objects + (max_objects - min_objects + 1) * index // ramp


def world_samples(
    split: str,
    seed: int,
    tasks: dict[str, float] | None = None,
    heldout: HeldoutMode | None = None,
    resolution: int = 64,
    min_objects: int = 1,
    max_objects: int = 4,
    start: int = 0,
    vqa_questions: int = 1,
    object_ramp: int = 0,
    yes_no_twins: bool = False,
    where: bool = False,
    rationale: tuple[str, ...] = (),
    yes_no_ramp: int = 0,
    plan: bool = False,
    edit_plan: bool = False,
) -> Iterator[Sample]:
    """Endless stream of samples; `tasks` maps task name -> mixture weight.

    heldout: "exclude" (default) keeps held-out pairs out, "only" puts one in every scene,
    "any" ignores them; the train split accepts only "exclude". `start` resumes at that index.
    vqa_questions, yes_no_twins, where, rationale: the questions per VQA image and how they are
    answered (make_sample). plan, edit_plan: the images drawn from a caption, and those drawn
    from an edit instruction, come after their layout in words (make_sample).
    object_ramp: > 0 grows the scenes over the first object_ramp samples, a curriculum: sample i
    has at most ramp_max_objects(i, ...) objects, so training starts on lone objects, where a
    caption names what every object code shows, and reaches max_objects at sample object_ramp.
    yes_no_ramp: > 0 asks the yes/no questions of sample i in their easy form (qa.questions)
    with probability easy_share(i, yes_no_ramp), falling from 1 to 0 over that many samples.
    """
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    heldout = heldout or "exclude"
    for name, ramp in (("object_ramp", object_ramp), ("yes_no_ramp", yes_no_ramp)):
        if ramp < 0:
            raise ValueError(f"{name} must be >= 0, got {ramp}")
    if split == "train" and heldout != "exclude":
        raise ValueError(
            "held-out colour-shape pairs never appear in training: use heldout='exclude'"
        )
    weights = dict(tasks or DEFAULT_TASKS)
    for t, w in weights.items():
        if t not in TASKS:
            raise ValueError(f"unknown task {t!r}; expected one of {TASKS}")
        if w < 0:
            raise ValueError(f"task weight must be >= 0, got {t}={w}")
    names = [t for t, w in weights.items() if w > 0]
    if not names:
        raise ValueError("at least one task needs a positive weight")
    probs = [weights[t] for t in names]
    for i in count(start):
        rng = sample_rng(split, seed, i)
        task = rng.choices(names, probs)[0]
        most = ramp_max_objects(i, object_ramp, min_objects, max_objects)
        # drawn only inside the ramp, so that runs without it keep their samples
        share = easy_share(i, yes_no_ramp)
        easy = share > 0 and rng.random() < share
        sample = make_sample(
            task,
            rng,
            resolution,
            heldout,
            min_objects,
            most,
            vqa_questions,
            yes_no_twins,
            where,
            rationale,
            easy,
            plan,
            edit_plan,
        )
        sample.meta["index"] = i
        yield sample
