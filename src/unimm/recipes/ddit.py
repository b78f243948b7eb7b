"""Dual Diffusion (D-DiT, arXiv 2501.00289): one bidirectional transformer that draws images by
continuous flow and writes text by masked discrete diffusion.

D-DiT builds on SD3's MM-DiT: text and image tokens keep their own weights and meet in one
joint attention over the whole sequence, and a diffusion loss trains each side given the other
clean. Here:

- Backbone: unimm.model.mmdit, the MoT of BAGEL (one expert for text and markers, one for image
  slots, one SDPA call; the image expert starts as a copy) with adaLN time modulation of the
  tokens being denoised. Attention is full among non-padding tokens (no KV cache: the prompt
  reads the image, so it changes every step).
- Images: continuous tokens (raw pixel patches or KL-VAE latents, Transfusion's tokenizers and
  linear patching, plus a learned (row, col) embedding), rectified flow with unimm's
  convention t = 0 noise, t = 1 data (unimm.paradigms.flow). A context image enters clean and
  unmodulated.
- Text: an answer is MMaDA's fixed block of `diffusion.answer_length` slots (the answer, its
  <eos>, <eos> padding, all trained), masked LLaDA-style with p = (1 - eps) t + eps and CE / p
  (unimm.paradigms.masked_diffusion). Its time for adaLN is 1 - (masked fraction of the block).
- Joint loss: every sample trains one target segment (a random one where it has several; the
  sample is cut after it and earlier targets become context, so every sample looks like a
  prompt plus the one segment `generate` would produce). Image targets: velocity loss with the
  text clean; text targets: masked-token loss with the image clean. L = ddit.image_loss_weight
  L_image + ddit.text_loss_weight L_text.
- Time conditioning: each row has at most one noised segment, so one time per row; its
  embedding (the image or the text embedder's) modulates that segment's tokens only.

Layout (unimm.data.sequence), with image slots holding continuous tokens:

    t2i:      <bos> text <boi> x_t ... x_t <eoi>
    caption:  <bos> <boi> x_1 ... x_1 <eoi> [question] <assistant> a a <mask> <mask> <eos> ...

Samplers: text-to-image integrates the ODE over the image span with the prompt's tokens fixed
(Euler / Heun, flow.num_steps); captioning and VQA unmask the answer block by confidence with
the image's latents fixed, optionally in semi-autoregressive blocks (MMaDA's sampler,
diffusion.text_steps / text_blocks). Classifier-free guidance on both sides, u + s (c - u):
images drop the prompt's text (p = train.cfg_dropout in training, like every recipe), text
drops the prompt's images (p = ddit.text_cfg_dropout; scale ddit.text_cfg_scale, off by
default).

Not reproduced: SD3's initialisation, T5 text features and pooled text conditioning (our text is
embedded from scratch), the paper's three training stages; VQA is answer-after-question rather
than in-filling inside the prompt.
Legend: B batch (prompts), R rows (prompts, then their unconditional copies), T tokens, M images,
N tokens per image, d latent channels, D width, L answer slots, V text vocabulary.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import torch
from torch import Tensor

from unimm.data.images import to_uint8
from unimm.data.sample import Image, Sample, Segment, Text
from unimm.data.sequence import IMAGE, TEXT, TokenBatch, TokenSequence, build_sequence, collate
from unimm.model.config import ModelConfig
from unimm.model.masks import full_mask
from unimm.model.mmdit import MMDiTTransformer
from unimm.paradigms.flow import TimestepEmbedding, guided_velocity, make_scheduler
from unimm.paradigms.masked_diffusion import (
    sample_text_mask,
    text_diffusion_loss,
    unmask_in_blocks,
)
from unimm.paradigms.rng import Rng, Seed, make_rng, randn
from unimm.recipes.base import Modality, SamplingConfig
from unimm.recipes.chameleon import check_prompts
from unimm.recipes.parts import Parts
from unimm.recipes.transfusion import TransfusionModel


@dataclass
class PromptLayout:
    """Prompts left-padded to one length P, each followed by the same tail of S slots."""

    ids: Tensor  # (R, P + S) long
    valid: Tensor  # (R, P + S) bool, False on left padding
    positions: Tensor  # (R, P + S) RoPE ids, 0 at each row's first token
    is_image: Tensor  # (R, P + S) bool: the prompts' image slots (the tail's are the caller's)
    inputs: Tensor  # (R, P + S, D) embeddings: prompt tokens and clean images; tail as ids
    P: int  # where the tail starts


def fixed_length_answer(seq: TokenSequence, length: int, eos: int) -> None:
    """Pad (or cut) the target answer that ends `seq` to `length` slots: the answer's tokens,
    then <eos> to the end, all targets (MMaDA/LLaDA: the model learns where the text stops)."""
    start = seq.loss_mask.index(True)
    body = seq.ids[start:-1][: length - 1]  # without its <eos>; an over-long answer keeps its head
    seq.ids[start:] = body + [eos] * (length - len(body))
    seq.loss_mask[start:] = [True] * length
    seq.modality[start:] = [TEXT] * length
    seq.image_block[start:] = [0] * length


class DDiTModel(TransfusionModel):
    recipe = "ddit"

    def __init__(self, parts: Parts):
        super().__init__(parts)
        cfg = parts.config
        self.ddit = cfg.ddit
        self.diffusion = cfg.diffusion
        # The image's time embedding is Transfusion's `time_embed`; text has its own.
        self.text_time_embed = TimestepEmbedding(cfg.model.dim)
        self.mask_id = parts.text.mask_id

    def make_backbone(self, config: ModelConfig) -> MMDiTTransformer:
        return MMDiTTransformer(config)

    def describe(self) -> dict[str, Any]:
        """Total parameters and those a token passes through (one expert of the two)."""
        out = super().describe()
        b = self.backbone
        out["active_parameters"] = out["parameters"] - (
            b.num_params(False) - b.num_active_params(False)
        )
        return out

    def max_prompt_images(self, modality: Modality) -> int:
        """Images a prompt may hold besides what the reply needs: an image (<boi>, N, <eoi>)
        or the answer block (<assistant> and L slots), and the <bos>."""
        reply = self.image_tokens + 2 if modality == "image" else self.diffusion.answer_length + 1
        room = self.parts.config.model.max_seq_len - 1 - reply
        return max(room, 0) // (self.image_tokens + 2)

    # ----- one network evaluation -----------------------------------------------------------

    def image_embed(self, latents: Tensor, t: Tensor | None = None) -> Tensor:
        """(M, N_lat, d) latents -> (M, N, D) tokens: linear patching + (row, col) embedding.
        The time does not enter here (Transfusion adds it): adaLN carries it (`run`)."""
        return self.image_in(latents) + self.image_pos()

    def run(
        self,
        x: Tensor,
        valid: Tensor,
        positions: Tensor | None,
        is_image: Tensor,
        noised: Tensor,
        t: Tensor,
    ) -> Tensor:
        """Hidden states (B, T, D) of input embeddings x (B, T, D). is_image (B, T): the image
        expert's tokens; noised (B, T): the tokens being denoised, at most one segment per row;
        t (B,): that segment's time (flow time of an image, 1 - masked fraction of an answer).
        Full attention among valid tokens."""
        img_rows = (noised & is_image).any(1, keepdim=True)  # (B, 1)
        cond = torch.where(img_rows, self.time_embed(t), self.text_time_embed(t))  # (B, D)
        return self.backbone(
            None,
            positions,
            full_mask(~valid),
            return_hidden=True,
            embeds=x,
            gen=is_image,
            cond=cond,
            noised=noised,
        )

    # ----- training -------------------------------------------------------------------------

    def training_sample(self, sample: Sample, rng: random.Random) -> tuple[Sample, bool]:
        """The sample cut after one target segment (its only target; earlier targets become
        context), with condition dropout: the images of a text target are removed with
        p = ddit.text_cfg_dropout; for an image target the returned flag asks the builder to
        drop the text (p = train.cfg_dropout)."""
        if not sample.targets:
            raise ValueError(f"a {sample.task!r} sample without targets cannot train ddit")
        targets = sorted(sample.targets)
        k = targets[0] if len(targets) == 1 else rng.choice(targets)
        segs: list[Segment] = []
        for i, s in enumerate(sample.segments[: k + 1]):
            if i < k and i in targets and isinstance(s, Text):
                s = Text(s.text, role="assistant")  # an earlier reply, laid out as one
            segs.append(s)
        drop = rng.random() < (
            self.parts.config.train.cfg_dropout
            if isinstance(segs[-1], Image)
            else self.ddit.text_cfg_dropout
        )
        if drop and isinstance(segs[-1], Text):
            segs = [s for s in segs if not isinstance(s, Image)]
            drop = False
        return Sample(segs, (len(segs) - 1,), sample.task), drop

    def build(self, samples: list[Sample], rng: random.Random) -> tuple[TokenBatch, Tensor]:
        """Collated training sequences (image slots hold the pad id; a text target is padded
        to the answer block) and the (M, N, d) latents of their images in sequence order."""
        batch, pixels = self.build_with_pixels(samples, rng)
        return batch, self.encode_images(pixels)

    def build_with_pixels(
        self, samples: list[Sample], rng: random.Random
    ) -> tuple[TokenBatch, list[np.ndarray]]:
        """`build` with the images' pixels in sequence order instead of their latents."""
        tok, L = self.text_tok, self.diffusion.answer_length
        slots = [tok.pad_id] * self.image_tokens
        seqs, pixels = [], []
        for sample in samples:
            s, drop_text = self.training_sample(sample, rng)
            images = [x.pixels for x in s.segments if isinstance(x, Image)]
            seq = build_sequence(s, tok, [slots] * len(images), drop_text=drop_text)
            if isinstance(s.segments[-1], Text):
                fixed_length_answer(seq, L, tok.eos_id)
            seqs.append(seq)
            pixels += images
        max_len = self.parts.config.model.max_seq_len
        return collate(seqs, tok.pad_id, max_len, self.device), pixels

    def loss(self, samples: list[Sample], generator: torch.Generator | None = None) -> dict:
        seed = int(torch.randint(0, 2**31, (1,), generator=generator))
        batch, pixels = self.build_with_pixels(samples, random.Random(seed))
        x1 = self.encode_images(pixels)
        g = torch.Generator().manual_seed(seed)
        N = self.image_tokens
        is_image = batch.modality == IMAGE  # (B, T)
        M = x1.shape[0]
        # Images: the target image (if any) of each row noised to its t, context images clean.
        image_noised = batch.loss_mask & is_image  # (B, T)
        target = image_noised[is_image].view(M, N)[:, 0]  # (M,)
        xt, t, velocity = self.flow.noise(x1, g)
        t = torch.where(target, t, torch.ones_like(t))
        xt = torch.where(target[:, None, None], xt, x1)
        # Text: the answer slots of text targets (an image target's <eoi> is not one).
        text_slots = batch.loss_mask & ~is_image & (batch.ids != self.text_tok.eoi_id)
        masked, p = sample_text_mask(text_slots, self.diffusion.text_eps, g)
        ids = batch.ids.masked_fill(masked, self.mask_id)
        # One time per row: its target image's t, or 1 - the masked fraction of its answer.
        t_row = 1 - masked.sum(1) / text_slots.sum(1).clamp(min=1)  # (B,)
        if M:
            image_row = is_image.nonzero()[:, 0].view(M, N)[:, 0]  # (M,) row of each image
            t_row = t_row.index_put((image_row[target],), t[target].to(t_row.dtype))
        x = self.embed(ids, is_image, self.image_embed(xt))
        hidden = self.run(x, batch.valid, None, is_image, image_noised | text_slots, t_row)

        if bool(target.any()):
            pred = self.image_velocity(hidden[is_image].view(M, N, -1), t)[target]
            weight = self.velocity_weights(pixels, target[:, None].expand(M, N))
            weight = None if weight is None else weight.view(pred.shape[:-1])
            loss_image = self.flow.loss(pred, velocity[target], weight)
        else:
            loss_image = hidden.sum() * 0
        rows = text_slots.any(1)  # the head only where there is text to score
        if bool(rows.any()):
            logits = self.backbone.head(hidden[rows])  # (B_text, T, V)
            loss_text = text_diffusion_loss(
                logits, batch.ids[rows], masked[rows], text_slots[rows], p[rows]
            )
        else:
            loss_text = hidden.sum() * 0
        w = self.ddit
        return {
            "loss": w.image_loss_weight * loss_image + w.text_loss_weight * loss_text,
            "loss_text": loss_text.detach(),
            "loss_image": loss_image.detach(),
            "tokens": torch.tensor(float(batch.valid.sum())),
        }

    # ----- inference ------------------------------------------------------------------------

    def prompt_layout(self, prompts: list[list[Segment]], tail: list[int]) -> PromptLayout:
        """Lay out each prompt as training does, left-pad them to one length and append `tail`
        (the slots the sampler fills), so the tail sits at the same columns in every row."""
        tok = self.text_tok
        slots = [tok.pad_id] * self.image_tokens
        seqs, pixels = [], []
        for p in prompts:
            images = [s.pixels for s in p if isinstance(s, Image)]
            seqs.append(build_sequence(Sample(list(p), (), "prompt"), tok, [slots] * len(images)))
            pixels += images
        R, P = len(seqs), max(len(s.ids) for s in seqs)
        T = P + len(tail)
        if T > self.parts.config.model.max_seq_len:
            raise ValueError(
                f"prompt too long: {T} tokens with the reply, the model takes "
                f"{self.parts.config.model.max_seq_len}"
            )
        ids = torch.full((R, T), tok.pad_id, dtype=torch.long)
        valid = torch.zeros((R, T), dtype=torch.bool)
        is_image = torch.zeros((R, T), dtype=torch.bool)
        for r, s in enumerate(seqs):
            n = len(s.ids)
            ids[r, P - n : P] = torch.tensor(s.ids)
            is_image[r, P - n : P] = torch.tensor(s.modality) == IMAGE
            valid[r, P - n :] = True
        ids[:, P:] = torch.tensor(tail)
        ids, valid, is_image = ids.to(self.device), valid.to(self.device), is_image.to(self.device)
        positions = (valid.cumsum(1) - 1).clamp(min=0)
        context = self.image_embed(self.encode_images(pixels))  # (M, N, D), clean
        inputs = self.embed(ids, is_image, context)
        return PromptLayout(ids, valid, positions, is_image, inputs, P)

    @torch.no_grad()
    def generate(
        self,
        prompts: list[list[Segment]],
        modality: Modality,
        sampling: SamplingConfig | None = None,
        seed: Seed = 0,
    ) -> list[Segment]:
        sampling = sampling or SamplingConfig()
        check_prompts(prompts, self.image_resolution, self.max_prompt_images(modality))
        gen = make_rng(seed, len(prompts))
        if modality == "image":
            return self.sample_images(prompts, sampling, gen)
        return self.sample_text(prompts, sampling, gen)

    def sample_images(
        self, prompts: list[list[Segment]], sampling: SamplingConfig, gen: Rng
    ) -> list[Segment]:
        """Text-to-image (and image + instruction -> image): the ODE over the image span, the
        prompt's tokens the same at every step. Guidance rows: the prompts without their text."""
        B, N, tok = len(prompts), self.image_tokens, self.text_tok
        guided = sampling.cfg_scale != 1.0
        rows = list(prompts)
        if guided:
            rows += [[s for s in p if isinstance(s, Image)] for p in prompts]
        lay = self.prompt_layout(rows, [tok.boi_id] + [tok.pad_id] * N + [tok.eoi_id])
        span = slice(lay.P + 1, lay.P + 1 + N)
        is_image, noised = lay.is_image.clone(), torch.zeros_like(lay.is_image)
        is_image[:, span] = noised[:, span] = True
        # Noise is drawn on the CPU generators, so a seed gives the same image on any device.
        x = randn((B, self.latent_tokens, self.image_tok.latent_dim), gen).to(self.device)
        flow = self.parts.config.flow
        sched = make_scheduler(replace(flow, num_steps=sampling.steps or flow.num_steps))
        for t in sched.timesteps:
            xs = torch.cat([x, x]) if guided else x
            inputs = lay.inputs.clone()
            inputs[:, span] = self.image_embed(xs).to(inputs.dtype)
            ts = t.expand(len(rows)).to(self.device)
            hidden = self.run(inputs, lay.valid, lay.positions, is_image, noised, ts)
            v = self.image_velocity(hidden[:, span], ts).float()  # (R, N_lat, d)
            if guided:
                v = guided_velocity(v[:B], v[B:], sampling.cfg_scale)
            x = sched.step(v, t, x)
        return [Image(p) for p in to_uint8(self.image_tok.decode(x))]

    def text_choices(self) -> Tensor:
        """(V,) bool: ids an answer slot may take (words and <eos>; no markers, no <mask>)."""
        tok = self.text_tok
        ok = torch.ones(self.backbone.config.vocab_size, dtype=torch.bool, device=self.device)
        for i in (tok.pad_id, tok.bos_id, tok.boi_id, tok.eoi_id, tok.user_id):
            ok[i] = False
        ok[tok.assistant_id] = ok[tok.mask_id] = False
        return ok

    def sample_text(
        self, prompts: list[list[Segment]], sampling: SamplingConfig, gen: Rng
    ) -> list[Segment]:
        """Captioning and VQA: unmask the answer block by confidence (LLaDA's low-confidence
        remasking, semi-autoregressive blocks as in MMaDA), the images' latents the same at
        every step. Guidance rows: the prompts without their images."""
        d, tok = self.diffusion, self.text_tok
        L, B = d.answer_length, len(prompts)
        blocks = d.text_blocks if sampling.text_blocks is None else sampling.text_blocks
        if blocks < 1 or L % blocks:
            raise ValueError(f"text_blocks ({blocks}) must divide the answer length ({L})")
        scale = self.ddit.text_cfg_scale
        scale = scale if sampling.text_cfg_scale is None else sampling.text_cfg_scale
        guided = scale != 1.0
        rows = list(prompts)
        if guided:
            rows += [[s for s in p if not isinstance(s, Image)] for p in prompts]
        lay = self.prompt_layout(rows, [tok.assistant_id] + [self.mask_id] * L)
        ans = slice(lay.P + 1, lay.P + 1 + L)
        noised = torch.zeros_like(lay.is_image)
        noised[:, ans] = True
        steps = max(1, (sampling.steps or d.text_steps) // blocks)

        def logits_fn(answer: torch.Tensor, masked: torch.Tensor) -> torch.Tensor:
            ids = torch.where(masked, self.mask_id, answer)  # (B, L)
            t = 1 - masked.float().mean(1)  # (B,)
            if guided:
                ids, t = torch.cat([ids, ids]), torch.cat([t, t])
            inputs = lay.inputs.clone()
            inputs[:, ans] = self.backbone.tok_embeddings(ids).to(inputs.dtype)
            hidden = self.run(inputs, lay.valid, lay.positions, lay.is_image, noised, t)
            logits = self.backbone.head(hidden[:, ans]).float()  # (R, L, V)
            if guided:
                logits = logits[B:] + scale * (logits[:B] - logits[B:])
            return logits

        answer = unmask_in_blocks(
            logits_fn, (B, L), blocks, steps, sampling.temperature, self.text_choices(), gen,
            self.device,
        )  # fmt: skip
        out = []
        for row in answer.tolist():
            row = row[: row.index(tok.eos_id)] if tok.eos_id in row else row
            out.append(Text(tok.decode(row)))
        return out
