"""Janus / Janus-Pro: one autoregressive transformer, two decoupled image encodings
(arXiv 2410.13848, 2501.17811).

Understanding and generation want different things of an image encoder (semantics vs pixel
detail), so Janus gives each its own path into the shared LLM:

- understanding: a frozen semantic encoder (SigLIP in the paper; here unimm's contrastively
  trained `SemanticEncoder`, or a real SigLIP / CLIP through unimm.interop.hf_vision) reads
  every image given as input; its patch features pass a
  2-layer GELU MLP (the understanding adaptor) and fill the image's slots between <boi> and
  <eoi>. No codes are involved.
- generation: an image to produce is a sequence of VQ codes, embedded by their *own* table and
  MLP aligner, and predicted by their *own* head (Linear, GELU, Linear) instead of sharing the
  text vocabulary's embedding and output layer as Chameleon does.

Everything else (layout, causal attention, condition dropout, KV-cache sampling, guidance, the
(row, col) image embedding) is unimm.recipes.chameleon's, so the two recipes differ only in the
decoupling the paper is about.

Ids: [0, T) text, [T, T + C) codes of images being generated, and [T + C, ...) placeholders of
understanding slots: placeholder T + C + k takes row k of `self._bank`, the adapted features of
this batch's input images (the way HF's multimodal models splice image features into
placeholder tokens). The text head covers [0, T), the generation head [T, T + C); in training
each target is scored by its own head's softmax.
Legend: T text vocabulary, C codebook size, N slots per image, D backbone width.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import Tensor, nn

from unimm.data.images import to_tensor
from unimm.data.sample import Image, Sample, Segment
from unimm.model.config import ModelConfig
from unimm.paradigms.rng import Seed
from unimm.recipes.base import Modality, SamplingConfig
from unimm.recipes.chameleon import ChameleonModel
from unimm.recipes.parts import Parts, check_semantic_encoder
from unimm.tokenizers.semantic import SemanticEncoder
from unimm.tokenizers.vq import VQTokenizer

if TYPE_CHECKING:
    from unimm.interop.hf_vision import HFSemanticEncoder


def mlp(d_in: int, d_out: int, hidden: int, depth: int = 2) -> nn.Sequential:
    """`depth` Linear layers with GELU between them (Janus's aligners: depth 2); the Linear
    layers sit at even indices, so depth 2 is Linear, GELU, Linear."""
    dims = [d_in] + [hidden] * (depth - 1) + [d_out]
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(zip(dims[:-1], dims[1:])):
        layers += [nn.GELU(), nn.Linear(a, b)] if i else [nn.Linear(a, b)]
    return nn.Sequential(*layers)


class JanusModel(ChameleonModel):
    recipe = "janus"
    uses_semantic_encoder = True

    def __init__(self, parts: Parts):
        super().__init__(parts)
        check_semantic_encoder(parts, "janus")
        cfg, dim = parts.config, parts.config.model.dim
        self.codebook = parts.image.codebook_size
        j = cfg.janus
        self.gen_embed = nn.Embedding(self.codebook, j.gen_embed_dim)
        self.gen_aligner = mlp(j.gen_embed_dim, dim, dim, j.gen_aligner_depth)
        self.gen_head = mlp(dim, self.codebook, dim)
        self.und_aligner = mlp(parts.semantic.feature_dim, dim, dim, j.und_aligner_depth)
        self._bank: Tensor | None = None  # (K, D) adapted features behind the placeholders

    @classmethod
    def uses_image_pos_embed(cls, parts: Parts) -> bool:
        return parts.config.janus.image_pos_embed

    @classmethod
    def backbone_config(cls, parts: Parts) -> ModelConfig:
        # The backbone's own table and head cover text only; codes have theirs below.
        return replace(parts.config.model, vocab_size=parts.text.vocab_size)

    @property
    def config(self) -> ModelConfig:
        return self.parts.config.model  # vocab_size = T + C: what the sampler's logits span

    @property
    def semantic(self) -> SemanticEncoder | HFSemanticEncoder:
        return self.parts.semantic

    def head(self, hidden: Tensor) -> Tensor:
        """(..., D) -> (..., T + C): text logits, then the generation head's code logits."""
        return torch.cat([self.backbone.head(hidden), self.gen_head(hidden)], dim=-1)

    def forward(self, tokens, positions=None, mask=None, cache=None, return_hidden=False):
        hidden = super().forward(tokens, positions, mask, cache, return_hidden=True)
        return hidden if return_hidden else self.head(hidden)

    def token_embeddings(self, tokens: Tensor) -> Tensor:
        T, C = self.image_offset, self.codebook
        x = self.backbone.tok_embeddings(tokens.clamp(max=T - 1))  # (B, T, D), text rows right
        is_code = (tokens >= T) & (tokens < T + C)
        if bool(is_code.any()):
            x = x.clone()
            x[is_code] = self.gen_aligner(self.gen_embed(tokens[is_code] - T)).to(x.dtype)
        is_und = tokens >= T + C
        if bool(is_und.any()):
            if self._bank is None or int(tokens[is_und].max()) - T - C >= len(self._bank):
                raise ValueError("understanding placeholders without their features")
            x = x.clone() if not bool(is_code.any()) else x
            x[is_und] = self._bank[tokens[is_und] - T - C].to(x.dtype)
        return x

    # ----- the two image paths --------------------------------------------------------------

    def understanding_ids(self, images: list[np.ndarray]) -> list[list[int]]:
        """Input images -> placeholder ids, their adapted features appended to the bank."""
        if not images:
            return []
        with torch.no_grad():
            feats = self.semantic.features(to_tensor(images, self.device))  # (M, N, U), frozen
        adapted = self.und_aligner(feats).flatten(0, 1)  # (M * N, D)
        start = 0 if self._bank is None else len(self._bank)
        self._bank = adapted if self._bank is None else torch.cat([self._bank, adapted])
        first = self.image_offset + self.codebook + start
        n = self.image_tokens
        return [list(range(first + m * n, first + (m + 1) * n)) for m in range(len(images))]

    def image_ids(self, samples: list[Sample]) -> list[list[int]]:
        """Target images get generation codes; every other image the understanding path."""
        targets, inputs, is_target = [], [], []
        for sample in samples:
            for i, s in enumerate(sample.segments):
                if isinstance(s, Image):
                    (targets if i in sample.targets else inputs).append(s.pixels)
                    is_target.append(i in sample.targets)
        codes = iter(self.encode_images(targets))
        placeholders = iter(self.understanding_ids(inputs))
        return [next(codes) if t else next(placeholders) for t in is_target]

    def train_logits(self, inputs: Tensor, targets: Tensor, mask: Tensor | None = None) -> Tensor:
        """Each target scored by its own head: codes by the generation head's softmax, text
        by the text head's (the other head's columns are masked out)."""
        logits = self(inputs, mask=mask)  # (B, L, T + C)
        is_code_col = torch.arange(logits.shape[-1], device=logits.device) >= self.image_offset
        wants_code = targets >= self.image_offset  # (B, L)
        return logits.masked_fill(is_code_col != wants_code[..., None], float("-inf"))

    def loss(self, samples: list[Sample], generator: torch.Generator | None = None) -> dict:
        self._bank = None
        try:
            return super().loss(samples, generator)
        finally:
            self._bank = None

    # ----- checkpoints ----------------------------------------------------------------------

    @classmethod
    def from_pretrained(
        cls, directory: str | Path, image_tokenizer: VQTokenizer | str | Path | None = None
    ) -> JanusModel:
        """A unimm janus checkpoint, or a Hugging Face JanusForConditionalGeneration folder
        (Janus / Janus-Pro) imported whole: unimm.interop.hf_janus_recipe."""
        from unimm.interop.hf_files import is_hf_folder

        if image_tokenizer is not None:
            raise ValueError(
                "JanusModel.from_pretrained takes no image_tokenizer: a janus checkpoint holds "
                "its own, and a Hugging Face Janus folder brings its VQ model"
            )
        if is_hf_folder(directory):
            from unimm.interop.hf_janus_recipe import janus_from_hf

            return janus_from_hf(directory)
        return super().from_pretrained(directory)

    # ----- inference ------------------------------------------------------------------------

    def prompt_image_ids(self, images: list[np.ndarray]) -> list[list[int]]:
        return self.understanding_ids(images)  # a prompt's images are all inputs

    @torch.no_grad()
    def generate(
        self,
        prompts: list[list[Segment]],
        modality: Modality,
        sampling: SamplingConfig | None = None,
        seed: Seed = 0,
    ) -> list[Segment]:
        self._bank = None
        try:
            return super().generate(prompts, modality, sampling, seed)
        finally:
            self._bank = None
