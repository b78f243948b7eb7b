"""Show-o (arXiv 2408.12528): one transformer, text by next-token prediction, images by masked
token prediction (MaskGIT-style discrete diffusion).

Vocabulary and layout are the Chameleon recipe's (text ids, then image codes; `<boi> codes
<eoi>` blocks); the text tokenizer's `<mask>` id stands in for a masked image token.

Attention ("omni-attention"): causal over text, bidirectional inside each image block, so a
text-to-image prompt is read causally and every image token sees the whole image (masked and
known slots alike). Understanding runs autoregressively with the KV cache: the prompt's image is
prefilled with the same block mask, then the answer is decoded causally, as in training.

Training: t2i samples mask ceil(cos(pi t / 2) * 64) of the target image's tokens (t ~ U(0, 1))
and take the cross-entropy at the masked slots; caption/VQA samples take next-token
cross-entropy on the answer; the two means are summed (Show-o's weights are 1.0 for both).
Sampling: `MaskedDiffusionScheduler` over the image slots with classifier-free guidance
(u + s (c - u) on logits; the unconditional row drops the prompt's text as in training).
Inpainting: the same sampler started from the known tokens, with only a region masked.
"""

from __future__ import annotations

import random

import numpy as np
import torch
from torch import Tensor

from unimm.data.images import to_tensor, to_uint8
from unimm.data.sample import Image, Segment, Text
from unimm.data.sequence import IMAGE, TEXT, TokenBatch, collate
from unimm.model.masks import block_causal_mask, causal_mask
from unimm.paradigms.autoregressive import next_token_loss, next_token_targets
from unimm.paradigms.guidance import guide
from unimm.paradigms.masked_diffusion import (
    MaskedDiffusionConfig,
    MaskedDiffusionScheduler,
    masked_token_loss,
    sample_image_mask,
)
from unimm.paradigms.rng import Seed, make_rng
from unimm.paradigms.weighting import background_weighted
from unimm.recipes.base import Modality, SamplingConfig
from unimm.recipes.chameleon import ChameleonModel, check_prompts


def image_blocks(tokens: Tensor, boi_id: int, eoi_id: int) -> Tensor:
    """(B, T) long: k >= 1 at the slots of the k-th image of the row (between <boi> and <eoi>,
    markers excluded, whatever the slots hold: codes or <mask>), -1 elsewhere."""
    opened = (tokens == boi_id).long().cumsum(1)  # images opened up to and including t
    closed = (tokens == eoi_id).long().cumsum(1)
    inside = (opened > closed) & (tokens != boi_id)
    return torch.where(inside, opened, torch.full_like(opened, -1))


