"""Conversations and interleaved requests, in the one layout every recipe reads.

A conversation is a list of turns; each turn is the user's or the assistant's and holds text
and images. It flattens to the segments of a prompt: user text stays plain, assistant text is
laid out as a reply (`<assistant> ... <eos>`, Text role "assistant"), images are images whoever
made them. That is the layout of the world's interleaved training samples (caption, image,
instruction, edited image, question, answer), so a chat history reads like training data.

An interleaved request is a list of steps (text, modality to produce); each output joins the
context, so step k is conditioned on every earlier step's text *and output*. `plan_request`
splits a plain-English request ("draw a red square, then add a blue circle, then tell me how
many squares there are") into such steps.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import numpy as np

from unimm.data.sample import Image, Segment, Text
from unimm.world.language import parse_prompt

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
            raise ValueError(f"step {k}: modality must be 'text' or 'image', got {modality!r}")
        if not text.strip():
            raise ValueError(f"step {k} is empty")


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
