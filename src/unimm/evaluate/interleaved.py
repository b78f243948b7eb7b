"""Interleaved-scene: multi-step episodes scored by the detector at every step.

An episode is the world's interleaved sample replayed as a request: (1) draw the caption,
(2) apply the edit instruction to the image the model drew, (3) answer the question about the
image the model edited. Each step is judged against the model's own previous output, not the
data set's scene: step 2 is right when the detector's reading of the edited image equals the
instruction applied to the reading of step 1's image (Edit-scene's rule); step 3 is right
when the answer is the truth for the reading of step 2's image. A step whose premise fails
(the instruction names an object step 1 did not draw) counts as wrong. Reported: accuracy of
each step given the previous output, and the chain rate (all steps so far right).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from unimm.data.sample import Image, Sample, Segment, Text
from unimm.evaluate.common import (
    batched_records,
    check_image,
    describe_scene,
    mean,
    normalise_answer,
)
from unimm.evaluate.editing import edit_correct
from unimm.evaluate.understanding import eval_samples
from unimm.world.detector import DetectorConfig, detect
from unimm.world.edits import InstructionError, apply_instruction
from unimm.world.geneval import check, prompt_from_text
from unimm.world.qa import answer_question

Interleave = Callable[[list[list[tuple[str, str]]]], list[list[Segment]]]
STEPS = ("draw", "edit", "answer")


def episode_steps(sample: Sample) -> list[tuple[str, str]]:
    """The request of a world interleaved sample: caption, instruction, question."""
    caption, _, instruction, _, question, _ = sample.segments
    assert isinstance(caption, Text) and isinstance(instruction, Text)
    assert isinstance(question, Text)
    return [(caption.text, "image"), (instruction.text, "image"), (question.text, "text")]


def judge_episode(steps: list[tuple[str, str]], outputs: list[Segment], detector=None) -> dict:
    (caption, _), (instruction, _), (question, _) = steps
    first, second, reply = outputs
    if not (isinstance(first, Image) and isinstance(second, Image) and isinstance(reply, Text)):
        raise ValueError("an interleaved episode must produce image, image, text")
    one = detect(check_image(first.pixels, f"image for {caption!r}"), detector)
    two = detect(check_image(second.pixels, f"image for {instruction!r}"), detector)
    # A world caption lists every object, so step 1 must draw exactly those (GenEval's rule
    # would let objects of unnamed shapes through).
    spec = prompt_from_text(caption)
    ok = [check(spec, one) and len(one.objects) == sum(n for _, _, n in spec.spec.groups)]
    try:
        e = apply_instruction(one, instruction)
        ok.append(edit_correct(e.kind, one, e.target, two))
    except InstructionError:
        ok.append(False)  # step 1's image lacks what the instruction names
    truth = answer_question(question, two)
    ok.append(truth is not None and normalise_answer(reply.text) == truth)
    return {
        "caption": caption,
        "instruction": instruction,
        "question": question,
        "answer": reply.text,
        "truth_for_output": truth,
        "detected": [describe_scene(one), describe_scene(two)],
        "correct": ok,
        "images": [first.pixels, second.pixels],
    }


def interleaved_scene(
    interleave: Interleave,
    split: str = "eval",
    n: int = 100,
    seed: int = 0,
    batch_size: int = 32,
    progress: bool = True,
    detector: DetectorConfig | None = None,
) -> dict:
    samples = eval_samples("interleaved", split, n, seed)

    def predict(batch: Sequence[Sample]) -> list[list[Segment]]:
        return interleave([episode_steps(s) for s in batch])

    def record(s: Sample, outputs: object) -> dict:
        return judge_episode(episode_steps(s), list(outputs), detector)  # type: ignore[arg-type]

    records = batched_records(
        samples,
        predict,
        record,
        what="interleave",
        desc=f"interleaved[{split}]",
        batch_size=batch_size,
        progress=progress,
    )
    per_step = {
        name: mean([float(r["correct"][k]) for r in records]) for k, name in enumerate(STEPS)
    }
    chain = {
        name: mean([float(all(r["correct"][: k + 1])) for r in records])
        for k, name in enumerate(STEPS)
    }
    return {
        "benchmark": "interleaved_scene",
        "split": split,
        "per_step": per_step,
        "chain": chain,
        "overall": chain[STEPS[-1]],
        "n": len(records),
        "records": records,
    }
