"""The one interface that training, evaluation, the CLI and the server use for every recipe.

A recipe is a named choice of tokenizers, sequence layout, mask policy, backbone, objective and
sampler. Whatever the paradigm, a unified model can:
- `loss(samples)`: train on any mixture of tasks (every task is a Sample);
- `generate(prompts, modality=...)`: continue each prompt (a list of segments) with one text or
  one image segment;
- `save_pretrained(dir)` / `from_pretrained(dir)`: a self-contained checkpoint directory.
The evaluators only need the convenience wrappers below, so they never branch on the paradigm.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Literal

import numpy as np
import torch
from torch import nn

from unimm.data.sample import Image, Sample, Segment, Text

Modality = Literal["text", "image"]


@dataclass
class SamplingConfig:
    """Decoding settings. Defaults are the ones the quickstart evaluation uses."""

    temperature: float = 1.0
    top_k: int | None = None
    top_p: float | None = None
    cfg_scale: float = 3.0  # image generation only; 1.0 turns guidance off
    max_new_tokens: int = 48  # text only; images always produce a whole image
    steps: int | None = None  # flow recipes: ODE steps (None: the checkpoint's flow.num_steps)


class UnifiedModel(nn.Module):
    recipe: ClassVar[str]
    # Which image tokenizer the pipeline prepares: "vq" (trained discrete codes) or
    # "continuous" (raw pixel patches or VAE latents, per RunConfig.continuous_tokenizer).
    image_tokenizer_kind: ClassVar[str] = "vq"

    @property
    def image_resolution(self) -> int:
        """Side of the square images this model reads and writes."""
        raise NotImplementedError

    def loss(self, samples: list[Sample], generator: torch.Generator | None = None) -> dict:
        """Return {"loss": scalar to backprop, other scalars to log}."""
        raise NotImplementedError

    def generate(
        self,
        prompts: list[list[Segment]],
        modality: Modality,
        sampling: SamplingConfig | None = None,
        seed: int = 0,
    ) -> list[Segment]:
        raise NotImplementedError

    def save_pretrained(self, directory: str | Path) -> Path:
        raise NotImplementedError

    @classmethod
    def from_pretrained(cls, directory: str | Path) -> UnifiedModel:
        raise NotImplementedError

    def describe(self) -> dict[str, Any]:
        n = sum(p.numel() for p in self.parameters())
        return {"recipe": self.recipe, "parameters": n}

    # Convenience wrappers in the shapes the evaluators call.

    @torch.no_grad()
    def generate_images(
        self,
        prompts: list[str],
        n_per_prompt: int = 1,
        seed: int = 0,
        sampling: SamplingConfig | None = None,
        batch_size: int = 64,
    ) -> list[list[np.ndarray]]:
        flat = [[Text(p)] for p in prompts for _ in range(n_per_prompt)]
        out: list[np.ndarray] = []
        for i in range(0, len(flat), batch_size):
            segs = self.generate(flat[i : i + batch_size], "image", sampling, seed=seed + i)
            out += [s.pixels for s in segs]
        return [out[j * n_per_prompt : (j + 1) * n_per_prompt] for j in range(len(prompts))]

    @torch.no_grad()
    def answer(
        self,
        images: list[np.ndarray],
        questions: list[str],
        sampling: SamplingConfig | None = None,
        batch_size: int = 64,
    ) -> list[str]:
        sampling = sampling or SamplingConfig(temperature=0.0)
        prompts: list[list[Segment]] = [
            [Image(im), Text(q)] if q else [Image(im)] for im, q in zip(images, questions)
        ]
        out: list[str] = []
        for i in range(0, len(prompts), batch_size):
            out += [s.text for s in self.generate(prompts[i : i + batch_size], "text", sampling)]
        return out

    def caption(
        self, images: list[np.ndarray], sampling: SamplingConfig | None = None
    ) -> list[str]:
        return self.answer(images, [""] * len(images), sampling)
