"""A semantic image encoder trained contrastively on the world's image-caption pairs.

The anchors' understanding encoders are SigLIP / CLIP towers pretrained on web image-text pairs
(Janus, Janus-Pro, BAGEL). No weights can be downloaded here, so this is the same kind of model,
small, trained on the scene world (unimm.train.semantic_trainer): a ViT over 8x8-px patches
(the same grid as the image tokenizers, so its patch features fill image slots one for one) and
a byte-level text transformer, pulled together by the CLIP loss (symmetric InfoNCE, arXiv
2103.00020) or the SigLIP loss (pairwise sigmoid, arXiv 2303.15343).

What recipes use is `features(images) -> (B, N, dim)`: the patch features of the last block, the
role SigLIP's penultimate-layer features play in Janus. The pooled, normalised embeddings
(`embed_images`, `embed_texts`) exist for the contrastive loss and zero-shot retrieval.
Legend: B batch, N = h * w patches, L text bytes, D tower width, E joint embedding width.
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
from unimm.tokenizers.pixel_patches import patchify
from unimm.tokenizers.vit_blocks import Transformer

SEMANTIC_CONFIG = "semantic_config.json"
SEMANTIC_WEIGHTS = "semantic.safetensors"
PAD_BYTE = 256  # text ids are UTF-8 bytes 0..255, then padding


@dataclass(kw_only=True)
class SemanticConfig:
    resolution: int = 64
    patch: int = 8
    dim: int = 128  # image tower width (the feature size recipes see)
    layers: int = 4
    n_heads: int = 4
    text_dim: int = 128
    text_layers: int = 2
    max_text_bytes: int = 96  # captions of the world are under ~80 bytes; longer ones are cut
    embed_dim: int = 128
    loss: Literal["clip", "siglip"] = "clip"
    # Input normalisation, (x - mean) / std on [-1, 1] pixels, as CLIP normalises by its data's
    # statistics. The world is mostly white (mean ~0.8, std ~0.5, unimm.tokenizers.pixel_patches),
    # so this puts the background near 0 and objects far from it.
    pixel_mean: float = 0.8
    pixel_std: float = 0.5

    def __post_init__(self) -> None:
        if self.patch <= 0 or self.resolution % self.patch:
            raise ValueError(
                f"semantic.resolution ({self.resolution}) must be a multiple of "
                f"semantic.patch ({self.patch})"
            )
        for name in ("dim", "text_dim"):
            if getattr(self, name) % self.n_heads:
                raise ValueError(f"semantic.{name} must be divisible by n_heads ({self.n_heads})")
        if min(self.layers, self.text_layers, self.max_text_bytes, self.embed_dim) < 1:
            raise ValueError("semantic layers, text_layers, max_text_bytes, embed_dim must be >= 1")
        if self.pixel_std <= 0:
            raise ValueError(f"semantic.pixel_std must be > 0, got {self.pixel_std}")
        if self.loss not in ("clip", "siglip"):
            raise ValueError(f"semantic.loss must be 'clip' or 'siglip', got {self.loss!r}")

    @property
    def grid(self) -> tuple[int, int]:
        side = self.resolution // self.patch
        return side, side


def encode_text_bytes(texts: list[str], max_bytes: int) -> tuple[Tensor, Tensor]:
    """Texts -> ((B, L) byte ids padded with PAD_BYTE, (B, L) bool valid); L = longest, cut."""
    rows = [list(t.encode("utf-8"))[:max_bytes] or [ord(" ")] for t in texts]
    L = max(len(r) for r in rows)
    ids = torch.full((len(rows), L), PAD_BYTE, dtype=torch.long)
    for i, r in enumerate(rows):
        ids[i, : len(r)] = torch.tensor(r, dtype=torch.long)
    return ids, ids != PAD_BYTE


def pair_loss(
    img: Tensor, txt: Tensor, logit_scale: Tensor, logit_bias: Tensor, kind: str = "clip"
) -> Tensor:
    """CLIP's symmetric InfoNCE or SigLIP's pairwise sigmoid over (B, E) unit vectors whose
    row i of `img` matches row i of `txt`."""
    logits = img @ txt.T * logit_scale.clamp(max=math.log(100.0)).exp()  # (B, B)
    if kind == "siglip":
        labels = 2 * torch.eye(len(txt), device=logits.device) - 1  # +1 pairs, -1 others
        return -F.logsigmoid(labels * (logits + logit_bias)).sum(1).mean()
    target = torch.arange(len(txt), device=logits.device)
    return 0.5 * (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target))


class SemanticEncoder(nn.Module):
    def __init__(self, config: SemanticConfig) -> None:
        super().__init__()
        self.config = c = config
        n = c.grid[0] * c.grid[1]
        self.patch_embed = nn.Linear(3 * c.patch**2, c.dim)
        # A class token pools the image (CLIP's ViT): a mean over patches is dominated by the
        # world's white background, and every image then embeds alike (measured: cosine > 0.99
        # between all pairs, and the CLIP loss stuck at log B).
        self.cls = nn.Parameter(torch.randn(1, 1, c.dim) * 0.02)
        self.image_pos = nn.Parameter(torch.randn(1, n + 1, c.dim) * 0.02)
        self.image_tower = Transformer(c.dim, c.layers, c.n_heads)
        self.image_proj = nn.Linear(c.dim, c.embed_dim, bias=False)
        self.byte_embed = nn.Embedding(PAD_BYTE + 1, c.text_dim)
        self.text_pos = nn.Parameter(torch.randn(1, c.max_text_bytes, c.text_dim) * 0.02)
        self.text_tower = Transformer(c.text_dim, c.text_layers, c.n_heads)
        self.text_proj = nn.Linear(c.text_dim, c.embed_dim, bias=False)
        # CLIP: logits = exp(scale) * cos, scale starts at log(1 / 0.07). SigLIP: sigmoid of
        # exp(scale) * cos + bias, starting at log 10 and -10 (both papers' initialisations).
        siglip = c.loss == "siglip"
        self.logit_scale = nn.Parameter(torch.tensor(math.log(10.0 if siglip else 1 / 0.07)))
        self.logit_bias = nn.Parameter(torch.tensor(-10.0 if siglip else 0.0))

    @property
    def grid(self) -> tuple[int, int]:
        return self.config.grid

    @property
    def feature_dim(self) -> int:
        return self.config.dim

    def _image_tower(self, images: Tensor) -> Tensor:
        """(B, 3, H, W) in [-1, 1] -> (B, 1 + N, dim): the class token, then the patches."""
        c = self.config
        if images.shape[-2:] != (c.resolution, c.resolution):
            raise ValueError(
                f"images are {tuple(images.shape[-2:])}; the semantic encoder takes "
                f"{c.resolution}x{c.resolution}"
            )
        x = self.patch_embed(patchify((images - c.pixel_mean) / c.pixel_std, c.patch))
        x = torch.cat([self.cls.expand(len(x), -1, -1), x], dim=1) + self.image_pos
        return self.image_tower(x)

    def feature_parameters(self) -> list[nn.Parameter]:
        """What `features` passes through: the image tower without its projection; the text
        tower and the projections only serve the contrastive training."""
        mods = (self.patch_embed, self.image_tower)
        return [self.cls, self.image_pos] + [p for m in mods for p in m.parameters()]

    def features(self, images: Tensor) -> Tensor:
        """(B, 3, H, W) in [-1, 1] -> (B, N, dim) patch features in raster order."""
        return self._image_tower(images)[:, 1:]

    def embed_images(self, images: Tensor) -> Tensor:
        """(B, 3, H, W) -> (B, E) unit vectors (the class token's output, projected)."""
        return F.normalize(self.image_proj(self._image_tower(images)[:, 0]), dim=-1)

    def embed_texts(self, texts: list[str]) -> Tensor:
        """Texts -> (B, E) unit vectors (mean over the valid bytes, projected)."""
        device = self.byte_embed.weight.device
        ids, valid = encode_text_bytes(texts, self.config.max_text_bytes)
        ids, valid = ids.to(device), valid.to(device)
        x = self.byte_embed(ids) + self.text_pos[:, : ids.shape[1]]
        h = self.text_tower(x, valid[:, None, None, :])  # padding never attended
        w = valid[..., None].to(h.dtype)
        return F.normalize(self.text_proj((h * w).sum(1) / w.sum(1)), dim=-1)

    def contrastive_loss(self, images: Tensor, texts: list[str]) -> Tensor:
        """The configured loss over a batch of matching (image, caption) pairs."""
        img, txt = self.embed_images(images), self.embed_texts(texts)
        return pair_loss(img, txt, self.logit_scale, self.logit_bias, self.config.loss)

    # ----- checkpoints ----------------------------------------------------------------------

    def save_pretrained(self, directory: str | Path) -> None:
        d = Path(directory)
        d.mkdir(parents=True, exist_ok=True)
        write_json(d / SEMANTIC_CONFIG, to_dict(self.config))
        save_tensors(self.state_dict(), d / SEMANTIC_WEIGHTS)

    @classmethod
    def from_pretrained(cls, directory: str | Path) -> SemanticEncoder:
        d = Path(directory)
        try:
            config = from_dict(SemanticConfig, read_json(d / SEMANTIC_CONFIG))
        except (ConfigError, TypeError) as e:
            raise ValueError(f"bad semantic encoder config {d / SEMANTIC_CONFIG}: {e}") from None
        model = cls(config)
        state = load_tensors(d / SEMANTIC_WEIGHTS)
        missing, unexpected = model.load_state_dict(state, strict=False)
        if missing or unexpected:
            raise ValueError(
                f"{d / SEMANTIC_WEIGHTS} does not match its config: {missing[:3]} {unexpected[:3]}"
            )
        return model.eval()
