"""Noun phrases shared by captions, questions and edit instructions ("an orange circle")."""

from __future__ import annotations

from unimm.world.palette import NUMBER_WORDS, plural


def article(word: str) -> str:
    return "an" if word[0] in "aeiou" else "a"


def phrase(color: str | None, shape: str, count: int) -> str:
    """ "a red circle", "an orange square", "two triangles" (colour optional)."""
    if count < 1 or count >= len(NUMBER_WORDS):
        raise ValueError(f"count must be 1..{len(NUMBER_WORDS) - 1}, got {count}")
    noun = shape if count == 1 else plural(shape)
    words = f"{color} {noun}" if color else noun
    return f"{article(words)} {words}" if count == 1 else f"{NUMBER_WORDS[count]} {words}"


def and_list(parts: list[str]) -> str:
    if not parts:
        raise ValueError("cannot describe an empty list")
    if len(parts) == 1:
        return parts[0]
    return ", ".join(parts[:-1]) + " and " + parts[-1]
