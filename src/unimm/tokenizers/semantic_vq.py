"""Text alignment for the discrete image tokenizer's codes: semantic discrete tokens.

VILA-U (arXiv 2409.04429) trains one vision tower with a reconstruction loss and a contrastive
loss on its *quantised* features, so the codes an autoregressive model reads and writes carry
text semantics and still decode to pixels; SEED (arXiv 2307.08041) quantises text-aligned
features for the same reason. Here the tokenizer stays a plain `VQTokenizer` (the chameleon
recipe consumes it unchanged). What training adds is a `CodeAligner`: a small head that pools
the FSQ latents (B, T, d) into one embedding, and a byte-level text tower, pulled together by
the CLIP loss (unimm.tokenizers.semantic.pair_loss). Its gradient reaches the encoder through
FSQ's straight-through rounding; the trainer is `train_vq(..., align_weight=w)`.

Pooling is a class token attending over the embedded codes (CLIP's ViT pooling), not a mean: a
mean over this mostly-white world is the background's code, the same for every image (see the
class-token comment in unimm.tokenizers.semantic). The head is shallow on purpose (1 block by
default): a deep head could read the caption out of codes that hold it only implicitly, and the
loss would then shape the head rather than the codes.

Legend: B batch, T = h * w code positions, d FSQ channels, D head width, E joint embedding width.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from unimm.checkpoint import load_tensors, read_json, save_tensors, write_json
from unimm.config import ConfigError, from_dict, to_dict
from unimm.tokenizers.semantic import PAD_BYTE, encode_text_bytes, pair_loss
from unimm.tokenizers.vit_blocks import Transformer
from unimm.tokenizers.vq import VQTokenizer

ALIGNER_DIR = "text_aligner"  # beside vq_config.json in a semantic tokenizer's folder
ALIGNER_CONFIG = "aligner_config.json"
ALIGNER_WEIGHTS = "aligner.safetensors"


@dataclass(kw_only=True)
class AlignConfig:
    dim: int = 128  # code head width
    layers: int = 1  # code head depth (attention pooling), shallow on purpose
    n_heads: int = 4
    text_dim: int = 128
    text_layers: int = 2
    max_text_bytes: int = 160  # captions of 8-object training scenes reach ~140 bytes
    embed_dim: int = 128
    loss: Literal["clip", "siglip"] = "clip"

    def __post_init__(self) -> None:
        for name in ("dim", "text_dim"):
            if getattr(self, name) % self.n_heads:
                raise ValueError(f"align.{name} must be divisible by n_heads ({self.n_heads})")
        if min(self.layers, self.text_layers, self.max_text_bytes, self.embed_dim) < 1:
            raise ValueError("align layers, text_layers, max_text_bytes, embed_dim must be >= 1")
        if self.loss not in ("clip", "siglip"):
            raise ValueError(f"align.loss must be 'clip' or 'siglip', got {self.loss!r}")


class CodeAligner(nn.Module):
    """Quantised latents (B, T, d) and captions -> unit embeddings in one space (training only)."""

    def __init__(self, config: AlignConfig, code_dim: int, tokens: int) -> None:
        super().__init__()
        self.config = c = config
        self.code_dim, self.tokens = code_dim, tokens
        self.code_in = nn.Linear(code_dim, c.dim)
        self.cls = nn.Parameter(torch.randn(1, 1, c.dim) * 0.02)
        self.code_pos = nn.Parameter(torch.randn(1, tokens + 1, c.dim) * 0.02)
        self.code_head = Transformer(c.dim, c.layers, c.n_heads)
        self.image_proj = nn.Linear(c.dim, c.embed_dim, bias=False)
        self.byte_embed = nn.Embedding(PAD_BYTE + 1, c.text_dim)
        self.text_pos = nn.Parameter(torch.randn(1, c.max_text_bytes, c.text_dim) * 0.02)
        self.text_tower = Transformer(c.text_dim, c.text_layers, c.n_heads)
        self.text_proj = nn.Linear(c.text_dim, c.embed_dim, bias=False)
        siglip = c.loss == "siglip"  # the papers' initialisations, as in SemanticEncoder
        self.logit_scale = nn.Parameter(torch.tensor(math.log(10.0 if siglip else 1 / 0.07)))
        self.logit_bias = nn.Parameter(torch.tensor(-10.0 if siglip else 0.0))

    def embed_codes(self, q: Tensor) -> Tensor:
        """(B, T, d) quantised latents in [-1, 1] -> (B, E) unit vectors (the class token's
        output, projected)."""
        if q.shape[1:] != (self.tokens, self.code_dim):
            raise ValueError(
                f"expected latents shaped (B, {self.tokens}, {self.code_dim}), got {tuple(q.shape)}"
            )
        x = self.code_in(q.to(self.code_in.weight.dtype))  # (B, T, D)
        x = torch.cat([self.cls.expand(len(x), -1, -1), x], dim=1) + self.code_pos
        return F.normalize(self.image_proj(self.code_head(x)[:, 0]), dim=-1)

    def embed_texts(self, texts: list[str]) -> Tensor:
        """Texts -> (B, E) unit vectors (mean over the valid bytes, projected)."""
        device = self.byte_embed.weight.device
        ids, valid = encode_text_bytes(texts, self.config.max_text_bytes)
        ids, valid = ids.to(device), valid.to(device)
        x = self.byte_embed(ids) + self.text_pos[:, : ids.shape[1]]  # (B, L, D_text)
        h = self.text_tower(x, valid[:, None, None, :])  # padding never attended
        w = valid[..., None].to(h.dtype)
        return F.normalize(self.text_proj((h * w).sum(1) / w.sum(1)), dim=-1)

    def loss(self, q: Tensor, texts: list[str]) -> Tensor:
        """The contrastive loss of a batch of matching (latents, caption) pairs."""
        img, txt = self.embed_codes(q).float(), self.embed_texts(texts).float()
        return pair_loss(img, txt, self.logit_scale, self.logit_bias, self.config.loss)

    def save_pretrained(self, directory: str | Path) -> None:
        d = Path(directory)
        d.mkdir(parents=True, exist_ok=True)
        meta = {"align": to_dict(self.config), "code_dim": self.code_dim, "tokens": self.tokens}
        write_json(d / ALIGNER_CONFIG, meta)
        save_tensors(self.state_dict(), d / ALIGNER_WEIGHTS)

    @classmethod
    def from_pretrained(cls, directory: str | Path) -> CodeAligner:
        d = Path(directory)
        meta = read_json(d / ALIGNER_CONFIG)
        try:
            config = from_dict(AlignConfig, meta["align"])
            model = cls(config, int(meta["code_dim"]), int(meta["tokens"]))
        except (ConfigError, KeyError, TypeError, ValueError) as e:
            raise ValueError(f"bad code aligner config {d / ALIGNER_CONFIG}: {e}") from None
        try:
            model.load_state_dict(load_tensors(d / ALIGNER_WEIGHTS), strict=True)
        except RuntimeError as e:
            raise ValueError(f"{d / ALIGNER_WEIGHTS} does not match its config: {e}") from None
        return model.eval()


class QuantisedEmbedder(nn.Module):
    """Images -> codes -> aligned embeddings: what `evaluate_retrieval` measures for a semantic
    tokenizer. The image side sees only the integer codes (re-expanded by FSQ), exactly what an
    autoregressive model reads."""

    def __init__(self, tokenizer: VQTokenizer, aligner: CodeAligner) -> None:
        super().__init__()
        self.tokenizer, self.aligner = tokenizer, aligner
        self.config = tokenizer.config  # evaluate_retrieval reads config.resolution
        self.eval()

    def embed_images(self, images: Tensor) -> Tensor:
        codes = self.tokenizer.encode(images)  # (B, h, w)
        return self.aligner.embed_codes(self.tokenizer.fsq.indices_to_codes(codes.flatten(1)))

    def embed_texts(self, texts: list[str]) -> Tensor:
        return self.aligner.embed_texts(texts)


__all__ = ["ALIGNER_DIR", "AlignConfig", "CodeAligner", "QuantisedEmbedder"]
