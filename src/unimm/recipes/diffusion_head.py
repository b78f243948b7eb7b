"""Masked-autoregressive transformer + per-token diffusion head (MAR arXiv 2406.11838, Harmon
arXiv 2503.21979).

Harmon uses one MAR-style encoder for both tasks: generation sees a partly masked image of
continuous tokens (VAE latents) and predicts the masked ones through a small per-token head;
understanding sees the full, clean image and answers with next-token text. Here the backbone,
the sequence layout, the block-causal mask (causal text, bidirectional inside each image), the
image input projection, the (row, col) embeddings and the text path are Transfusion's
(unimm.recipes.transfusion); what changes is the image objective and sampler
(unimm.paradigms.diffusion_head):

- image inputs: known tokens enter as their latents, masked tokens as one learned [MASK] vector
  (plus their position embedding); the backbone never sees noise;
- the hidden state at each masked slot is the condition z of that token; a small adaLN MLP head
  predicts the flow velocity of the token given (x_t, t, z), loss on masked tokens only;
- sampling reveals tokens in a random order over `head.mar_steps` backbone passes (cosine
  schedule), drawing each revealed token with `head.head_steps` Euler steps of the head's ODE,
  classifier-free guidance on the head's velocity.
"""

from __future__ import annotations

import random

import torch
from torch import Tensor, nn

from unimm.data.images import to_uint8
from unimm.data.sample import Image, Sample, Segment
from unimm.data.sequence import IMAGE
from unimm.paradigms.diffusion_head import (
    DiffusionHead,
    masked_after_step,
    sample_tokens,
    training_mask,
)
from unimm.paradigms.rng import Rng, rand
from unimm.recipes.base import SamplingConfig
from unimm.recipes.parts import Parts
from unimm.recipes.transfusion import TransfusionModel, image_pixels


class DiffusionHeadModel(TransfusionModel):
    recipe = "mar"

    def __init__(self, parts: Parts):
        super().__init__(parts)
        del self.image_out  # velocities come from the per-token head instead
        dim = parts.config.model.dim
        self.head = DiffusionHead(parts.image.latent_dim, dim, parts.config.head)
        self.mask_token = nn.Parameter(torch.randn(dim) * 0.02)

    def image_inputs(self, latents: Tensor, masked: Tensor) -> Tensor:
        """(M, N, d) latents, (M, N) bool masked -> (M, N, D) backbone inputs."""
        known = self.image_embed(latents, torch.ones(latents.shape[0], device=latents.device))
        hidden_slot = self.mask_token + self.image_pos()  # (N, D)
        return torch.where(masked[..., None], hidden_slot.to(known.dtype), known)

    def loss(self, samples: list[Sample], generator: torch.Generator | None = None) -> dict:
        seed = int(torch.randint(0, 2**31, (1,), generator=generator))
        batch, x1 = self.layout(samples, random.Random(seed))
        is_image = batch.modality == IMAGE
        M, N = x1.shape[0], self.image_tokens
        target = batch.loss_mask[is_image].view(M, N)[:, 0]  # (M,)
        # Context images (understanding) stay whole; target images lose a random subset.
        masked = training_mask(M, N, generator).to(x1.device) & target[:, None]  # (M, N)
        x = self.embed(batch.ids, is_image, self.image_inputs(x1, masked))
        mask = self.attention_mask(batch.image_block, batch.valid)
        hidden = self.backbone(None, mask=mask, return_hidden=True, embeds=x)  # (B, T, D)
        loss_text = self.text_loss(hidden, batch)
        if bool(masked.any()):
            mul = self.parts.config.head.head_batch_mul
            z = hidden[is_image].view(M, N, -1)[masked].repeat(mul, 1)  # (K * mul, D)
            xt, t, velocity = self.flow.noise(x1[masked].repeat(mul, 1), generator)
            weight = self.velocity_weights(image_pixels(samples), masked)
            weight = None if weight is None else weight.repeat(mul) / mul
            loss_image = self.flow.loss(self.head(xt, t, z), velocity, weight)
        else:
            loss_image = hidden.sum() * 0.0
        loss = loss_text + self.parts.config.flow.image_loss_weight * loss_image
        return {
            "loss": loss,
            "loss_text": loss_text.detach(),
            "loss_image": loss_image.detach(),
            "tokens": torch.tensor(float(batch.valid.sum())),
        }

    def _generate_images(
        self, prompts: list[list[Segment]], sampling: SamplingConfig, gen: Rng
    ) -> list[Segment]:
        B, N, d = len(prompts), self.image_tokens, self.image_tok.latent_dim
        steps, cfg = self.parts.config.head.mar_steps, self.parts.config.head
        cache, mask, img_pos, guided = self.image_span_context(prompts, sampling)
        x = torch.zeros(B, N, d, device=self.device)
        masked = torch.ones(B, N, dtype=torch.bool, device=self.device)
        order = rand((B, N), gen, device=self.device).argsort(dim=1)  # reveal order per image
        revealed = 0
        for k in range(steps):  # with steps > N some steps reveal nothing and cost nothing
            n_new = N - masked_after_step(k, steps, N) - revealed
            if n_new <= 0:
                continue
            tokens = self.image_inputs(x, masked)
            hidden = self.run_image_span(
                cache, mask, img_pos, torch.cat([tokens, tokens]) if guided else tokens
            )
            idx = order[:, revealed : revealed + n_new]  # (B, n_new)
            pick = idx[..., None].expand(-1, -1, hidden.shape[-1])
            z_cond = hidden[:B].gather(1, pick).flatten(0, 1)  # (B * n_new, D)
            z_uncond = hidden[B:].gather(1, pick).flatten(0, 1) if guided else None
            new = sample_tokens(
                self.head, z_cond, z_uncond, sampling.cfg_scale, cfg.head_steps, gen
            )
            x.scatter_(1, idx[..., None].expand(-1, -1, d), new.view(B, n_new, d).float())
            masked.scatter_(1, idx, False)
            revealed += n_new
        pixels = to_uint8(self.image_tok.decode(x))
        return [Image(p) for p in pixels]
