"""`unimm chat` without --image: a multi-turn conversation with images in a terminal.

Lines are user messages; `/image PATH` attaches an image to the next message, `/draw TEXT` asks
for an image reply (saved under the output folder), `/reset` forgets the conversation, `/quit`
(or end of input) leaves. The whole history, images included, is the prompt of every reply, so
the model sees earlier images and its own earlier answers; when the history outgrows the
model's context the oldest turns are dropped, and the user is told.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from unimm.conversation import Turn
from unimm.data.images import load_image, save_image
from unimm.data.sample import Image, Text
from unimm.recipes.base import SamplingConfig, UnifiedModel  # noqa: F401

HELP = "type a message; /image PATH attaches an image; /draw TEXT asks for an image; /reset; /quit"


def chat_loop(
    model: UnifiedModel,
    sampling: SamplingConfig,
    out_dir: Path,
    read: Callable[[str], str] | None = None,
    write: Callable[[str], None] = print,
) -> list[Turn]:
    """Run the conversation until /quit or end of input; returns the final history. read
    defaults to the builtin input, looked up per call (a default bound at import would miss a
    test's monkeypatched input once another test has imported this module)."""
    read = read or input
    history: list[Turn] = []
    pending: list = []  # images attached to the next user message
    drawn = 0
    write(HELP)
    while True:
        try:
            line = read("you> ").strip()
        except EOFError:
            break
        if not line:
            continue
        if line in ("/quit", "/exit"):
            break
        if line == "/reset":
            history, pending = [], []
            write("(conversation cleared)")
            continue
        if line.startswith("/image"):
            path = line[len("/image") :].strip()
            try:
                pending.append(Image(load_image(path, model.image_resolution)))
                write(f"(attached {path}; it goes with your next message)")
            except (ValueError, FileNotFoundError) as e:
                write(f"error: {e}")
            continue
        modality = "text"
        if line.startswith("/draw"):
            modality, line = "image", line[len("/draw") :].strip()
            if not line:
                write("error: /draw needs a description")
                continue
        elif line.startswith("/"):
            write(f"error: unknown command {line.split()[0]}; {HELP}")
            continue
        turn = Turn("user", [*pending, Text(line)])
        try:
            reply, history = _reply(model, history, turn, modality, sampling, write)
        except ValueError as e:
            write(f"error: {e}")
            continue
        pending = []
        if isinstance(reply, Image):
            out_dir.mkdir(parents=True, exist_ok=True)
            path = out_dir / f"chat_{drawn}.png"
            drawn += 1
            save_image(reply.pixels, path)
            write(f"model> [image saved to {path}]")
        else:
            write(f"model> {reply.text}")
    return history


def _reply(model, history, turn, modality, sampling, write):
    """Generate a reply to history + turn, dropping the oldest turns if the context is full."""
    turns = [*history, turn]
    while True:
        try:
            reply = model.chat(turns, modality, sampling)
            break
        except ValueError as e:
            if len(turns) <= 1 or not ("too many images" in str(e) or "too long" in str(e)):
                raise
            turns = turns[2:] if len(turns) > 2 else turns[1:]
            write("(the conversation outgrew the context: dropped the oldest exchange)")
    role_reply = Text(reply.text, role="assistant") if isinstance(reply, Text) else reply
    return reply, [*turns, Turn("assistant", [role_reply])]
