"""MetaQuery: learnable queries read a (frozen) understanding model out into a diffusion decoder.

MetaQuery (arXiv 2504.06256) and BLIP3-o (arXiv 2505.09568) keep a multimodal LLM for
understanding and bolt generation onto it from outside: N learnable query embeddings are
appended to the prompt, the LLM's outputs at those positions pass a connector, and a separate
diffusion decoder draws the image conditioned on them, trained with a plain diffusion loss on
image-caption pairs. MetaQuery freezes the LLM (metaquery.freeze_llm): only the queries, the
connector and the decoder learn, so the model understands exactly as well as the LLM it started
from (metaquery.init_llm) and generation cannot hurt it.

Here:
- the understanding model is Transfusion's (unimm.recipes.transfusion) minus its image output:
  a causal backbone that reads images as continuous latents through a linear adaptor (+ (row,
  col) and the t = 1 time embedding) into the image slots and answers by next-token text
  prediction. Reading the same latents the decoder writes keeps one image tokenizer for both
  directions, and makes a trained transfusion run a ready "LLM pre-trained on the world" to
  freeze (MetaQuery's MLLM has its own vision encoder; ours is that adaptor);
- generation: `<bos> prompt <boi> q_1 ... q_Q` with the queries' embeddings in the Q slots,
  causal like the rest of the LLM; hidden states at the query slots -> MLP connector -> the
  small DiT of unimm.recipes.query_decoder over the latent grid, trained with the rectified-flow
  loss (unimm.paradigms.flow). The LLM runs once per image; only the decoder runs per ODE step;
- classifier-free guidance drops the condition inside the decoder: with probability
  train.cfg_dropout an image's query features are replaced by a learned null condition (Q, C),
  and sampling guides v = u + s (c - u) with the null condition as the unconditional row.
  (The other recipes drop the prompt's text instead; the LLM here may be frozen, so the decoder
  must learn the unconditional distribution by itself.)
- with the LLM trainable, understanding samples also train it (text loss + lambda * flow
  loss, as Transfusion); with it frozen, samples without an image target are skipped.

Layout in training: a target image's slots hold the queries (its latents are only the flow
target); context images (an edit's source, a VQA image) hold their clean latent tokens. (So in
an interleaved sample, text after a target image reads the queries, not the image; at inference
the drawn image joins the context as an image.)
Legend: B rows, M images, Q queries, N latent tokens (h * w), d latent channels, D LLM width,
C decoder width.
"""

from __future__ import annotations

import random
from dataclasses import fields, replace
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from unimm.checkpoint import WEIGHTS_FILE, checkpoint_dir, load_tensors
from unimm.data.images import to_uint8
from unimm.data.sample import Image, Sample, Segment
from unimm.data.sequence import IMAGE, TokenBatch, build_sequence, collate
from unimm.paradigms.flow import guided_velocity, make_scheduler
from unimm.paradigms.rng import Rng, randn
from unimm.presets import RunConfig
from unimm.recipes.base import Modality, SamplingConfig
from unimm.recipes.parts import IMAGE_TOKENIZER_DIR, Parts, load_parts, read_run_config
from unimm.recipes.query_decoder import QueryDecoder
from unimm.recipes.transfusion import TransfusionModel

# The understanding model: what freeze_llm freezes and init_llm loads (Transfusion's names, so
# a transfusion checkpoint loads as it is).
LLM_PARAMS = ("backbone.", "image_in.", "image_row", "image_col", "time_embed.")
INIT_RECIPES = ("transfusion", "metaquery")


def is_llm_param(name: str) -> bool:
    return name.startswith(LLM_PARAMS)


