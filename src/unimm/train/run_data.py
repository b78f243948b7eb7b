"""The run's `train.data` as each trainer of `unimm train` takes it (unimm.pipeline)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from itertools import islice
from typing import TYPE_CHECKING

import numpy as np

from unimm.data import streams
from unimm.data.readers import BadSamples, Source, build_source
from unimm.data.sample import Image, Sample
from unimm.data.sequence import build_sequence
from unimm.tokenizers.text import TextTokenizer

if TYPE_CHECKING:
    from unimm.presets import RunConfig


class RunData:
    """The run's `train.data` as each trainer takes it: None for the world alone (each trainer
    then renders its own tuned world stream), else streams from the same build_source the
    model reads, so no part trains on the world unless train.data says so."""

    def __init__(self, cfg: RunConfig, bad: BadSamples):
        self.cfg, self.bad = cfg, bad
        self.world = streams.world_only(cfg.train.data)

    def source(self, resolution: int, tasks: dict[str, float] | None = None) -> Source:
        t = self.cfg.train
        return build_source(
            t.data,
            t.seed,
            resolution,
            self.bad,
            tasks or t.tasks,
            self.cfg.data,
            self.world_options(),
        )

    def world_options(self) -> dict:
        """The built-in world's stream options (unimm.world.tasks.world_samples) of this run."""
        t = self.cfg.train
        return {
            "vqa_questions": t.vqa_questions,
            "yes_no_twins": t.vqa_yes_no_twins,
            "where": t.vqa_where,
            "rationale": t.vqa_rationale,
            "plan": t.t2i_plan,
            "edit_plan": t.edit_plan,
            # the ramp is in the global batch's samples: world_samples counts sample indices
            "object_ramp": t.object_curriculum_steps * t.batch_size,
            "yes_no_ramp": t.yes_no_curriculum_steps * t.batch_size,
        }

    def text_options(self) -> dict:
        """The world options that add kinds of text (grounding answers, descriptions, layouts),
        for the text tokenizer's corpus, so that their words get tokens of their own. The
        others only change how often a kind of text occurs, and leave the corpus as it was."""
        adds_text = ("where", "rationale", "plan", "edit_plan")
        return {k: v for k, v in self.world_options().items() if k in adds_text}

    def images(self, resolution: int) -> tuple[Iterator | None, np.ndarray | None]:
        """(training stream, 256 of its images to measure reconstruction on) or (None, None)."""
        if self.world:
            return None, None
        return streams.images(self.source(resolution)), self.eval_images(resolution)

    def eval_images(self, resolution: int) -> np.ndarray:
        """256 images of train.data (also trained on: the data has no held-out split here)."""
        return streams.take(streams.images(self.source(resolution)), 256)

    def pairs(self, resolution: int) -> tuple[Iterator | None, list | None]:
        if self.world:
            return None, None
        pairs = streams.captioned_images(self.source(resolution))
        return pairs, list(islice(streams.captioned_images(self.source(resolution)), 200))


def sequence_length(text: TextTokenizer, image_tokens: int) -> Callable[[Sample], int]:
    """A sample's length in the shared layout (unimm.data.sequence), each image image_tokens
    long; recipes that lay an image out twice (bagel) can still go over."""

    def length(sample: Sample) -> int:
        codes = [[0] * image_tokens for s in sample.segments if isinstance(s, Image)]
        return len(build_sequence(sample, text, codes).ids)

    return length
