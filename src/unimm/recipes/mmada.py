"""MMaDA (arXiv 2505.15809): masked diffusion for both modalities with one bidirectional
transformer and one objective.

Images are masked and sampled exactly as in Show-o (cosine schedule, confidence-ordered
unmasking with CFG). Text follows LLaDA (arXiv 2502.09992): an answer is a fixed-length block of
`answer_length` slots (the answer, its <eos>, then <eos> padding, all trained), each slot masked
with probability p = (1 - eps) t + eps and its cross-entropy weighted by 1 / p; at inference the
block starts fully masked and the most confident predictions are committed step by step
(low-confidence remasking), optionally block by block from left to right (semi-autoregressive:
the run config's `diffusion.text_blocks`, or `SamplingConfig.text_blocks` per call).
Attention is full among non-padding tokens, so prompt text can also read a target image; there
is no KV cache (every step re-reads the sequence).

Layout and vocabulary are the Chameleon/Show-o ones; the text tokenizer's <mask> id is the one
mask for both modalities, as in MMaDA.
"""

from __future__ import annotations

import random

import torch
from torch import Tensor

from unimm.data.sample import Sample, Segment, Text
from unimm.data.sequence import IMAGE, TEXT, TokenSequence, collate
from unimm.model.masks import full_mask
from unimm.paradigms.masked_diffusion import (
    sample_image_mask,
    sample_text_mask,
    text_diffusion_loss,
    unmask_in_blocks,
)
from unimm.paradigms.rng import Seed, make_rng
from unimm.recipes.base import Modality, SamplingConfig
from unimm.recipes.chameleon import ChameleonModel
from unimm.recipes.showo import ShowoModel


