"""Settings of the chameleon recipe (RunConfig.chameleon); apart from the recipe so the run config
can name them without importing model code."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal


@dataclass(kw_only=True)
class ChameleonConfig:
    # The learned (row, col) embedding added to image slots (module docstring of
    # unimm.recipes.chameleon). A Hugging Face Chameleon has none, so its import turns it off.
    image_pos_embed: bool = True
    # Where the image codes sit in the vocabulary. "after_text": code c is id T + c (T the text
    # tokenizer's size), unimm's layout. "tokenizer": code c is the text tokenizer's own token
    # "IMGIMG" + c's digits as letters A-J + "Z", as in a Hugging Face Chameleon, whose 8192
    # codes are interleaved in its 65536-id vocabulary (transformers' vocabulary_map / img2bpe).
    code_ids: Literal["after_text", "tokenizer"] = "after_text"