class MetaQueryModel(TransfusionModel):
    recipe = "metaquery"

    def __init__(self, parts: Parts, load_init: bool = True):
        super().__init__(parts)
        del self.image_out  # images come out of the decoder, not the LLM
        mq, dim = parts.config.metaquery, parts.config.model.dim
        c = mq.decoder_dim
        self.num_queries = mq.num_queries
        # Initialised like token embeddings, which is what they stand in for.
        self.queries = nn.Parameter(torch.randn(mq.num_queries, dim) * 0.02)  # (Q, D)
        self.connector = nn.Sequential(nn.Linear(dim, c), nn.GELU(), nn.Linear(c, c))
        self.null_cond = nn.Parameter(torch.randn(mq.num_queries, c) * 0.02)  # (Q, C)
        self.decoder = QueryDecoder(
            parts.image.latent_dim, self.latent_tokens, c, mq.decoder_layers, mq.decoder_heads
        )
        if load_init and mq.init_llm is not None:
            self.load_llm(mq.init_llm)
        if mq.freeze_llm:
            for name, p in self.named_parameters():
                if is_llm_param(name):
                    p.requires_grad_(False)

    @classmethod
    def init_checkpoint(cls, config: RunConfig) -> Path | None:
        init = config.metaquery.init_llm
        return None if init is None else checkpoint_dir(init)

    # ----- the understanding model ----------------------------------------------------------

    def load_llm(self, path: str | Path) -> None:
        """Load the understanding model's weights (LLM_PARAMS) from a trained transfusion or
        metaquery checkpoint; its model config and tokenizers must be this run's."""
        directory = checkpoint_dir(path)
        recipe, cfg = read_run_config(directory)
        where = f"metaquery.init_llm: {directory}"
        if recipe not in INIT_RECIPES:
            raise ValueError(
                f"{where} holds a {recipe!r} model; the understanding model must read images "
                f"as this recipe does ({' or '.join(INIT_RECIPES)})"
            )
        mine = self.parts.config.model
        diff = [f.name for f in fields(mine) if getattr(mine, f.name) != getattr(cfg.model, f.name)]
        if diff:
            raise ValueError(f"{where} has another model config (differs in {', '.join(diff)})")
        other = load_parts(directory, expect_recipe=recipe)
        if other.text._tok.get_vocab() != self.text_tok._tok.get_vocab():
            raise ValueError(f"{where} has another text tokenizer")
        if not same_image_tokenizer(other.image, self.image_tok):
            raise ValueError(
                f"{where} has another image tokenizer (train with --image-tokenizer "
                f"{directory / IMAGE_TOKENIZER_DIR})"
            )
        state = load_tensors(directory / WEIGHTS_FILE)
        llm = {k: v for k, v in state.items() if is_llm_param(k)}
        missing = [k for k in self.state_dict() if is_llm_param(k) and k not in llm]
        if missing:
            raise ValueError(f"{where} lacks {missing[:3]}")
        self.load_state_dict(llm, strict=False)

    def describe(self) -> dict:
        out = super().describe()
        mq = self.parts.config.metaquery
        if mq.freeze_llm:
            out["trained_parameters"] = sum(p.numel() for p in self.parameters() if p.requires_grad)
            source = mq.init_llm or "its random initialisation"
            out["note"] = (
                f"The understanding model is frozen ({source}): its VQA and caption scores are "
                "that model's, not learned by this run (only queries, connector and decoder "
                "trained)."
            )
        return out

    def max_prompt_images(self, modality: Modality) -> int:
        most = super().max_prompt_images(modality)
        if modality == "text":
            return most
        # <bos>, then the images, then <boi> and the queries.
        room = self.parts.config.model.max_seq_len - self.num_queries - 2
        return min(most, room // (self.image_tokens + 2))

    # ----- training -------------------------------------------------------------------------

    def query_layout(self, samples: list[Sample]) -> tuple[TokenBatch, Tensor, Tensor]:
        """Collated sequences with Q query slots per target image and N latent slots per context
        image (both hold the pad id), the (M, N, d) latents of all images in order and which
        of them are targets (M,) bool."""
        images, target = [], []
        seqs = []
        query_slots = [self.text_tok.pad_id] * self.num_queries
        image_slots = [self.text_tok.pad_id] * self.image_tokens
        for sample in samples:
            slots = []
            for i, seg in enumerate(sample.segments):
                if isinstance(seg, Image):
                    images.append(seg.pixels)
                    target.append(i in sample.targets)
                    slots.append(query_slots if target[-1] else image_slots)
            seqs.append(build_sequence(sample, self.text_tok, slots))
        batch = collate(seqs, self.text_tok.pad_id, self.parts.config.model.max_seq_len)
        return batch, self.encode_images(images), torch.tensor(target, dtype=torch.bool)

    def condition(self, samples: list[Sample]) -> tuple[Tensor, Tensor, Tensor, TokenBatch]:
        """One LLM pass over the samples: (query features (M_t, Q, C) of the target images,
        their latents (M_t, N, d), hidden states (B, T, D), the batch)."""
        batch, latents, target = self.query_layout(samples)
        is_slot = batch.modality == IMAGE
        is_query = is_slot & batch.loss_mask
        x = self.backbone.tok_embeddings(batch.ids).clone()  # (B, T, D)
        if bool((~target).any()):
            pixels = [p for p, t in zip(self.images_of(samples), target.tolist()) if not t]
            ctx = self.context_tokens(pixels, latents[~target])  # (M_c, N, D)
            x[is_slot & ~batch.loss_mask] = ctx.flatten(0, 1).to(x.dtype)
        M_t = int(target.sum())
        x[is_query] = self.queries.repeat(M_t, 1).to(x.dtype)
        # Queries attend causally (block 0), as the LLM reads everything but images.
        block = torch.where(is_query, torch.zeros_like(batch.image_block), batch.image_block)
        mask = self.attention_mask(block, batch.valid)
        hidden = self.backbone(None, mask=mask, return_hidden=True, embeds=x)  # (B, T, D)
        # (an explicit width: a batch with no image to draw has M_t = 0 rows)
        feats = hidden[is_query].view(M_t, self.num_queries, hidden.shape[-1])
        # The <eoi> closing a query block is not something to learn to predict.
        after_query = F.pad(is_query[:, :-1], (1, 0))
        batch = replace(batch, loss_mask=batch.loss_mask & ~after_query)
        return self.connector(feats), latents[target], hidden, batch

    @staticmethod
    def images_of(samples: list[Sample]) -> list[np.ndarray]:
        return [s.pixels for sample in samples for s in sample.segments if isinstance(s, Image)]

    def loss(self, samples: list[Sample], generator: torch.Generator | None = None) -> dict:
        seed = int(torch.randint(0, 2**31, (1,), generator=generator))
        rng = random.Random(seed)
        frozen = self.parts.config.metaquery.freeze_llm
        if frozen:  # nothing to learn from understanding samples
            samples = [
                s for s in samples if any(isinstance(s.segments[i], Image) for i in s.targets)
            ]
        if not samples:
            zero = self.queries.sum() * 0.0
            return {"loss": zero, "tokens": torch.tensor(0.0)}
        cond, x1, hidden, batch = self.condition(samples)
        out = {"tokens": torch.tensor(float(batch.valid.sum()))}
        loss = self.queries.sum() * 0.0
        if not frozen:
            loss_text = self.text_loss(hidden, batch)
            loss = loss + loss_text
            out["loss_text"] = loss_text.detach()
        if x1.shape[0]:
            # Condition dropout inside the decoder: the null condition stands for "no prompt".
            drop = torch.tensor(
                [rng.random() < self.parts.config.train.cfg_dropout for _ in range(x1.shape[0])]
            )
            cond = torch.where(drop[:, None, None], self.null_cond.to(cond.dtype), cond)
            xt, t, velocity = self.flow.noise(x1, generator)
            drawn = [
                seg.pixels
                for sample in samples
                for i, seg in enumerate(sample.segments)
                if isinstance(seg, Image) and i in sample.targets
            ]
            every = torch.ones(x1.shape[:-1], dtype=torch.bool, device=x1.device)
            weight = self.velocity_weights(drawn, every)
            weight = None if weight is None else weight.view(x1.shape[:-1])
            loss_image = self.flow.loss(self.decoder(xt, t, cond), velocity, weight)
            loss = loss + self.parts.config.flow.image_loss_weight * loss_image
            out["loss_image"] = loss_image.detach()
        out["loss"] = loss
        return out

    # ----- inference ------------------------------------------------------------------------

    def query_features(self, prompts: list[list[Segment]]) -> Tensor:
        """(B, Q, C) connected query features of each prompt: the prompt and <boi> are
        prefilled, then the queries run against the cache."""
        _, cache, valid, positions = self._prefill(prompts, self.text_tok.boi_id)
        (R, P), Q = valid.shape, self.num_queries
        if P + Q > self.parts.config.model.max_seq_len:
            raise ValueError(f"prompt too long: {P} + {Q} query tokens exceed max_seq_len")
        pos = positions[:, -1:] + 1 + torch.arange(Q)  # (R, Q)
        prompt_keys = valid[:, None, None, :].expand(-1, 1, Q, -1)
        causal = torch.ones(Q, Q, dtype=torch.bool).tril().expand(R, 1, Q, Q)
        mask = torch.cat([prompt_keys, causal], -1)  # (R, 1, Q, P + Q)
        queries = self.queries.expand(R, -1, -1)
        hidden = self.backbone(None, pos, mask, cache, True, embeds=queries)  # (R, Q, D)
        return self.connector(hidden)

    def _generate_images(
        self, prompts: list[list[Segment]], sampling: SamplingConfig, gen: Rng
    ) -> list[Segment]:
        B = len(prompts)
        cond = self.query_features(prompts)  # (B, Q, C)
        guided = sampling.cfg_scale != 1.0
        if guided:
            cond = torch.cat([cond, self.null_cond.expand(B, -1, -1).to(cond.dtype)])
        x = randn((B, self.latent_tokens, self.image_tok.latent_dim), gen)
        flow = self.parts.config.flow
        sched = make_scheduler(replace(flow, num_steps=sampling.steps or flow.num_steps))
        for t in sched.timesteps:
            xs = torch.cat([x, x]) if guided else x
            v = self.decoder(xs, t.expand(xs.shape[0]), cond).float()  # (R, N, d)
            if guided:
                v = guided_velocity(v[:B], v[B:], sampling.cfg_scale)
            x = sched.step(v, t, x)
        return [Image(p) for p in to_uint8(self.image_tok.decode(x))]

    # ----- checkpoints ----------------------------------------------------------------------

    @classmethod
    def from_pretrained(cls, directory: str | Path) -> MetaQueryModel:
        parts = load_parts(directory, expect_recipe=cls.recipe)
        model = cls(parts, load_init=False)  # the checkpoint holds every weight
        state = load_tensors(Path(directory) / WEIGHTS_FILE)
        missing, unexpected = model.load_state_dict(state, strict=False)
        if missing or unexpected:
            raise ValueError(
                f"{directory}/{WEIGHTS_FILE} does not match the config: missing {missing[:3]}, "
                f"unexpected {unexpected[:3]}"
            )
        return model.eval()


def same_image_tokenizer(a: nn.Module, b: nn.Module) -> bool:
    """Same kind, config and weights."""
    if type(a) is not type(b) or getattr(a, "config", None) != getattr(b, "config", None):
        return False
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)
