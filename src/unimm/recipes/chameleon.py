"""Autoregressive over one shared text + image vocabulary (Chameleon / Emu3 / LlamaGen family).

Chameleon (arXiv 2405.09818) and Emu3 (arXiv 2409.18869) quantise images into discrete codes,
append the codes to the text vocabulary ("early fusion") and train one decoder-only transformer
with next-token prediction on interleaved sequences. Images are generated token by token with
a KV cache and classifier-free guidance (LlamaGen, arXiv 2406.06525: logits = u + s (c - u),
where the unconditional row is the prompt with its text dropped, learned by dropping the
caption with probability 0.1 in training).

Vocabulary: [0, text_vocab) text ids and markers, [text_vocab, text_vocab + codebook) image codes
(`chameleon.code_ids = "after_text"`). A Hugging Face Chameleon imported into this recipe keeps
its own layout, the codes interleaved among its text ids (`"tokenizer"`); `code_ids` below is
the one table both layouts go through.

Positions: 1-D RoPE over the whole sequence, plus a learned (row, column) embedding added to
every image-code token. Relative positions alone leave the model to infer where in the grid a
token sits by counting from <boi>; the absolute 2-D embedding gives it directly (LlamaGen uses
2-D RoPE on the grid for the same reason; Transfusion and BAGEL add 2-D position embeddings).
"""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from unimm.checkpoint import (
    WEIGHTS_FILE,
    load_tensors,
    save_tensors,
    write_directory,
)
from unimm.data.images import to_tensor, to_uint8
from unimm.data.sample import Image, Sample, Segment, Text
from unimm.data.sequence import TokenBatch, TokenSequence, build_sequence, collate
from unimm.model.attention import KVCache
from unimm.model.config import ModelConfig
from unimm.model.masks import block_causal_mask
from unimm.model.transformer import Transformer
from unimm.paradigms.autoregressive import generate, token_losses
from unimm.paradigms.rng import Rng, Seed, make_rng
from unimm.presets import RunConfig
from unimm.recipes.base import Modality, SamplingConfig, UnifiedModel, UnsupportedTask
from unimm.recipes.code_prototypes import CodePrototypes
from unimm.recipes.layout_planning import LayoutPlanning
from unimm.recipes.parts import Parts, load_parts, save_parts
from unimm.tokenizers.text import TextTokenizer
from unimm.tokenizers.vq import VQTokenizer