class MMaDAModel(ShowoModel):
    recipe = "mmada"
    cache_prompt = False  # full attention: the prompt reads the image, so it changes each step

    def attention_mask(self, tokens: Tensor, pad: Tensor | None = None) -> Tensor:
        if pad is None:
            pad = torch.zeros_like(tokens, dtype=torch.bool)
        return full_mask(pad)

    def forward(self, tokens, positions=None, mask=None, cache=None, return_hidden=False):
        if cache is not None:
            raise ValueError("MMaDA attends bidirectionally and has no KV cache")
        if mask is None:
            mask = self.attention_mask(tokens)
        return ChameleonModel.forward(self, tokens, positions, mask, None, return_hidden)

    # ----- training -------------------------------------------------------------------------

    def build(self, samples: list[Sample], rng: random.Random | None = None) -> list[TokenSequence]:
        """Chameleon's layout, with every target answer padded by <eos> to answer_length."""
        seqs = super().build(samples, rng)
        L, eos = self.diffusion.answer_length, self.text_tok.eos_id
        for seq in seqs:
            answer = [
                i
                for i, (t, m) in enumerate(zip(seq.loss_mask, seq.modality))
                if t and m == TEXT and seq.ids[i] != self.text_tok.eoi_id
            ]
            if not answer:
                continue
            start, end = answer[0], answer[-1] + 1
            if end != len(seq.ids):
                raise ValueError("MMaDA trains on samples whose text target comes last")
            body = seq.ids[start : end - 1][: L - 1]  # an over-long answer keeps its head
            ids = body + [eos] * (L - len(body))
            seq.ids[start:] = ids
            seq.loss_mask[start:] = [True] * L
            seq.modality[start:] = [TEXT] * L
            seq.image_block[start:] = [0] * L
        return seqs

    def loss(self, samples, generator: torch.Generator | None = None) -> dict:
        seed = int(torch.randint(0, 2**31, (1,), generator=generator))
        seqs = self.build(samples, random.Random(seed))
        batch = collate(seqs, self.text_tok.pad_id, device=self.device)
        g = torch.Generator().manual_seed(seed)
        image_slots = batch.loss_mask & (batch.modality == IMAGE)
        text_slots = (
            batch.loss_mask & (batch.modality == TEXT) & (batch.ids != self.text_tok.eoi_id)
        )
        image_masked = sample_image_mask(image_slots, self.diffusion.image_schedule, g)
        text_masked, p = sample_text_mask(text_slots, self.diffusion.text_eps, g)
        inputs = batch.ids.masked_fill(image_masked | text_masked, self.mask_id)
        logits = self(inputs, mask=self.attention_mask(inputs, ~batch.valid))  # (B, T, V)
        parts = {}
        if image_masked.any():
            parts["loss_image"] = self.masked_image_loss(logits, batch.ids, image_masked)
        if text_slots.any():
            parts["loss_text"] = text_diffusion_loss(logits, batch.ids, text_masked, text_slots, p)
        loss = sum(parts.values(), logits.sum() * 0.0)
        out = {"loss": loss, **{k: v.detach() for k, v in parts.items()}}
        out["tokens"] = torch.tensor(float(batch.valid.sum()))
        return out

    # ----- inference ------------------------------------------------------------------------

    def text_choices(self) -> Tensor:
        """(V_text,) bool: text ids an answer slot may take (words and <eos>, no markers)."""
        tok = self.text_tok
        ok = torch.ones(self.image_offset, dtype=torch.bool, device=self.device)
        for i in (tok.pad_id, tok.bos_id, tok.boi_id, tok.eoi_id, tok.user_id):
            ok[i] = False
        ok[tok.assistant_id] = ok[tok.mask_id] = False
        return ok

    @torch.no_grad()
    def sample_text(self, prompts: list[list[Segment]], sampling: SamplingConfig, seed: Seed):
        d = self.diffusion
        g = make_rng(seed, len(prompts))  # an int, or one per prompt
        L = d.answer_length
        blocks = d.text_blocks if sampling.text_blocks is None else sampling.text_blocks
        if blocks < 1 or L % blocks:
            raise ValueError(f"text_blocks ({blocks}) must divide the answer length ({L})")
        rows = [self._prompt_ids(p, "text") for p in prompts]
        B, P = len(rows), max(len(r) for r in rows)
        if P + L > self.parts.config.model.max_seq_len:
            raise ValueError(
                f"prompt too long: {P + L} tokens with the answer, the model takes "
                f"{self.parts.config.model.max_seq_len}"
            )
        tokens = torch.full((B, P + L), self.text_tok.pad_id, dtype=torch.long)
        valid = torch.zeros((B, P + L), dtype=torch.bool)
        for b, row in enumerate(rows):
            tokens[b, P - len(row) : P] = torch.tensor(row)
            valid[b, P - len(row) :] = True
        tokens, valid = tokens.to(self.device), valid.to(self.device)
        positions = (valid.cumsum(1) - 1).clamp(min=0)
        mask = self.attention_mask(tokens, ~valid)
        steps = max(1, (sampling.steps or d.text_steps) // blocks)

        def logits_fn(answer: torch.Tensor, masked: torch.Tensor) -> torch.Tensor:
            tokens[:, P:] = torch.where(masked, self.mask_id, answer)
            return self(tokens, positions, mask)[:, P:, : self.image_offset].float()

        answer = unmask_in_blocks(
            logits_fn, (B, L), blocks, steps, sampling.temperature, self.text_choices(), g,
            self.device,
        )  # fmt: skip
        out = []
        for row in answer.tolist():
            if self.text_tok.eos_id in row:
                row = row[: row.index(self.text_tok.eos_id)]
            out.append(Text(self.text_tok.decode(row)))
        return out

    @torch.no_grad()
    def generate(
        self,
        prompts: list[list[Segment]],
        modality: Modality,
        sampling: SamplingConfig | None = None,
        seed: Seed = 0,
    ) -> list[Segment]:
        sampling = sampling or SamplingConfig()
        if modality == "image":
            return super().generate(prompts, modality, sampling, seed)
        self.check_prompts(prompts, modality)
        return self.sample_text(prompts, sampling, seed)
