"""Byte-level BPE text tokenizer (Hugging Face `tokenizers`) with the special tokens unimm needs.

Byte-level means any UTF-8 string round-trips, so a user prompt never fails to encode; BPE
trained on the world's text turns each of its words into one or two tokens.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterable
from pathlib import Path

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

# Markers the sequence builders use. Their ids are the first ones, in this order, in every
# tokenizer unimm trains, so layouts can be checked in tests.
SPECIAL_TOKENS = (
    "<|pad|>",  # padding, never attended to or predicted
    "<|bos|>",  # start of a sequence
    "<|eos|>",  # end of a generated text span
    "<|boi|>",  # begin of image: the prompt for image generation ends with it
    "<|eoi|>",  # end of image
    "<|user|>",  # a user turn (chat)
    "<|assistant|>",  # the model's text follows: understanding prompts end with it
    "<|mask|>",  # masked-token paradigms (discrete diffusion)
)

TOKENIZER_FILE = "tokenizer.json"
# An imported tokenizer's own tokens playing unimm's markers (e.g. Janus's "<begin_of_image>"
# as "<|boi|>"): {unimm marker: the tokenizer's token}, saved next to tokenizer.json.
MARKERS_FILE = "tokenizer_markers.json"


class TextTokenizer:
    def __init__(self, tokenizer: Tokenizer, markers: dict[str, str] | None = None):
        self._tok = tokenizer
        self.markers = dict(markers or {})
        unknown = set(self.markers) - set(SPECIAL_TOKENS)
        if unknown:
            raise ValueError(f"marker aliases for unknown markers {sorted(unknown)}")
        ids = {t: tokenizer.token_to_id(self.markers.get(t, t)) for t in SPECIAL_TOKENS}
        missing = [self.markers.get(t, t) for t, i in ids.items() if i is None]
        if missing:
            raise ValueError(f"tokenizer lacks unimm's special tokens {missing}")
        self.pad_id, self.bos_id, self.eos_id, self.boi_id, self.eoi_id = (
            ids[t] for t in SPECIAL_TOKENS[:5]
        )
        self.user_id = ids["<|user|>"]
        self.assistant_id = ids["<|assistant|>"]
        self.mask_id = ids["<|mask|>"]

    @property
    def vocab_size(self) -> int:
        return self._tok.get_vocab_size()

    def get_vocab(self) -> dict[str, int]:
        """{token: id} of every token, added special tokens included."""
        return self._tok.get_vocab()

    @classmethod
    def train(cls, texts: Iterable[str], vocab_size: int = 512) -> TextTokenizer:
        tok = Tokenizer(models.BPE())
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=True)
        tok.decoder = decoders.ByteLevel()
        trainer = trainers.BpeTrainer(
            vocab_size=vocab_size,
            special_tokens=list(SPECIAL_TOKENS),
            initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
            show_progress=False,
        )
        tok.train_from_iterator(texts, trainer=trainer)
        return cls(tok)

    def encode(self, text: str) -> list[int]:
        return self._tok.encode(text, add_special_tokens=False).ids

    def decode(self, ids: Iterable[int]) -> str:
        # Special tokens are skipped so a generated answer reads as plain text.
        return self._tok.decode(list(ids), skip_special_tokens=True).strip()

    def save(self, directory: str | Path) -> None:
        directory = Path(directory)
        fd, tmp = tempfile.mkstemp(dir=directory, suffix=".tmp")
        os.close(fd)
        self._tok.save(tmp)
        os.replace(tmp, directory / TOKENIZER_FILE)
        if self.markers:
            (directory / MARKERS_FILE).write_text(json.dumps(self.markers, indent=2) + "\n")

    @classmethod
    def load(cls, directory: str | Path) -> TextTokenizer:
        path = Path(directory) / TOKENIZER_FILE
        if not path.is_file():
            raise ValueError(f"missing text tokenizer file {path}")
        try:
            tok = Tokenizer.from_file(str(path))
        except Exception as e:  # tokenizers raises a bare Exception on bad JSON
            raise ValueError(f"corrupt text tokenizer file {path}: {e}") from None
        markers = None
        if (Path(directory) / MARKERS_FILE).is_file():
            try:
                markers = json.loads((Path(directory) / MARKERS_FILE).read_text())
            except json.JSONDecodeError as e:
                raise ValueError(f"corrupt {Path(directory) / MARKERS_FILE}: {e}") from None
        return cls(tok, markers)
