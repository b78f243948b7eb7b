"""The GenEval protocol (arXiv 2310.11513) on the scene world, with WORLD.md's strict rule.

Prompts use the caption grammar of language.py, so every prompt is a phrasing the training
captions also use. Tasks that name no colour (single_object, two_object, counting) cannot
contain a held-out pair, so the "heldout" split holds only colors, position and color_attr.
"""

from __future__ import annotations

import itertools
import random
from collections import Counter
from dataclasses import dataclass

from unimm.world.language import Group, parse_prompt
from unimm.world.palette import COLOR_NAMES, HELDOUT_PAIRS, RELATIONS, SHAPES
from unimm.world.phrases import and_list, phrase
from unimm.world.scene import Obj, Scene, holds, place_objects

GENEVAL_TASKS: tuple[str, ...] = (
    "single_object",
    "two_object",
    "counting",
    "colors",
    "position",
    "color_attr",
)
HELDOUT_TASKS: tuple[str, ...] = ("colors", "position", "color_attr")


@dataclass(frozen=True, slots=True)
class PromptSpec:
    groups: tuple[Group, ...]  # (color or None, shape, count)
    relation: tuple[int, str, int] | None = None  # (group i, relation, group j)


@dataclass(frozen=True, slots=True)
class GenEvalPrompt:
    task: str
    text: str
    spec: PromptSpec


def _uses_heldout(spec: PromptSpec) -> bool:
    return any(c is not None and (c, s) in HELDOUT_PAIRS for c, s, _ in spec.groups)


def _candidates(task: str) -> list[PromptSpec]:
    """Every prompt of a task (the world is small enough to enumerate)."""
    pairs = [(c, s) for c in COLOR_NAMES for s in SHAPES]
    if task == "single_object":
        return [PromptSpec(((None, s, 1),)) for s in SHAPES]
    if task == "two_object":
        return [
            PromptSpec(((None, a, 1), (None, b, 1))) for a, b in itertools.permutations(SHAPES, 2)
        ]
    if task == "counting":
        return [PromptSpec(((None, s, n),)) for s in SHAPES for n in (2, 3, 4)]
    if task == "colors":
        return [PromptSpec(((c, s, 1),)) for c, s in pairs]
    two = [(p, q) for p, q in itertools.permutations(pairs, 2) if p[1] != q[1]]
    if task == "color_attr":
        return [PromptSpec(((p[0], p[1], 1), (q[0], q[1], 1))) for p, q in two]
    if task == "position":
        return [
            PromptSpec(((p[0], p[1], 1), (q[0], q[1], 1)), (0, rel, 1))
            for p, q in two
            for rel in RELATIONS
        ]
    raise ValueError(f"unknown GenEval task {task!r}; expected one of {GENEVAL_TASKS}")


def prompt_text(spec: PromptSpec) -> str:
    if spec.relation is not None:
        i, rel, j = spec.relation
        (ca, sa, _), (cb, sb, _) = spec.groups[i], spec.groups[j]
        return f"{phrase(ca, sa, 1)} {rel} {phrase(cb, sb, 1)}"  # as language.relation_caption
    return and_list([phrase(c, s, n) for c, s, n in spec.groups])


def geneval_prompts(split: str = "in", per_task: int = 50, seed: int = 0) -> list[GenEvalPrompt]:
    """per_task prompts for each task of the split, in task order.

    Distinct prompts are drawn without replacement and recycled only when a task has fewer
    than per_task of them (colors has 20 in-distribution prompts, 4 held-out).
    """
    if split not in ("in", "heldout"):
        raise ValueError(f"split must be 'in' or 'heldout', got {split!r}")
    if per_task < 1:
        raise ValueError(f"per_task must be >= 1, got {per_task}")
    out: list[GenEvalPrompt] = []
    tasks = GENEVAL_TASKS if split == "in" else HELDOUT_TASKS
    for task in tasks:
        rng = random.Random(f"geneval:{split}:{seed}:{task}")
        cands = [c for c in _candidates(task) if _uses_heldout(c) == (split == "heldout")]
        rng.shuffle(cands)
        chosen = [cands[i % len(cands)] for i in range(per_task)]
        out += [GenEvalPrompt(task, prompt_text(s), s) for s in chosen]
    return out


def prompt_from_text(text: str, task: str = "custom") -> GenEvalPrompt:
    """Parse any caption-grammar prompt into a checkable GenEvalPrompt."""
    parsed = parse_prompt(text)
    if parsed is None:
        raise ValueError(f"prompt is not in the world's caption grammar: {text!r}")
    groups, rel = parsed
    return GenEvalPrompt(task, text, PromptSpec(tuple(groups), rel))


def check(prompt: GenEvalPrompt, detected: Scene) -> bool:
    """WORLD.md's rule: every named shape appears exactly as often as the prompt says, with the
    named colours and relation; objects of shapes the prompt does not name are allowed."""
    spec = prompt.spec
    objs = detected.objects
    for shape in {s for _, s, _ in spec.groups}:
        named = [(c, n) for c, s, n in spec.groups if s == shape]
        found = [o for o in objs if o.shape == shape]
        if len(found) != sum(n for _, n in named):
            return False
        # coloured groups need their exact colours; colour-free groups take the rest (the
        # totals already agree, so this also rules out extra colours when all are named)
        want: Counter[str] = Counter()
        for c, n in named:
            if c is not None:
                want[c] += n
        have = Counter(o.color for o in found)
        if any(have[c] < n for c, n in want.items()):
            return False
    if spec.relation is not None:
        i, rel, j = spec.relation

        def the(g: Group) -> Obj:
            c, s, _ = g
            return next(o for o in objs if o.shape == s and (c is None or o.color == c))

        return holds(the(spec.groups[i]), rel, the(spec.groups[j]), detected.resolution)
    return True


def oracle_scene(
    prompt: GenEvalPrompt, rng: random.Random, resolution: int = 64, heldout_ok: bool = True
) -> Scene:
    """A scene that satisfies the prompt (colours filled in at random where it names none)."""
    specs: list[tuple[str, str]] = []
    starts: list[int] = []
    for c, s, n in prompt.spec.groups:
        starts.append(len(specs))
        for _ in range(n):
            colors = [k for k in COLOR_NAMES if heldout_ok or (k, s) not in HELDOUT_PAIRS]
            specs.append((c or rng.choice(colors), s))
    rel = None
    if prompt.spec.relation is not None:
        i, r, j = prompt.spec.relation
        rel = (starts[i], r, starts[j])
    return place_objects(rng, specs, relation=rel, resolution=resolution)
