"""BAGEL: a mixture-of-transformer-experts model that reads images semantically and draws them
by rectified flow on VAE latents (arXiv 2505.14683).

BAGEL (ByteDance-Seed/Bagel) is a decoder-only LLM trained on interleaved text, images and
video. What sets it apart from Transfusion (unimm.recipes.transfusion, whose flow objective,
Euler/Heun sampler over a cached prompt, CFG and text decoding this recipe shares):

- mixture of transformer experts (unimm.model.mot): the noisy VAE latents of an image being
  generated use the generation expert's q/k/v/o, q/k norms, norms and MLP; text, markers and
  understanding tokens the understanding expert's; attention is one computation over the whole
  sequence. bagel.mot = false keeps everything but the experts: the dense model with the same
  active parameters per token (`describe()` reports both counts).
- decoupled image inputs, as in Janus: an image given as context (a VQA image, an edit's
  source, an earlier image of a chat) is read by the frozen semantic encoder (SigLIP's role,
  unimm.tokenizers.semantic), a 2-layer MLP and its own learned 2-D embedding; an image being
  generated is VAE latents + linear + timestep + 2-D embedding, velocities out of a
  zero-initialised linear layer.
- BAGEL's mask (RECIPES.md Sec. 7): causal text, full attention inside each image, and the
  noisy latents of an image being generated are read by no other token ("noise splits are
  unreadable by others"): later text never sees a half-noised image. A target image that later
  segments refer to (interleaved episodes) is therefore laid out twice, noised for the flow loss
  and then as a clean understanding copy that later tokens read, as BAGEL does; the copy takes
  the noisy image's RoPE positions and its <boi>, so what follows sits exactly where it sits at
  inference, when the drawn image re-enters the context as an understanding image:

      <boi> noisy_1 .. noisy_N clean_1 .. clean_N <eoi> [later text]
      positions p, p+1 .. p+N,  p+1 ..    p+N,   p+N+1

  The noisy image's own <eoi> is dropped (the sampler always writes a whole image).

Not reproduced: packed variable-resolution sequences (our images are one size), the clean VAE
latents of an edit's source image (BAGEL feeds condition images as ViT and VAE tokens; here they
are semantic tokens only), BAGEL's nested two-scale CFG and its t-interval (Transfusion's
single-scale CFG is used); time follows unimm's convention (t = 0 noise, t = 1 data).
Legend: B batch, T tokens, M images, N tokens per image, d latent channels, D backbone width.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, fields
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from unimm.data.images import to_tensor
from unimm.data.sample import Image, Sample
from unimm.data.sequence import IMAGE, TokenBatch, TokenSequence, build_sequence, collate
from unimm.model.config import ModelConfig
from unimm.model.masks import block_causal_mask
from unimm.model.mot import MoTTransformer
from unimm.model.transformer import Transformer
from unimm.recipes.janus import mlp
from unimm.recipes.parts import Parts, check_semantic_encoder
from unimm.recipes.transfusion import TransfusionModel


@dataclass
class BagelBatch(TokenBatch):
    positions: Tensor  # (B, T) RoPE ids (a clean copy repeats its noisy image's ids)
    noise: Tensor  # (B, T) bool: noisy latents of images being generated = generation tokens
    context_pixels: list[np.ndarray]  # images read by the semantic encoder, in sequence order
    gen_pixels: list[np.ndarray]  # images being generated, in sequence order


def split_noise(
    seq: TokenSequence, gen_blocks: set[int], copy_blocks: set[int]
) -> tuple[TokenSequence, list[int], list[bool]]:
    """Drop the <eoi> of every generated image block and the <boi> of every clean copy (which
    follows its noisy image directly); return the sequence, RoPE positions and noise flags.

    Tokens outside noise blocks count positions 0, 1, ...; a noise block's j-th token takes the
    position of its <boi> + 1 + j, so the clean copy after it repeats those positions."""
    blk, n = seq.image_block, len(seq.ids)
    drop = set()
    for i, b in enumerate(blk):
        if b in gen_blocks and (i + 1 == n or blk[i + 1] != b):
            drop.add(i + 1)  # its <eoi>
        if b in copy_blocks and blk[i - 1] != b:
            drop.add(i - 1)  # its <boi>
    keep = [i for i in range(n) if i not in drop]
    out = TokenSequence(*([getattr(seq, f.name)[i] for i in keep] for f in fields(TokenSequence)))
    noise = [b in gen_blocks for b in out.image_block]
    positions, last, j = [], -1, 0
    for is_noise in noise:
        if is_noise:
            positions.append(last + 1 + j)
            j += 1
        else:
            last, j = last + 1, 0
            positions.append(last)
    return out, positions, noise


class BagelModel(TransfusionModel):
    recipe = "bagel"
    uses_semantic_encoder = True

    def __init__(self, parts: Parts):
        super().__init__(parts)
        check_semantic_encoder(parts, "bagel")
        dim = parts.config.model.dim
        h, w = parts.image.grid
        self.und_aligner = mlp(parts.semantic.feature_dim, dim, dim)
        # BAGEL's ViT tokens have their own 2-D position embedding (vit_pos_embed).
        self.und_row = nn.Parameter(torch.randn(h, 1, dim) * 0.02)
        self.und_col = nn.Parameter(torch.randn(1, w, dim) * 0.02)

    def make_backbone(self, config: ModelConfig) -> Transformer:
        return MoTTransformer(config) if self.parts.config.bagel.mot else Transformer(config)

    @property
    def mot(self) -> bool:
        return isinstance(self.backbone, MoTTransformer)

    def run_backbone(self, x: Tensor, positions, mask, cache, gen: Tensor) -> Tensor:
        """Hidden states (B, T, D) of embeddings x; gen (B, T) picks the generation expert
        (ignored by the dense option, whose tokens all share one set of weights)."""
        extra = {"gen": gen} if self.mot else {}
        return self.backbone(None, positions, mask, cache, True, embeds=x, **extra)

    def describe(self) -> dict[str, Any]:
        """Total parameters and the ones a token passes through (MoT: one expert's)."""
        out = super().describe()
        b = self.backbone
        idle = b.num_params(False) - b.num_active_params(False)
        out.update(
            mot=self.mot,
            backbone_parameters=b.num_params(False),
            backbone_active_parameters=b.num_active_params(False),
            active_parameters=out["parameters"] - idle,
        )
        return out

    # ----- the understanding path -----------------------------------------------------------

    def context_tokens(self, pixels: list[np.ndarray], latents: Tensor | None) -> Tensor:
        """(M, N, D) tokens of images given as context: semantic features through the MLP,
        plus their 2-D embedding. The latents are not used: context is read semantically."""
        dim = self.parts.config.model.dim
        if not pixels:
            return torch.zeros(0, self.image_tokens, dim)
        with torch.no_grad():
            feats = self.parts.semantic.features(to_tensor(pixels))  # (M, N, U), frozen
        return self.und_aligner(feats) + (self.und_row + self.und_col).flatten(0, 1)

    # ----- training -------------------------------------------------------------------------

    def layout(
        self, samples: list[Sample], rng: random.Random | None = None
    ) -> tuple[BagelBatch, Tensor]:
        """Collated sequences (image slots hold the pad id) and the (M_gen, N, d) latents of
        the images being generated; see the module docstring for the layout."""
        slots = [self.text_tok.pad_id] * self.image_tokens
        p_drop = self.parts.config.train.cfg_dropout
        seqs, positions, noise, gen_pixels, context_pixels = [], [], [], [], []
        for sample in samples:
            segs, targets, gen_blocks, copy_blocks = [], [], set(), set()
            for i, s in enumerate(sample.segments):
                if i in sample.targets:
                    targets.append(len(segs))
                segs.append(s)
                if not isinstance(s, Image):
                    continue
                n_img = sum(isinstance(x, Image) for x in segs)  # this image's block id
                if i not in sample.targets:
                    context_pixels.append(s.pixels)
                    continue
                gen_blocks.add(n_img)
                gen_pixels.append(s.pixels)
                if i < len(sample.segments) - 1:  # later segments read a clean copy
                    segs.append(Image(s.pixels))
                    copy_blocks.add(n_img + 1)
                    context_pixels.append(s.pixels)
            expanded = Sample(segs, tuple(targets), sample.task)
            n = sum(isinstance(s, Image) for s in segs)
            drop = rng is not None and bool(gen_blocks) and rng.random() < p_drop
            seq = build_sequence(expanded, self.text_tok, [slots] * n, drop_text=drop)
            seq, pos, flags = split_noise(seq, gen_blocks, copy_blocks)
            seqs.append(seq)
            positions.append(pos)
            noise.append(flags)
        batch = collate(seqs, self.text_tok.pad_id, self.parts.config.model.max_seq_len)
        B, T = batch.ids.shape
        pos_t = torch.zeros(B, T, dtype=torch.long)
        noise_t = torch.zeros(B, T, dtype=torch.bool)
        for b, (pos, flags) in enumerate(zip(positions, noise, strict=True)):
            pos_t[b, : len(pos)] = torch.tensor(pos, dtype=torch.long)
            noise_t[b, : len(flags)] = torch.tensor(flags, dtype=torch.bool)
        common = {f.name: getattr(batch, f.name) for f in fields(TokenBatch)}
        out = BagelBatch(
            **common,
            positions=pos_t,
            noise=noise_t,
            context_pixels=context_pixels,
            gen_pixels=gen_pixels,
        )
        return out, self.encode_images(gen_pixels)

    def training_mask(self, batch: BagelBatch) -> Tensor:
        """Block-causal with padding, and noise keys hidden from every token outside their own
        image (B, 1, T, T)."""
        mask = block_causal_mask(batch.image_block - 1, pad=~batch.valid)
        other = batch.image_block[:, :, None] != batch.image_block[:, None, :]  # (B, T, T)
        return mask & ~(batch.noise[:, None, :] & other)[:, None]

    def train_forward(
        self, samples: list[Sample], generator: torch.Generator | None = None
    ) -> tuple[Tensor, BagelBatch, Tensor, Tensor]:
        """Noise the generated images and run the batch: (hidden (B, T, D), batch, t (M,),
        target velocities (M, N, d)), M = images being generated."""
        seed = int(torch.randint(0, 2**31, (1,), generator=generator))
        batch, x1 = self.layout(samples, random.Random(seed))
        noise = batch.noise
        x = self.backbone.tok_embeddings(batch.ids).clone()  # (B, T, D)
        xt, t, velocity = self.flow.noise(x1, generator)
        if x1.shape[0]:
            x[noise] = self.image_embed(xt, t).flatten(0, 1).to(x.dtype)
        if batch.context_pixels:
            context = (batch.modality == IMAGE) & ~noise
            x[context] = self.context_tokens(batch.context_pixels, None).flatten(0, 1).to(x.dtype)
        hidden = self.run_backbone(x, batch.positions, self.training_mask(batch), None, noise)
        return hidden, batch, t, velocity

    def loss(self, samples: list[Sample], generator: torch.Generator | None = None) -> dict:
        hidden, batch, t, velocity = self.train_forward(samples, generator)
        loss_text = self.text_loss(hidden, batch)
        M = t.shape[0]
        if M:
            pred = self.image_velocity(hidden[batch.noise].view(M, self.image_tokens, -1), t)
            every = torch.ones(pred.shape[:-1], dtype=torch.bool, device=pred.device)
            weight = self.velocity_weights(batch.gen_pixels, every)
            weight = None if weight is None else weight.view(pred.shape[:-1])
            loss_image = self.flow.loss(pred, velocity, weight)
        else:
            loss_image = hidden.sum() * 0
        loss = loss_text + self.parts.config.flow.image_loss_weight * loss_image
        return {
            "loss": loss,
            "loss_text": loss_text.detach(),
            "loss_image": loss_image.detach(),
            "tokens": torch.tensor(float(batch.valid.sum())),
        }

    # ----- inference ------------------------------------------------------------------------

    def run_image_span(self, cache, mask: Tensor, img_pos: Tensor, tokens: Tensor) -> Tensor:
        """The image span (R, N, D), all generation tokens, against the cached prompt (whose
        keys the understanding expert wrote); the cache is left as it was."""
        P = cache.length
        gen = torch.ones(tokens.shape[:2], dtype=torch.bool, device=tokens.device)
        hidden = self.run_backbone(tokens, img_pos, mask, cache, gen)
        cache.crop(P)
        return hidden
