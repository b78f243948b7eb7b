"""Transfusion: one transformer, next-token loss on text + flow loss on continuous image tokens.

Transfusion (arXiv 2408.11039) trains a single transformer on mixed sequences: text tokens with
the language-model loss, images as continuous patch vectors with a diffusion loss, summed as
L = L_text + lambda * L_image (lambda = 5 in the paper). Attention is causal over the sequence
and bidirectional inside each image (the "block_causal" policy of unimm.model.masks). We use the
rectified-flow form of the image loss (as lucidrains/transfusion-pytorch does): velocity
prediction, t = 0 noise, t = 1 data (unimm.paradigms.flow).

Images enter as linear projections of their patches (raw pixels here; a VAE's latents with the
same interface), plus a learned (row, col) embedding and the embedding of the image's time t,
added to every patch token. The same linear layer reads velocities out at image positions.
The paper's U-Net option (transfusion.patching = "unet", unimm.recipes.patching) puts
time-conditioned U-Net down blocks in and up blocks out instead; transfusion.patch = p makes
one backbone token cover p x p cells of the tokenizer's grid (N / p^2 image slots).
An image the model must generate is noised to a random t; an image given as context
(understanding: VQA, captions) is clean, t = 1, so understanding is next-token prediction given
the clean image's patches in the sequence.

Layout: the sequence builder's (unimm.data.sequence), with each image's code slots holding its
patch vectors instead of ids:

    <bos> [text] <boi> patch ... patch <eoi> [text] <assistant> answer <eos>

Generation: an image prompt ends with <boi>; the prompt is prefilled once into the KV cache and
every ODE step runs only the image span against it (then crops the cache back). Classifier-free
guidance: the unconditional row is the prompt without its text (text dropped with probability
train.cfg_dropout in training), v = u + s (c - u). Text is decoded token by token with the cache.
"""

from __future__ import annotations

import random
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn

from unimm.checkpoint import WEIGHTS_FILE, load_tensors, save_tensors, write_directory
from unimm.data.images import background_cells, to_tensor, to_uint8
from unimm.data.sample import Image, Sample, Segment, Text
from unimm.data.sequence import IMAGE, TEXT, TokenBatch, build_sequence, collate
from unimm.interop.hf_vae import DiffusersVAETokens
from unimm.model.config import ModelConfig
from unimm.model.masks import block_causal_mask
from unimm.model.transformer import Transformer
from unimm.paradigms.autoregressive import next_token_loss, sample_next
from unimm.paradigms.flow import FlowMatching, TimestepEmbedding, guided_velocity, make_scheduler
from unimm.paradigms.rng import Rng, Seed, make_rng, randn
from unimm.paradigms.weighting import background_weighted
from unimm.recipes.base import Modality, SamplingConfig, UnifiedModel
from unimm.recipes.chameleon import check_prompts
from unimm.recipes.parts import Parts, load_parts, save_parts
from unimm.recipes.patching import LinearPatching, UNetDown, UNetUp
from unimm.tokenizers.pixel_patches import PixelPatches
from unimm.tokenizers.text import TextTokenizer
from unimm.tokenizers.vae import VAETokenizer


def image_pixels(samples: list[Sample]) -> list[np.ndarray]:
    """Every image of the samples, in the order the layout places them."""
    return [s.pixels for sample in samples for s in sample.segments if isinstance(s, Image)]