class ShowoModel(ChameleonModel):
    recipe = "showo"
    cache_prompt = True  # the prompt does not attend to the image being generated

    @property
    def mask_id(self) -> int:
        return self.text_tok.mask_id

    @property
    def diffusion(self):
        return self.parts.config.diffusion

    def image_slots(self, tokens: Tensor) -> Tensor:
        # Masked slots are image positions too: they get the (row, col) embedding.
        return image_blocks(tokens, self.text_tok.boi_id, self.text_tok.eoi_id) >= 0

    def attention_mask(self, tokens: Tensor, pad: Tensor | None = None) -> Tensor:
        """The recipe's attention policy for a whole sequence: omni-attention. (B, 1, T, T)."""
        return block_causal_mask(
            image_blocks(tokens, self.text_tok.boi_id, self.text_tok.eoi_id), pad
        )

    def forward(
        self,
        tokens: Tensor,
        positions: Tensor | None = None,
        mask: Tensor | None = None,
        cache=None,
        return_hidden: bool = False,
    ) -> Tensor:
        """As Chameleon's, but every chunk of more than one token also opens attention inside
        its image blocks (on top of whatever causal/padding mask the caller passed), so the AR
        sampler's prefill of an understanding prompt sees the image as training did."""
        T = tokens.shape[1]
        if T > 1:
            past = cache.length if cache is not None else 0
            blocks = image_blocks(tokens, self.text_tok.boi_id, self.text_tok.eoi_id)
            same = (blocks[:, :, None] == blocks[:, None, :]) & (blocks[:, :, None] >= 0)
            same = torch.cat([same.new_zeros(tokens.shape[0], T, past), same], 2)[:, None]
            if mask is None:
                mask = causal_mask(T, past + T, device=tokens.device)
            mask = mask | same
        return super().forward(tokens, positions, mask, cache, return_hidden)

    # ----- training -------------------------------------------------------------------------

    def loss(self, samples, generator: torch.Generator | None = None) -> dict:
        seed = int(torch.randint(0, 2**31, (1,), generator=generator))
        seqs = self.build(samples, random.Random(seed))
        batch = collate(seqs, self.text_tok.pad_id, device=self.device)
        g = torch.Generator().manual_seed(seed)
        image_slots = batch.loss_mask & (batch.modality == IMAGE)
        masked = sample_image_mask(image_slots, self.diffusion.image_schedule, g)
        inputs = batch.ids.masked_fill(masked, self.mask_id)
        logits = self(inputs, mask=self.attention_mask(inputs))  # (B, T, V)
        return self.objective(logits, batch, masked)

    def objective(self, logits: Tensor, batch: TokenBatch, masked: Tensor) -> dict:
        """Masked-token CE on the masked image slots + next-token CE on target text (<eoi> is
        not a target: the sampler places it)."""
        text_targets = (
            batch.loss_mask & (batch.modality == TEXT) & (batch.ids != self.text_tok.eoi_id)
        )
        targets, shifted = next_token_targets(batch.ids, text_targets)
        parts = {}
        if masked.any():
            parts["loss_image"] = self.masked_image_loss(logits, batch.ids, masked)
        if shifted.any():
            parts["loss_text"] = next_token_loss(logits, targets, shifted)
        loss = sum(parts.values(), logits.sum() * 0.0)
        out = {"loss": loss, **{k: v.detach() for k, v in parts.items()}}
        out["tokens"] = torch.tensor(float(batch.valid.sum()))
        return out

    def masked_image_loss(self, logits: Tensor, ids: Tensor, masked: Tensor) -> Tensor:
        """Cross-entropy over the masked image slots, background codes at
        diffusion.background_weight in the mean (unimm.paradigms.weighting)."""
        w = self.diffusion.background_weight
        if w == 1.0:
            return masked_token_loss(logits, ids, masked)
        weight = background_weighted(masked, self.is_background(ids), w)
        return masked_token_loss(logits, ids, masked, weight)

    # ----- inference ------------------------------------------------------------------------

    def sampler(self, sampling: SamplingConfig) -> MaskedDiffusionScheduler:
        d = self.diffusion
        return MaskedDiffusionScheduler(
            MaskedDiffusionConfig(
                steps=sampling.steps or d.image_steps,
                schedule=d.image_schedule,
                temperature=sampling.temperature,
                confidence_noise=d.confidence_noise,
            )
        )

    @torch.no_grad()
    def sample_images(
        self,
        prompts: list[list[Segment]],
        sampling: SamplingConfig,
        seed: Seed,
        known: Tensor | None = None,
        use_cache: bool = True,
    ) -> Tensor:
        """Fill the image slots that follow each prompt by masked diffusion; returns codes
        (B, h, w). known: (B, h*w) long codes with -1 at the slots to generate (inpainting);
        None = generate every slot. use_cache=False re-reads the prompt at every step (tests).
        seed: an int or one per prompt (unimm.paradigms.rng.make_rng)."""
        B, N = len(prompts), self.image_tokens
        g = make_rng(seed, B)
        cond = [self._prompt_ids(p, "image") for p in prompts]
        rows = cond
        use_cfg = sampling.cfg_scale != 1.0
        if use_cfg:
            rows = cond + [
                self._prompt_ids([s for s in p if isinstance(s, Image)], "image") for p in prompts
            ]
        R = len(rows)
        P = max(len(r) for r in rows)
        total = P + N + 1
        if total > self.parts.config.model.max_seq_len:
            raise ValueError(
                f"prompt too long: {total} tokens with the image, the model takes "
                f"{self.parts.config.model.max_seq_len}"
            )
        # Left-pad every row so the image slots sit in the same columns P .. P + N - 1.
        tokens = torch.full((R, total), self.text_tok.pad_id, dtype=torch.long)
        valid = torch.zeros((R, total), dtype=torch.bool)
        for r, row in enumerate(rows):
            tokens[r, P - len(row) : P] = torch.tensor(row)
            valid[r, P - len(row) :] = True
        tokens[:, P + N] = self.text_tok.eoi_id
        tokens, valid = tokens.to(self.device), valid.to(self.device)
        positions = (valid.cumsum(1) - 1).clamp(min=0)
        codes = torch.zeros((B, N), dtype=torch.long, device=self.device)
        masked = torch.ones((B, N), dtype=torch.bool, device=self.device)
        if known is not None:
            masked = known < 0
            codes = known.clamp(min=0)
        scheduler = self.sampler(sampling)
        first, K = self.image_offset, self.image_tok.codebook_size
        mask = self.attention_mask(tokens, ~valid)  # (R, 1, total, total), fixed over steps
        keep = None
        if sampling.cfg_keep_background:
            keep = torch.zeros(K, dtype=torch.bool, device=self.device)
            keep[self.background_codes()] = True
        start, cache = 0, None
        if self.cache_prompt and use_cache:
            # Omni-attention: the prompt never reads the image, so its keys and values are the
            # same at every step. Prefill it once; each step runs <boi> + slots + <eoi> against
            # it (the chunk starts at <boi> so the model sees the image block open).
            start = P - 1
            cache = self.make_cache(R, total)
            self(tokens[:, :start], positions[:, :start], mask[:, :, :start, :start], cache, True)
            prefix = cache.snapshot()
        for i in range(scheduler.num_steps):
            slots = torch.where(masked, self.mask_id, codes + first)  # (B, N)
            tokens[:, P : P + N] = slots.repeat(R // B, 1)
            if cache is not None:
                cache.restore(prefix)
            hidden = self(tokens[:, start:], positions[:, start:], mask[:, :, start:], cache, True)[
                :, P - start : P - start + N
            ]
            logits = self.head(hidden)[..., first : first + K].float()  # (R, N, K)
            if use_cfg:
                logits = guide(logits[:B], logits[B:], sampling.cfg_scale, keep)
            codes, masked = scheduler.step(logits, codes, masked, i, generator=g)
        return codes.view(B, *self.image_tok.grid)

    @torch.no_grad()
    def generate(
        self,
        prompts: list[list[Segment]],
        modality: Modality,
        sampling: SamplingConfig | None = None,
        seed: Seed = 0,
    ) -> list[Segment]:
        sampling = sampling or SamplingConfig()
        if modality == "text":
            return super().generate(prompts, modality, sampling, seed)
        self.check_prompts(prompts, modality)
        codes = self.sample_images(prompts, sampling, seed)
        return [Image(p) for p in to_uint8(self.image_tok.decode(codes))]

    @torch.no_grad()
    def inpaint(
        self,
        images: list[np.ndarray],
        prompts: list[str],
        boxes: list[tuple[int, int, int, int]],
        sampling: SamplingConfig | None = None,
        seed: int = 0,
    ) -> list[np.ndarray]:
        """Regenerate the image tokens whose patches overlap each box (x0, y0, x1, y1 in pixels,
        x1/y1 exclusive), conditioned on the prompt and the tokens outside the box."""
        sampling = sampling or SamplingConfig()
        if not (len(images) == len(prompts) == len(boxes)):
            raise ValueError("inpaint needs as many prompts and boxes as images")
        segs = [[Text(p)] for p in prompts]
        check_prompts(segs + [[Image(im)] for im in images], self.image_resolution)
        res, (h, w) = self.image_resolution, self.image_tok.grid
        known = self.image_tok.encode(to_tensor(images, self.device)).flatten(1)  # (B, N)
        for b, box in enumerate(boxes):
            region = region_cells(box, res, (h, w))
            known[b, region.flatten()] = -1
        codes = self.sample_images(segs, sampling, seed, known=known)
        return list(to_uint8(self.image_tok.decode(codes)))


def region_cells(box: tuple[int, int, int, int], resolution: int, grid: tuple[int, int]) -> Tensor:
    """(h, w) bool: the token cells whose pixel patches overlap box (x0, y0, x1, y1)."""
    x0, y0, x1, y1 = (int(v) for v in box)
    if not (0 <= x0 < x1 <= resolution and 0 <= y0 < y1 <= resolution):
        raise ValueError(
            f"box {box} must satisfy 0 <= x0 < x1 <= {resolution} and 0 <= y0 < y1 <= {resolution}"
        )
    h, w = grid
    ph, pw = resolution // h, resolution // w
    rows = torch.arange(h)
    cols = torch.arange(w)
    in_rows = (rows * ph < y1) & ((rows + 1) * ph > y0)
    in_cols = (cols * pw < x1) & ((cols + 1) * pw > x0)
    return in_rows[:, None] & in_cols[None, :]