class ChameleonModel(LayoutPlanning, UnifiedModel):
    recipe = "chameleon"

    def __init__(self, parts: Parts):
        super().__init__()
        self.parts = parts  # a plain container: tokenizers and config are not trained here
        self.copy_source = self.uses_copy_source(parts.config)
        self.bidirectional_inputs = self.uses_bidirectional_inputs(parts.config)
        self.backbone = Transformer(self.backbone_config(parts))
        self.image_offset = parts.text.vocab_size
        self.image_tokens = parts.image.grid[0] * parts.image.grid[1]
        # (C,) vocabulary id of each image code, and its inverse (-1 off the codes); CPU tables
        # built outside any meta-device context, moved to the tokens' device on use.
        self.code_ids = self.image_code_ids(parts)
        size = max(parts.config.model.vocab_size, int(self.code_ids.max()) + 1)
        self._id_to_code = torch.full((size,), -1, device="cpu")
        self._id_to_code[self.code_ids] = torch.arange(len(self.code_ids), device="cpu")
        self.codes_after_text = parts.config.chameleon.code_ids == "after_text"
        self.pos2d = self.uses_image_pos_embed(parts)
        if self.pos2d:
            h, w = parts.image.grid
            dim = parts.config.model.dim
            self.image_row = nn.Parameter(torch.randn(h, dim) * 0.02)
            self.image_col = nn.Parameter(torch.randn(w, dim) * 0.02)
        if self.copy_source:
            self.copy_embed = nn.Embedding(parts.image.codebook_size, parts.config.model.dim)
            nn.init.zeros_(self.copy_embed.weight)  # starts as the plain model
        self.copy_gate = self.uses_copy_gate(parts.config)
        if self.copy_gate:
            self.copy_gate_proj = nn.Linear(parts.config.model.dim, 1)
            nn.init.zeros_(self.copy_gate_proj.weight)
            # g = sigmoid(-2) = 0.12 at the start: mostly the plain model, and a copy is
            # already 0.12 likely wherever the source is a good guess
            nn.init.constant_(self.copy_gate_proj.bias, -2.0)
        self.prototypes = self.uses_code_prototypes(parts.config)
        if self.prototypes:
            self.code_prototypes = CodePrototypes(
                parts.image.codebook_size, self.image_resolution // parts.image.grid[0]
            )
            dim = parts.config.model.dim
            self.proto_in = nn.Linear(self.code_prototypes.feature_dim, dim, bias=False)
            self.proto_out = nn.Linear(self.code_prototypes.feature_dim, dim, bias=False)
            nn.init.normal_(self.proto_in.weight, std=0.02)
            # Zero: the output starts as the plain head, the prototype term grows as it helps.
            nn.init.zeros_(self.proto_out.weight)

    @classmethod
    def check_config(cls, config: RunConfig) -> None:
        cls.uses_code_prototypes(config)
        cls.uses_copy_source(config)
        cls.uses_bidirectional_inputs(config)
        cls.uses_copy_gate(config)
        cls.uses_rope_2d(config)
        cls.uses_t2i_plan(config)

    @classmethod
    def uses_t2i_plan(cls, config: RunConfig) -> bool:
        """train.t2i_plan (and edit_plan), for the chameleon recipe only: generate_image_codes
        writes the layout first (janus and show-o draw through their own samplers, which do
        not, and refuse them as every other recipe does)."""
        if cls.recipe != "chameleon":
            return super().uses_t2i_plan(config)
        return config.train.t2i_plan or config.train.edit_plan

    @classmethod
    def uses_rope_2d(cls, config: RunConfig) -> bool:
        """model.rope_2d_pairs, for the chameleon recipe only (show-o's masked image tokens and
        janus's feature slots would need their own positions)."""
        on = config.model.rope_2d_pairs > 0
        if on and cls.recipe != "chameleon":
            raise ValueError(f"model.rope_2d_pairs is for the chameleon recipe, not {cls.recipe}")
        return on

    @classmethod
    def uses_code_prototypes(cls, config: RunConfig) -> bool:
        """Whether image codes get prototype-pixel features (chameleon.code_prototypes); only
        for the shared-vocabulary layout with codes after the text ids."""
        c = config.chameleon
        if c.code_prototypes and c.code_ids != "after_text":
            raise ValueError("chameleon.code_prototypes needs chameleon.code_ids='after_text'")
        return c.code_prototypes

    @classmethod
    def uses_copy_source(cls, config: RunConfig) -> bool:
        """chameleon.copy_source, for this recipe's own vocabulary layout only."""
        c = config.chameleon
        if c.copy_source and (cls.recipe != "chameleon" or c.code_ids != "after_text"):
            raise ValueError(
                "chameleon.copy_source is for the chameleon recipe with code_ids='after_text'"
            )
        return c.copy_source

    @classmethod
    def uses_copy_gate(cls, config: RunConfig) -> bool:
        """chameleon.copy_gate: a copy switch at the output, on the copy_source machinery (as
        chameleon.copy_input_noise is, checked here too)."""
        c = config.chameleon
        for name, on in (("copy_gate", c.copy_gate), ("copy_input_noise", c.copy_input_noise)):
            if on and not cls.uses_copy_source(config):
                raise ValueError(f"chameleon.{name} needs chameleon.copy_source=true")
        return c.copy_gate

    @classmethod
    def uses_bidirectional_inputs(cls, config: RunConfig) -> bool:
        """chameleon.bidirectional_inputs, for the chameleon recipe only (show-o and mmada
        attend within every image already; janus reads its inputs through another encoder)."""
        on = config.chameleon.bidirectional_inputs
        if on and cls.recipe != "chameleon":
            raise ValueError("chameleon.bidirectional_inputs is for the chameleon recipe")
        return on

    def image_markers(self) -> tuple[int, int] | None:
        """(<boi>, <eoi>) for generate() when input images are read bidirectionally."""
        if not self.bidirectional_inputs:
            return None
        return self.text_tok.boi_id, self.text_tok.eoi_id

    @classmethod
    def uses_image_pos_embed(cls, parts: Parts) -> bool:
        """Whether image slots get the learned (row, col) embedding (an imported Hugging Face
        Chameleon or Janus has none)."""
        return parts.config.chameleon.image_pos_embed

    @classmethod
    def image_code_ids(cls, parts: Parts) -> torch.Tensor:
        """(C,) the vocabulary id of each image code (chameleon.code_ids)."""
        T, C = parts.text.vocab_size, parts.image.codebook_size
        if parts.config.chameleon.code_ids == "after_text":
            return torch.arange(T, T + C, device="cpu")
        if cls.recipe != "chameleon":
            raise ValueError("chameleon.code_ids='tokenizer' is for the chameleon recipe only")
        from unimm.interop.hf_chameleon import image_code_ids

        ids = image_code_ids(parts.text.get_vocab())  # {code: id} of the IMGIMG tokens
        if sorted(ids) != list(range(C)):
            raise ValueError(
                f"chameleon.code_ids='tokenizer': the text tokenizer has {len(ids)} IMGIMG image "
                f"tokens, the image tokenizer's codebook has {C} codes"
            )
        return torch.tensor([ids[c] for c in range(C)], device="cpu")

    def codes_to_ids(self, codes: torch.Tensor) -> torch.Tensor:
        """Image codes (any shape) -> their vocabulary ids."""
        return self.code_ids.to(codes.device)[codes]

    def ids_to_codes(self, ids: torch.Tensor) -> torch.Tensor:
        """Vocabulary ids of image codes (any shape) -> the codes."""
        return self._id_to_code.to(ids.device)[ids]

    def text_ids(self) -> range | torch.Tensor:
        """The ids an answer may use: every id that is not an image code."""
        if self.codes_after_text:
            return range(0, self.image_offset)
        is_text = torch.ones(self.backbone.config.vocab_size, dtype=torch.bool, device="cpu")
        is_text[self.code_ids] = False
        return is_text.nonzero().flatten()

    @classmethod
    def backbone_config(cls, parts: Parts) -> ModelConfig:
        return parts.config.model  # vocabulary: text ids, then image codes

    # The three members below make this model a `CausalLM` for the AR sampler.

    @property
    def config(self) -> ModelConfig:
        return self.backbone.config

    def make_cache(self, batch_size: int, max_len: int | None = None) -> KVCache:
        return self.backbone.make_cache(batch_size, max_len)

    def head(self, hidden: torch.Tensor) -> torch.Tensor:
        logits = self.backbone.head(hidden)  # (..., V)
        if not self.prototypes:
            return logits
        # Each code's output row is its own vector plus a projection of its prototype pixels.
        rows = self.proto_out(self.code_prototypes.features()).to(hidden.dtype)  # (C, D)
        T = self.image_offset
        codes = logits[..., T : T + len(rows)] + hidden @ rows.T
        return torch.cat([logits[..., :T], codes, logits[..., T + len(rows) :]], dim=-1)

    def forward(
        self,
        tokens: torch.Tensor,
        positions: torch.Tensor | None = None,
        mask: torch.Tensor | None = None,
        cache: KVCache | None = None,
        return_hidden: bool = False,
    ) -> torch.Tensor:
        """The backbone with (row, col) embeddings added to image-code tokens (and the copy
        input, chameleon.copy_source; 2-D RoPE positions under model.rope_2d_pairs). (B, T)
        ids."""
        x = self.token_embeddings(tokens)
        source = None
        rope_2d = self.backbone.config.rope_2d_pairs > 0
        if self.pos2d or self.copy_source or rope_2d:
            before = self.images_seen(tokens, cache)
            index = self.image_grid_index(tokens, before)  # (B, T), -1 outside images
            if rope_2d:
                positions = self.rope_positions(positions, index, cache)
            if self.pos2d:
                is_image = index >= 0
                cell = index.clamp(min=0)
                w = self.image_col.shape[0]
                # F.embedding, not self.image_row[cell // w]: the backward of advanced
                # indexing accumulates into the 8 rows one token at a time on the CPU (16 ms
                # of a 350 ms step), the embedding backward sums them as a batch (0.5 ms)
                pos2d = F.embedding(cell // w, self.image_row) + F.embedding(
                    cell % w, self.image_col
                )  # (B, T, D)
                x = x + pos2d * is_image[..., None].to(x.dtype)
            if self.copy_source:
                source = self.source_codes(tokens, before, cache)
                x = x + self.copy_input(*source)
        if source is None or not self.copy_gate or return_hidden:
            return self._run_backbone(x, positions, mask, cache, return_hidden)
        hidden = self._run_backbone(x, positions, mask, cache, return_hidden=True)
        return self.mix_copy(self.head(hidden), hidden, *source)

    def rope_positions(
        self, positions: torch.Tensor | None, index: torch.Tensor, cache: KVCache | None
    ) -> torch.Tensor:
        """(B, T, 3) (sequence, row, column) ids for 2-D RoPE (ModelConfig.rope_2d_pairs) from
        (B, T) sequence ids (None = consecutive after the cache) and image_grid_index. An image
        code at cell (r, c) of an image whose first code sits at sequence id s turns by s + r
        and s + c on the spatial pairs; text turns by its sequence id on all three, so text
        against text is 1-D RoPE, and text after an image lies ahead of all its codes."""
        if positions is None:
            past = cache.length if cache is not None else 0
            T = index.shape[1]
            positions = torch.arange(past, past + T, device=index.device).expand_as(index)
        w = self.image_tok.grid[1]
        cell = index.clamp(min=0)
        start = positions - cell  # an image code's sequence id minus its raster index
        is_image = index >= 0
        row = torch.where(is_image, start + cell // w, positions)
        col = torch.where(is_image, start + cell % w, positions)
        return torch.stack([positions, row, col], dim=-1)

    def mix_copy(
        self, logits: torch.Tensor, hidden: torch.Tensor, codes: torch.Tensor, wanted: torch.Tensor
    ) -> torch.Tensor:
        """(B, T, V) log-probabilities of p = (1 - g) softmax(logits) + g [token = source code]
        where `wanted` (the next token is an image code with a cell in a previous image), the
        logits elsewhere; g = sigmoid(copy_gate(hidden)) (chameleon.copy_gate)."""
        gate = self.copy_gate_proj(hidden).float().squeeze(-1)  # (B, T) gate logit
        mixed = logits.float().log_softmax(-1) + F.logsigmoid(-gate)[..., None]  # log (1-g) p
        ids = self.code_ids.to(codes.device)[codes][..., None]  # (B, T, 1) vocabulary ids
        copied = torch.logaddexp(mixed.gather(-1, ids), F.logsigmoid(gate)[..., None])
        mixed = mixed.scatter(-1, ids, copied)
        return torch.where(wanted[..., None], mixed, logits.float())

    def images_seen(self, tokens: torch.Tensor, cache: KVCache | None) -> torch.Tensor:
        """(B,) image tokens each row held before this chunk (0 without a cache; the KV cache
        carries the running count), advancing the cache's count past the chunk."""
        before = torch.zeros_like(tokens[:, 0])
        if cache is not None and cache.length > 0:
            before = cache.state["image_tokens"]
        if cache is not None:
            cache.state["image_tokens"] = before + self.image_slots(tokens).sum(1)
        return before

    def copy_input(self, codes: torch.Tensor, wanted: torch.Tensor) -> torch.Tensor:
        """(B, T, D): at each position whose next token is an image code with a cell in a
        previous image (an image's <boi> and its codes but the last), the copy embedding of
        the code that image has at that next cell; zero elsewhere (chameleon.copy_source).
        codes, wanted: source_codes()."""
        out = self.copy_embed(codes)
        return out * wanted[..., None].to(out.dtype)

    def source_codes(
        self, tokens: torch.Tensor, before: torch.Tensor, cache: KVCache | None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """((B, T) codes, (B, T) bool): at each position whose next token is an image code with
        a cell in a previous image, the code that image has at that next cell. before: (B,)
        image tokens ahead of this chunk (images_seen). Advances the cache's code table, so
        call it once per chunk.

        Image tokens are counted across the sequence (and across cached chunks): the k-th image
        token overall is cell k % n of image k // n, n codes per image, so the next code's
        source is image token (k // n - 1) * n + k % n, always one already seen."""
        n = self.image_tokens
        is_image = self.image_slots(tokens)
        upto = is_image.long().cumsum(1) + before[:, None]  # image tokens so far, inclusive
        # Every image code seen so far, by its running index (across chunks via the cache).
        # Column `width` is a sink for the positions that are not image codes.
        width = int(upto.max()) if cache is None else cache.k.shape[3]
        if cache is not None and cache.length > 0:
            table = cache.state["copy_codes"].clone()
        else:
            table = torch.zeros(tokens.shape[0], width + 1, dtype=torch.long, device=tokens.device)
        index = torch.where(is_image, upto - 1, torch.full_like(upto, width))
        table.scatter_(1, index, self.ids_to_codes(tokens).clamp(min=0))
        if cache is not None:
            cache.state["copy_codes"] = table
        # The next token is image token number `upto` when this one opens an image or is an
        # image code that is not its image's last.
        opens = tokens == self.text_tok.boi_id
        inside = is_image & (upto % n != 0)
        source = upto - n  # same cell, previous image
        wanted = (opens | inside) & (source >= 0)
        return table.gather(1, source.clamp(min=0, max=width)), wanted

    def _run_backbone(self, x, positions, mask, cache, return_hidden) -> torch.Tensor:
        if not self.prototypes:  # the backbone's own head is this model's head
            return self.backbone(None, positions, mask, cache, return_hidden, embeds=x)
        hidden = self.backbone(None, positions, mask, cache, return_hidden=True, embeds=x)
        return hidden if return_hidden else self.head(hidden)

    def token_embeddings(self, tokens: torch.Tensor) -> torch.Tensor:
        """(B, T) ids -> (B, T, D): one table for text and image codes (early fusion)."""
        x = self.backbone.tok_embeddings(tokens)
        if not self.prototypes:
            return x
        feats = self.proto_in(self.code_prototypes.features())  # (C, D)
        codes = tokens - self.image_offset
        is_code = (codes >= 0) & (codes < len(feats))
        extra = feats[codes.clamp(0, len(feats) - 1)]  # (B, T, D)
        return x + extra * is_code[..., None].to(extra.dtype)

    def background_codes(self) -> list[int]:
        """Codes (0-based) that an empty canvas of the tokenizer's data encodes to (white for
        the world; VQConfig.background): what guidance leaves alone and background_weight
        weighs. None when the data has no uniform background."""
        if getattr(self, "_background", None) is None:
            config = getattr(self.image_tok, "config", None)
            colour = getattr(config, "background", (255, 255, 255))
            if colour is None:
                self._background = []
            else:
                size = self.image_resolution
                rgb = torch.tensor(colour, dtype=torch.float32, device=self.device) / 127.5 - 1
                blank = rgb.view(1, 3, 1, 1).expand(1, 3, size, size).contiguous()  # in [-1, 1]
                self._background = sorted(set(self.image_tok.encode(blank).flatten().tolist()))
        return self._background

    def background_ids(self) -> list[int]:
        return self.code_ids[self.background_codes()].tolist()

    def is_background(self, ids: torch.Tensor) -> torch.Tensor:
        """(same shape as ids) bool: ids that are background codes (background_ids)."""
        return torch.isin(ids, torch.tensor(self.background_ids(), device=ids.device))

    def image_grid_index(
        self, tokens: torch.Tensor, seen: torch.Tensor | None = None
    ) -> torch.Tensor:
        """(B, T) raster index (row * w + col) of every image token inside its image, -1 for
        other tokens. Every image has exactly h * w tokens, so the running count of image tokens
        (plus `seen`, (B,) image tokens before this chunk) modulo h * w is the index."""
        is_image = self.image_slots(tokens)  # (B, T)
        count = is_image.long().cumsum(1) - 1
        if seen is not None:
            count = count + seen[:, None]
        index = count % self.image_tokens
        return torch.where(is_image, index, torch.full_like(index, -1))

    def image_slots(self, tokens: torch.Tensor) -> torch.Tensor:
        """(B, T) bool: which positions hold an image token."""
        if self.codes_after_text:  # codes are the last ids (janus's feature slots follow them)
            return tokens >= self.image_offset
        return self.ids_to_codes(tokens) >= 0

    @property
    def image_resolution(self) -> int:
        return self.image_tok.config.resolution

    @property
    def text_tok(self) -> TextTokenizer:
        return self.parts.text

    @property
    def image_tok(self) -> VQTokenizer:
        return self.parts.image

    # ----- training -------------------------------------------------------------------------

    @torch.no_grad()
    def encode_images(self, images: list[np.ndarray], observe: bool = False) -> list[list[int]]:
        """uint8 images -> vocabulary ids of their codes (raster order); observe=True also
        feeds their patches to the code prototypes."""
        if not images:
            return []
        pixels = to_tensor(images, self.device)
        codes = self.image_tok.encode(pixels).flatten(1)  # (N, h*w)
        if observe:
            self.code_prototypes.observe(pixels, codes)
        return self.codes_to_ids(codes).tolist()

    def image_ids(self, samples: list[Sample]) -> list[list[int]]:
        """The ids filling each image's slots, images in order across the batch: its codes.
        In training, the codes' prototypes also take in these images' patches."""
        images = [s.pixels for sample in samples for s in sample.segments if isinstance(s, Image)]
        return self.encode_images(images, observe=self.prototypes and self.training)

    def build(self, samples: list[Sample], rng: random.Random | None = None) -> list[TokenSequence]:
        codes = self.image_ids(samples)
        seqs, k = [], 0
        p_drop = self.parts.config.train.cfg_dropout
        for sample in samples:
            n = sum(isinstance(s, Image) for s in sample.segments)
            image_target = any(isinstance(sample.segments[i], Image) for i in sample.targets)
            drop = rng is not None and image_target and rng.random() < p_drop
            if drop and sample.meta.get("layouts"):
                # the unconditional row loses its layouts too: generate_image_codes contrasts
                # prompt + layout with the prompt's images alone
                sample = sample.without_layouts()
            seqs.append(build_sequence(sample, self.text_tok, codes[k : k + n], drop_text=drop))
            k += n
        return seqs

    def loss(self, samples: list[Sample], generator: torch.Generator | None = None) -> dict:
        seed = int(torch.randint(0, 2**31, (1,), generator=generator))
        seqs = self.build(samples, random.Random(seed))
        batch = collate(seqs, self.text_tok.pad_id, device=self.device)
        targets, mask = batch.ids[:, 1:], batch.loss_mask[:, 1:]
        inputs = self.noisy_copy_inputs(batch, seed)
        logits = self.train_logits(inputs, targets, self.train_mask(batch))
        is_image = batch.modality[:, 1:] == 1
        weights = self.target_weights(targets, mask, is_image)
        # One cross-entropy over the target rows serves the loss and both diagnostics: each
        # softmax over the vocabulary was a few per cent of a CPU step.
        per_token = token_losses(logits, targets, mask)  # (N,), the targets in row-major order
        if per_token.numel() == 0:
            loss = logits.sum() * 0.0  # no target: 0, still differentiable
        elif weights is None:
            loss = per_token.mean()
        else:
            loss = (per_token * weights[mask]).sum()
        with torch.no_grad():
            out = {"loss": loss}
            image_rows = is_image[mask]
            for name, rows in (("loss_text", ~image_rows), ("loss_image", image_rows)):
                if rows.any():
                    out[name] = per_token.detach()[rows].mean()
            out["tokens"] = torch.tensor(float(batch.valid.sum()))
            # The loss is a mean over these; data-parallel training weights ranks by it.
            out["loss_tokens"] = mask.sum().float()
        return out

    def noisy_copy_inputs(self, batch: TokenBatch, seed: int) -> torch.Tensor:
        """The batch's inputs (ids[:, :-1]) with chameleon.copy_input_noise of the codes of
        every target image that follows another image replaced by random codes (targets stay).

        Why: teacher-forced, "the previous code equals the source's code there" is the best
        cue that the next one does too, and an edit model learns to copy from it; sampling,
        the first code it draws differently ends that cue and the rest of the image is redrawn
        (measured: 0.99 of unchanged cells right teacher-forced, 0.77 copied greedily). With
        noise in those inputs, copying has to rest on the instruction and the cell."""
        inputs = batch.ids[:, :-1]
        p = self.parts.config.chameleon.copy_input_noise
        if p == 0 or not self.training:
            return inputs
        before = torch.zeros_like(inputs[:, 0])
        _, has_source = self.source_codes(inputs, before, None)
        # an input code of a target image with a source (has_source: its next token is a
        # code with a source cell, so the last code of each image is never noised)
        noisy = has_source & self.image_slots(inputs) & batch.loss_mask[:, :-1]
        g = torch.Generator(device="cpu").manual_seed(seed)
        noisy &= (torch.rand(inputs.shape, generator=g) < p).to(inputs.device)
        codes = torch.randint(0, len(self.code_ids), inputs.shape, generator=g)
        random_ids = self.code_ids[codes].to(inputs.device)
        return torch.where(noisy, random_ids, inputs)

    def target_weights(
        self, targets: torch.Tensor, mask: torch.Tensor, is_image: torch.Tensor
    ) -> torch.Tensor | None:
        """(B, T) weight of each target token in the loss, summing to the loss's scale, per
        chameleon.loss_pooling and background_weight; None: the plain token mean."""
        c = self.parts.config.chameleon
        if c.loss_pooling == "token" and c.background_weight == 1.0 and c.text_token_weight == 1.0:
            return None
        is_bg = self.is_background(targets) & is_image
        w = mask.float().masked_fill(is_bg & mask, c.background_weight)
        if c.loss_pooling == "token":
            w = w.masked_fill(~is_image & mask, c.text_token_weight)
            return w / w.sum().clamp(min=1e-6)
        image, text = w * is_image, w * ~is_image
        return c.image_loss_weight * image / image.sum().clamp(
            min=1e-6
        ) + c.text_loss_weight * text / text.sum().clamp(min=1e-6)

    def train_mask(self, batch: TokenBatch) -> torch.Tensor | None:
        """The attention mask over the batch's inputs (ids[:, :-1]): None (causal) unless
        chameleon.bidirectional_inputs, then the images that are not targets are blocks of
        full attention. Right padding needs no mask: no real token attends to its right."""
        if not self.bidirectional_inputs:
            return None
        read = (batch.image_block > 0) & ~batch.loss_mask
        blocks = torch.where(read, batch.image_block, torch.full_like(batch.image_block, -1))
        return block_causal_mask(blocks[:, :-1])

    def train_logits(
        self, inputs: torch.Tensor, targets: torch.Tensor, mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Teacher-forced logits; one softmax over text and codes (Chameleon's shared head)."""
        return self(inputs, mask=mask)

    # ----- inference ------------------------------------------------------------------------

    def _prompt_ids(self, segments: list[Segment], modality: Modality) -> list[int]:
        """Lay the prompt out as in training and open the segment to produce."""
        images = [s.pixels for s in segments if isinstance(s, Image)]
        sample = Sample(list(segments), targets=(), task="prompt")
        ids = build_sequence(sample, self.text_tok, self.prompt_image_ids(images)).ids
        opener = self.text_tok.boi_id if modality == "image" else self.text_tok.assistant_id
        return ids + [opener]

    def prompt_image_ids(self, images: list[np.ndarray]) -> list[list[int]]:
        """The ids filling the slots of a prompt's images: their codes."""
        return self.encode_images(images)

    def check_prompts(self, prompts: list[list[Segment]], modality: Modality) -> None:
        check_prompts(prompts, self.image_resolution, self.max_prompt_images(modality))

    @torch.no_grad()
    def generate(
        self,
        prompts: list[list[Segment]],
        modality: Modality,
        sampling: SamplingConfig | None = None,
        seed: Seed = 0,
    ) -> list[Segment]:
        if modality == "image":
            if not getattr(self.image_tok, "has_decoder", True):  # e.g. a HF Chameleon's VQ
                raise UnsupportedTask(
                    f"{self.image_tok.no_decoder}; generate_image_codes(prompts) gives the codes"
                )
            grid = self.generate_image_codes(prompts, sampling, seed)
            return [Image(p) for p in to_uint8(self.image_tok.decode(grid))]
        sampling = sampling or SamplingConfig()
        ids, max_new_tokens, rng = self._start(prompts, modality, sampling, seed)
        out = generate(
            self,
            ids,
            max_new_tokens,
            allowed_ids=self.text_ids(),
            stop_ids=[self.text_tok.eos_id],
            image_markers=self.image_markers(),
            **self._decoding(sampling, rng),
        )
        eos = self.text_tok.eos_id
        return [Text(self.text_tok.decode(t for t in row if t != eos)) for row in out]

    @torch.no_grad()
    def generate_image_codes(
        self, prompts: list[list[Segment]], sampling: SamplingConfig | None = None, seed: Seed = 0
    ) -> torch.Tensor:
        """(B, h, w) image codes for each prompt: what `generate(..., "image")` decodes."""
        sampling = sampling or SamplingConfig()
        self.check_prompts(prompts, "image")  # before any layout is written
        prompts = self.with_layouts(prompts, sampling, seed)
        ids, _, rng = self._start(prompts, "image", sampling, seed)
        # The unconditional row keeps the images of the prompt and drops its text, as in
        # training's condition dropout.
        uncond = [
            self._prompt_ids([s for s in p if isinstance(s, Image)], "image") for p in prompts
        ]
        codes = generate(
            self,
            ids,
            self.image_tokens,
            cfg_scale=sampling.cfg_scale,
            uncond_prompts=uncond if sampling.cfg_scale != 1.0 else None,
            cfg_keep_ids=self.background_ids() if sampling.cfg_keep_background else None,
            allowed_ids=self.code_ids,
            image_markers=self.image_markers(),
            **self._decoding(sampling, rng),
        )
        grid = self.ids_to_codes(torch.tensor(codes, device=self.device))
        return grid.view(len(prompts), *self.image_tok.grid)

    def _start(
        self, prompts: list[list[Segment]], modality: Modality, sampling: SamplingConfig, seed: Seed
    ) -> tuple[list[list[int]], int, Rng]:
        """Checked prompt ids, the answer's length limit and the sampling rng."""
        self.check_prompts(prompts, modality)
        rng = make_rng(seed, len(prompts))
        ids = [self._prompt_ids(p, modality) for p in prompts]
        context = self.parts.config.model.max_seq_len
        room = context - max(len(x) for x in ids)  # what the longest prompt leaves
        need = self.image_tokens if modality == "image" else 1
        if room < need:
            raise ValueError(
                f"prompt too long: {context - room} tokens leave no room for the "
                f"{'image' if modality == 'image' else 'answer'} (the model takes {context})"
            )
        return ids, min(sampling.max_new_tokens, room), rng  # text: cut at the context's end

    @staticmethod
    def _decoding(sampling: SamplingConfig, rng: Rng) -> dict:
        return dict(
            temperature=sampling.temperature,
            top_k=sampling.top_k,
            top_p=sampling.top_p,
            generator=rng,
        )

    # ----- checkpoints ----------------------------------------------------------------------

    def save_pretrained(self, directory: str | Path) -> Path:
        def fill(tmp: Path) -> None:
            save_parts(self.parts, tmp, recipe=self.recipe)
            save_tensors(self.state_dict(), tmp / WEIGHTS_FILE)

        return write_directory(directory, fill)

    @classmethod
    def from_pretrained(
        cls, directory: str | Path, image_tokenizer: VQTokenizer | str | Path | None = None
    ) -> ChameleonModel:
        """A unimm chameleon checkpoint; a Hugging Face ChameleonForConditionalGeneration folder
        (or hub id), imported whole (unimm.interop.hf_chameleon_recipe); or a Hugging Face
        Llama / Qwen2 folder started as this recipe with `image_tokenizer`
        (unimm.interop.unified)."""
        from unimm.interop.hf_files import is_hf_folder

        if image_tokenizer is not None or is_hf_folder(directory):
            from unimm.interop.unified import chameleon_from_hf_source

            return chameleon_from_hf_source(directory, image_tokenizer)
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


def check_prompts(
    prompts: list[list[Segment]], resolution: int, max_images: int | None = None
) -> None:
    """Reject empty prompts, wrongly sized images and more images than the context holds
    before any work is done."""
    if not prompts:
        raise ValueError("no prompts given")
    for p in prompts:
        if not p:
            raise ValueError("empty prompt: give some text or an image")
        n = sum(isinstance(s, Image) for s in p)
        if max_images is not None and n > max_images:
            raise ValueError(
                f"too many images: the prompt holds {n}, this model's context fits {max_images}"
            )
        for s in p:
            if isinstance(s, Text) and s.role == "user" and not s.text.strip():
                raise ValueError("empty prompt: the text is blank")
            if isinstance(s, Image) and s.pixels.shape[:2] != (resolution, resolution):
                h, w = s.pixels.shape[:2]
                raise ValueError(f"image is {w}x{h}; this model takes {resolution}x{resolution}")