class TransfusionModel(UnifiedModel):
    recipe = "transfusion"
    image_tokenizer_kind = "continuous"

    def __init__(self, parts: Parts):
        super().__init__()
        if not isinstance(parts.image, PixelPatches | VAETokenizer | DiffusersVAETokens):
            raise ValueError("the transfusion recipe needs a continuous image tokenizer")
        self.parts = parts
        cfg = parts.config
        self.backbone = self.make_backbone(cfg.model)
        self.flow = FlowMatching(cfg.flow)
        dim, d = cfg.model.dim, parts.image.latent_dim
        grid, tf = parts.image.grid, cfg.transfusion
        p = tf.patch
        if self.recipe != "transfusion" and (tf.patching != "linear" or p != 1):
            raise ValueError(f"transfusion.patching / transfusion.patch: not for {self.recipe}")
        if grid[0] % p or grid[1] % p:
            raise ValueError(f"transfusion.patch {p} does not divide the image grid {grid}")
        h, w = grid[0] // p, grid[1] // p
        self.latent_tokens = grid[0] * grid[1]  # tokens of the image tokenizer
        self.image_tokens = h * w  # sequence slots per image
        if tf.patching == "unet":
            blocks = (d, dim, tf.unet_width, grid, p, tf.unet_blocks)
            self.image_in, self.image_out = UNetDown(*blocks), UNetUp(*blocks)
        else:
            self.image_in = LinearPatching(d, dim, grid, p, inward=True)
            self.image_out = LinearPatching(dim, d, grid, p, inward=False)
            # Velocity head starts at zero (DiT's zero-initialised output layer): the first
            # steps then learn the mean velocity instead of undoing random outputs.
            nn.init.zeros_(self.image_out.weight)
            nn.init.zeros_(self.image_out.bias)
        self.time_embed = TimestepEmbedding(dim)
        self.image_row = nn.Parameter(torch.randn(h, 1, dim) * 0.02)
        self.image_col = nn.Parameter(torch.randn(1, w, dim) * 0.02)

    def make_backbone(self, config: ModelConfig) -> Transformer:
        return Transformer(config)

    @property
    def image_resolution(self) -> int:
        return self.image_tok.config.resolution

    @property
    def text_tok(self) -> TextTokenizer:
        return self.parts.text

    @property
    def image_tok(self) -> PixelPatches | VAETokenizer | DiffusersVAETokens:
        return self.parts.image

    # ----- embedding ------------------------------------------------------------------------

    def embed(self, ids: Tensor, is_image: Tensor, image_tokens: Tensor) -> Tensor:
        """Token embeddings with image slots replaced by image token embeddings.

        ids (B, T); is_image (B, T) bool with M * N True slots in raster order of (row, pos);
        image_tokens (M, N, D) the images' embeddings in that order (see `image_embed`).
        """
        x = self.backbone.tok_embeddings(ids)  # (B, T, D)
        if image_tokens.shape[0] == 0:
            return x
        x = x.clone()
        x[is_image] = image_tokens.flatten(0, 1).to(x.dtype)
        return x

    def image_pos(self) -> Tensor:
        """(N, D) learned (row, col) embedding of each image slot."""
        return (self.image_row + self.image_col).flatten(0, 1)

    def image_embed(self, latents: Tensor, t: Tensor) -> Tensor:
        """(M, N_lat, d) latents at times (M,) -> (M, N, D)."""
        temb = self.time_embed(t)  # (M, D)
        if isinstance(self.image_in, UNetDown):
            tokens = self.image_in(latents, temb)
        else:
            tokens = self.image_in(latents)
        return tokens + self.image_pos() + temb[:, None]

    def image_velocity(self, hidden: Tensor, t: Tensor) -> Tensor:
        """(M, N, D) hidden states of images at times (M,) -> (M, N_lat, d) velocities."""
        if isinstance(self.image_out, UNetUp):
            return self.image_out(hidden, self.time_embed(t))
        return self.image_out(hidden)

    # ----- training -------------------------------------------------------------------------

    @torch.no_grad()
    def encode_images(self, images: list[np.ndarray]) -> Tensor:
        """uint8 images -> (M, N, d) continuous tokens."""
        if not images:
            n, d = self.latent_tokens, self.image_tok.latent_dim
            return torch.zeros(0, n, d, device=self.device)
        return self.image_tok.encode(to_tensor(images, self.device))

    def layout(
        self, samples: list[Sample], rng: random.Random | None = None
    ) -> tuple[TokenBatch, Tensor]:
        """Collated sequences (image slots hold the pad id) and the (M, N, d) image latents."""
        latents = self.encode_images(image_pixels(samples))
        slots = [self.text_tok.pad_id] * self.image_tokens
        p_drop = self.parts.config.train.cfg_dropout
        seqs = []
        for sample in samples:
            n = sum(isinstance(s, Image) for s in sample.segments)
            image_target = any(isinstance(sample.segments[i], Image) for i in sample.targets)
            drop = rng is not None and image_target and rng.random() < p_drop
            seqs.append(build_sequence(sample, self.text_tok, [slots] * n, drop_text=drop))
        max_len = self.parts.config.model.max_seq_len
        return collate(seqs, self.text_tok.pad_id, max_len, self.device), latents

    def loss(self, samples: list[Sample], generator: torch.Generator | None = None) -> dict:
        seed = int(torch.randint(0, 2**31, (1,), generator=generator))
        batch, x1 = self.layout(samples, random.Random(seed))
        is_image = batch.modality == IMAGE  # (B, T)
        M = x1.shape[0]
        # Target images are noised to a sampled t; context images stay clean at t = 1.
        target = batch.loss_mask[is_image].view(M, self.image_tokens)[:, 0]  # (M,)
        xt, t, velocity = self.flow.noise(x1, generator)
        t = torch.where(target, t, torch.ones_like(t))
        xt = torch.where(target[:, None, None], xt, x1)
        x = self.embed(batch.ids, is_image, self.image_embed(xt, t))
        mask = self.attention_mask(batch.image_block, batch.valid)
        hidden = self.backbone(None, mask=mask, return_hidden=True, embeds=x)  # (B, T, D)

        loss_text = self.text_loss(hidden, batch)
        pred = self.image_velocity(hidden[is_image].view(M, self.image_tokens, -1), t)[target]
        if bool(target.any()):
            chosen = target[:, None].expand(M, self.latent_tokens)
            weight = self.velocity_weights(image_pixels(samples), chosen)
            weight = None if weight is None else weight.view(pred.shape[:-1])
            loss_image = self.flow.loss(pred, velocity[target], weight)
        else:
            loss_image = x.sum() * 0
        loss = loss_text + self.parts.config.flow.image_loss_weight * loss_image
        return {
            "loss": loss,
            "loss_text": loss_text.detach(),
            "loss_image": loss_image.detach(),
            "tokens": torch.tensor(float(batch.valid.sum())),
        }

    def velocity_weights(self, pixels: list[np.ndarray], chosen: Tensor) -> Tensor | None:
        """Weights of the velocity loss's tokens per flow.background_weight, in the order of
        `latents[chosen]` and summing to 1; None at 1.0 (the plain mean). pixels: every image
        of the batch in layout order (M); chosen (M, latent tokens) bool: the tokens scored."""
        w = self.parts.config.flow.background_weight
        if w == 1.0:
            return None
        flags = background_cells(np.stack(pixels), self.image_tok.grid)
        flags = torch.from_numpy(flags).to(chosen.device)
        return background_weighted(chosen, flags, w)[chosen]

    def context_tokens(self, pixels: list[np.ndarray], latents: Tensor) -> Tensor:
        """(M, N, D) inputs of clean images given as context: their latents at t = 1."""
        return self.image_embed(latents, torch.ones(latents.shape[0], device=latents.device))

    def attention_mask(self, image_block: Tensor, valid: Tensor) -> Tensor:
        """Causal text, bidirectional inside each image; (B, T) -> (B, 1, T, T). Block ids need
        only be unique per row, and padding keys are masked."""
        return block_causal_mask(image_block - 1, pad=~valid)

    def image_span_mask(self, n: int) -> Tensor:
        """(N, N): which image tokens an image token sees (all of its image)."""
        return torch.ones(n, n, dtype=torch.bool, device=self.device)

    def text_loss(self, hidden: Tensor, batch: TokenBatch) -> Tensor:
        """Next-token cross-entropy on text targets only; hidden (B, T, D)."""
        text_mask = (batch.loss_mask & (batch.modality == TEXT))[:, 1:]
        picked = hidden[:, :-1][text_mask]  # (K, D): only positions that predict a text target
        targets = batch.ids[:, 1:][text_mask][None]  # (1, K)
        logits = self.backbone.head(picked)[None]  # (1, K, V)
        return next_token_loss(logits, targets, torch.ones_like(targets, dtype=torch.bool))

    # ----- inference ------------------------------------------------------------------------

    def _prefill(self, prompts: list[list[Segment]], opener: int):
        """Left-pad the prompts (each closed by `opener`) and run them into a fresh KV cache.

        Returns (hidden (R, P, D), cache, valid (R, P), positions (R, P)).
        """
        layouts, pixels = [], []
        for p in prompts:
            batch, lat = self.layout([Sample(list(p), targets=(), task="prompt")])
            layouts.append((batch.ids[0].tolist() + [opener], batch.image_block[0].cpu(), lat))
            pixels += [s.pixels for s in p if isinstance(s, Image)]
        R, P = len(prompts), max(len(ids) for ids, _, _ in layouts)
        ids = torch.full((R, P), self.text_tok.pad_id, dtype=torch.long)
        block = torch.zeros((R, P), dtype=torch.long)
        valid = torch.zeros((R, P), dtype=torch.bool)
        for r, (row, blk, _) in enumerate(layouts):
            ids[r, P - len(row) :] = torch.tensor(row)
            block[r, P - len(row) : P - 1] = blk
            valid[r, P - len(row) :] = True
        ids, block, valid = ids.to(self.device), block.to(self.device), valid.to(self.device)
        latents = torch.cat([lat for _, _, lat in layouts])
        is_image = block > 0
        x = self.embed(ids, is_image, self.context_tokens(pixels, latents))
        positions = (valid.cumsum(1) - 1).clamp(min=0)
        mask = self.attention_mask(block, valid)
        cache = self.backbone.make_cache(R)
        hidden = self.backbone(None, positions, mask, cache, True, embeds=x)
        return hidden, cache, valid, positions

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
            return self._generate_images(prompts, sampling, gen)
        return self._generate_text(prompts, sampling, gen)

    def _generate_images(
        self, prompts: list[list[Segment]], sampling: SamplingConfig, gen: Rng
    ) -> list[Segment]:
        B = len(prompts)
        cache, mask, img_pos, guided = self.image_span_context(prompts, sampling)
        # Noise is drawn on the CPU generators, so a seed gives the same image on any device.
        x = randn((B, self.latent_tokens, self.image_tok.latent_dim), gen).to(self.device)
        flow = self.parts.config.flow
        sched = make_scheduler(replace(flow, num_steps=sampling.steps or flow.num_steps))
        for t in sched.timesteps:
            xs = torch.cat([x, x]) if guided else x
            ts = t.expand(xs.shape[0]).to(xs.device)
            hidden = self.run_image_span(cache, mask, img_pos, self.image_embed(xs, ts))
            v = self.image_velocity(hidden, ts).float()  # (R, N_lat, d)
            if guided:
                v = guided_velocity(v[:B], v[B:], sampling.cfg_scale)
            x = sched.step(v, t, x)
        pixels = to_uint8(self.image_tok.decode(x))
        return [Image(p) for p in pixels]

    def image_span_context(self, prompts: list[list[Segment]], sampling: SamplingConfig):
        """Prefill the prompts (and, with guidance, their text-free copies after them) and
        return what running the image span against them needs: (cache, mask (R, 1, N, P + N),
        positions (R, N), guided)."""
        N = self.image_tokens
        guided = sampling.cfg_scale != 1.0
        rows = list(prompts)
        if guided:
            # The prompt without its text; for text-to-image that is just <bos> <boi>.
            rows += [[s for s in p if isinstance(s, Image)] for p in prompts]
        _, cache, valid, positions = self._prefill(rows, self.text_tok.boi_id)
        P = valid.shape[1]
        if P + N > self.parts.config.model.max_seq_len:
            raise ValueError(f"prompt too long: {P} + {N} image tokens exceed max_seq_len")
        img_pos = positions[:, -1:] + 1 + torch.arange(N, device=positions.device)  # (R, N)
        # Image tokens see every non-padding prompt token and the whole image.
        prompt_keys = valid[:, None, None, :].expand(-1, 1, N, -1)
        span = self.image_span_mask(N).expand(len(rows), 1, N, N)
        mask = torch.cat([prompt_keys, span], -1)  # (R, 1, N, P + N)
        return cache, mask, img_pos, guided

    def run_image_span(self, cache, mask: Tensor, img_pos: Tensor, tokens: Tensor) -> Tensor:
        """Hidden states (R, N, D) of image tokens (R, N, D) against the cached prompt; the
        cache is left as it was."""
        P = cache.length
        hidden = self.backbone(None, img_pos, mask, cache, True, embeds=tokens)
        cache.crop(P)
        return hidden

    def _generate_text(
        self, prompts: list[list[Segment]], sampling: SamplingConfig, gen: Rng
    ) -> list[Segment]:
        hidden, cache, valid, positions = self._prefill(prompts, self.text_tok.assistant_id)
        B, P = valid.shape
        steps = min(sampling.max_new_tokens, self.parts.config.model.max_seq_len - P)
        eos = self.text_tok.eos_id
        logits = self.backbone.head(hidden[:, -1])
        out = torch.zeros(B, 0, dtype=torch.long, device=self.device)
        done = torch.zeros(B, dtype=torch.bool, device=self.device)
        pos = positions[:, -1]
        keys = valid
        for _ in range(steps):
            nxt = sample_next(
                logits,
                temperature=sampling.temperature,
                top_k=sampling.top_k,
                top_p=sampling.top_p,
                generator=gen,
            )
            out = torch.cat([out, nxt[:, None]], 1)
            done |= nxt == eos
            if bool(done.all()) or out.shape[1] == steps:
                break
            pos = pos + 1
            keys = torch.cat([keys, keys.new_ones(B, 1)], 1)
            hidden = self.backbone(nxt[:, None], pos[:, None], keys[:, None, None, :], cache, True)
            logits = self.backbone.head(hidden[:, -1])
        texts = []
        for row in out.tolist():
            row = row[: row.index(eos)] if eos in row else row
            texts.append(Text(self.text_tok.decode(row)))
        return texts

    # ----- checkpoints ----------------------------------------------------------------------

    def save_pretrained(self, directory: str | Path) -> Path:
        def fill(tmp: Path) -> None:
            save_parts(self.parts, tmp, recipe=self.recipe)
            save_tensors(self.state_dict(), tmp / WEIGHTS_FILE)

        return write_directory(directory, fill)

    @classmethod
    def from_pretrained(cls, directory: str | Path) -> TransfusionModel:
        parts = load_parts(directory, expect_recipe=cls.recipe)
        model = cls(parts)
        state = load_tensors(Path(directory) / WEIGHTS_FILE)
        missing, unexpected = model.load_state_dict(state, strict=False)
        if missing or unexpected:
            raise ValueError(
                f"{directory}/{WEIGHTS_FILE} does not match the config: missing {missing[:3]}, "
                f"unexpected {unexpected[:3]}"
            )
        return model.eval()
