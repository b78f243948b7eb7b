"""Conversations and interleaved requests, in the one layout every recipe reads.

A conversation is a list of turns; each turn is the user's or the assistant's and holds text
and images. It flattens to the segments of a prompt: user text stays plain, assistant text is
laid out as a reply (`<assistant> ... <eos>`, Text role "assistant"), images are images whoever
made them. That is the layout of the world's interleaved training samples (caption, image,
instruction, edited image, question, answer), so a chat history reads like training data.

An interleaved request is a list of steps (text, modality to produce); each output joins the
context, so step k is conditioned on every earlier step's text *and output*. `plan_request`
splits a plain-English request ("draw a red square, then add a blue circle, then tell me how
many squares there are") into such steps, and `check_episode` refuses, before any model work,
an edit step that names an object the earlier steps provably did not leave in the scene.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import numpy as np

from unimm.data.sample import Image, Segment, Text
from unimm.world.edits import InstructionError, Ref, expect_instruction, parse_instruction
from unimm.world.language import describe, group_key, parse_prompt
from unimm.world.scene import Scene

MODALITIES = ("text", "image")
EDIT_VERBS = ("make", "add", "remove", "move")
DRAW_VERBS = ("draw", "generate", "show", "paint", "create")


@dataclass
class Turn:
    role: str  # "user" or "assistant"
    content: list[Segment | str | np.ndarray] = field(default_factory=list)


def conversation_prompt(turns: list[Turn]) -> list[Segment]:
    """Flatten turns into prompt segments, rejecting empty and malformed conversations."""
    if not turns:
        raise ValueError("empty conversation: give at least one user turn")
    segments: list[Segment] = []
    for k, turn in enumerate(turns):
        if turn.role not in ("user", "assistant"):
            raise ValueError(f"turn {k}: unknown role {turn.role!r} (use 'user' or 'assistant')")
        if not turn.content:
            raise ValueError(f"turn {k} ({turn.role}) is empty")
        for part in turn.content:
            if isinstance(part, str | Text):
                text = part if isinstance(part, str) else part.text
                if not text.strip() and turn.role == "user":  # a model may reply with nothing
                    raise ValueError(f"turn {k} (user) has blank text")
                segments.append(Text(text, role=turn.role))
            elif isinstance(part, Image):
                segments.append(part)
            elif isinstance(part, np.ndarray):
                segments.append(Image(part))
            else:
                raise ValueError(f"turn {k}: cannot use a {type(part).__name__} as content")
    if turns[-1].role != "user":
        raise ValueError("the conversation must end with a user turn (the model replies to it)")
    return segments


def check_steps(steps: list[tuple[str, str]]) -> None:
    if not steps:
        raise ValueError("an interleaved request needs at least one step")
    for k, (text, modality) in enumerate(steps):
        if modality not in MODALITIES:
            raise ValueError(f"step {k + 1}: modality must be 'text' or 'image', got {modality!r}")
        if not text.strip():
            raise ValueError(f"step {k + 1} is empty")


def _drawn(text: str) -> tuple[Ref, ...] | None:
    """The objects an image step's caption asks for ("a red square and two circles", with or
    without a drawing verb), one (colour or None, shape) per object; None if not a caption."""
    words = text.split()
    if len(words) > 1 and words[0].lower() in DRAW_VERBS:
        text = " ".join(words[1:])
    parsed = parse_prompt(text)
    if parsed is None:
        return None
    return tuple((c, s) for c, s, n in parsed[0] for _ in range(n))


def _describe(objects: tuple[Ref, ...]) -> str:
    counts: dict[Ref, int] = {}
    for o in objects:
        counts[o] = counts.get(o, 0) + 1
    groups = sorted(((c, s, n) for (c, s), n in counts.items()), key=group_key)
    return describe(groups) if groups else "nothing"


def check_episode(steps: list[tuple[str, str]], start: Scene | None = None) -> None:
    """Walk an interleaved request's image steps over the scene they describe and raise
    InstructionError ("step 2: there is no blue circle to remove ...") for an edit naming an
    absent or ambiguous object, before any generation.

    A caption step (world grammar, as `plan_request` makes them) sets the expected scene: a world
    caption lists every object, with colours where it names them. An edit step is read by the
    world's edit grammar and applied to that scene (`unimm.world.edits.expect_instruction`, the
    symbolic side of what `unimm edit` checks against a detected image). `start` is the reading
    of a starting image, if any. Only what is provable is refused: a step the grammars do not
    cover ("make it sparkle", "a cat") leaves the scene unknown until the next caption, and an
    edit with no known scene before it is not checked. Text steps leave the scene as it is."""
    scene = None if start is None else tuple((o.color, o.shape) for o in start.objects)
    for k, (text, modality) in enumerate(steps):
        if modality != "image":
            continue
        drawn = _drawn(text)
        if drawn is not None:
            scene = drawn
            continue
        try:
            ins = parse_instruction(text)
        except InstructionError:  # not a world edit: nothing is known after it
            scene = None
            continue
        if scene is None:
            continue
        try:
            scene = expect_instruction(scene, ins)
        except InstructionError as e:
            raise InstructionError(
                f"step {k + 1}: {e} (the scene so far: {_describe(scene)})"
            ) from None


def plan_request(request: str) -> list[tuple[str, str]]:
    """Split "draw X, then EDIT, then QUESTION" into [(X, "image"), (EDIT, "image"),
    (QUESTION, "text")]: a drawing verb or a bare description makes an image from a caption,
    an edit verb (make/add/remove/move) edits the latest image, anything else is a question."""
    parts = [p.strip(" ,.") for p in re.split(r",?\s*\b(?:and then|then)\b\s*", request.strip())]
    parts = [p for p in parts if p]
    if not parts:
        raise ValueError("empty request")
    steps: list[tuple[str, str]] = []
    for part in parts:
        words = part.split()
        verb = words[0].lower()
        if verb in DRAW_VERBS and len(words) > 1:
            steps.append((" ".join(words[1:]), "image"))
        elif parse_prompt(part) is not None:  # a bare description of a scene
            steps.append((part, "image"))
        elif verb in EDIT_VERBS:
            steps.append((re.sub(r"\s+(to it|to the image|in it)$", "", part), "image"))
        else:
            steps.append((_as_question(part), "text"))
    return steps


def _as_question(text: str) -> str:
    """ "tell me how many squares there are" -> "how many squares are there?"."""
    t = re.sub(r"^(please\s+)?(tell me|say)\s+", "", text.strip(), flags=re.I)
    t = re.sub(r"^(how many \w+) there are$", r"\1 are there", t)
    t = re.sub(r"^(what (?:color|shape)) (the [\w ]+) is$", r"\1 is \2", t)
    return t if t.endswith("?") else t + "?"


def check_episodes(
    episodes: list[list[tuple[str, str]]], images: list[np.ndarray] | None = None
) -> None:
    """`check_episode` for a batch, each starting image read by the world detector (as
    `unimm edit` reads its image); the one check `UnifiedModel.interleave` and the CLI run."""
    from unimm.world.detector import detect

    for j, steps in enumerate(episodes):
        try:
            check_episode(steps, None if images is None else detect(images[j]))
        except InstructionError as e:
            if len(episodes) == 1:
                raise
            raise InstructionError(f"episode {j + 1}, {e}") from None
