"""The VQ model of a Hugging Face Janus (LlamaGen's VQGAN, arXiv 2406.06525) as a unimm image
tokenizer, so the janus recipe generates Janus's own codes and decodes them to pixels.

`HFJanusVQ` wraps transformers' own `JanusVQVAE` (not reimplemented) behind the interface the
discrete recipes use of unimm.tokenizers.vq.VQTokenizer: `grid`, `codebook_size`,
`config.resolution`, `encode` ((B, 3, H, W) in [-1, 1] -> (B, h, w) codes: the nearest codebook
entry of the encoder's latent, as transformers' `encode`), `decode` ((B, h, w) codes -> images
clamped to [-1, 1], as transformers' `decode`: l2-normalised codebook rows, decoder),
save_pretrained / from_pretrained. Saved as the transformers folder itself (config.json with
model_type "janus_vqgan" + model.safetensors), which unimm.recipes.parts.load_image_tokenizer
recognises; safetensors only. Frozen: Janus never trains its VQ model.

Janus's images are `num_patches * 2 ** (len(channel_multiplier) - 1)` pixels square (384 for
Janus-Pro: 24 x 24 codes of 16 x 16 pixels); Janus's processor pads and resizes other images
to that square, unimm asks for it.
Legend: B batch, H W image size, h w code grid.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor, nn

from unimm.checkpoint import read_json
from unimm.interop.hf_files import HF_CONFIG, HFImportError

VQ_MODEL_TYPE = "janus_vqgan"


def is_hf_janus_vq(directory: str | Path) -> bool:
    path = Path(directory) / HF_CONFIG
    if not path.is_file():
        return False
    try:
        return read_json(path).get("model_type") == VQ_MODEL_TYPE
    except (ValueError, OSError, AttributeError):
        return False


@dataclass(frozen=True)
class HFJanusVQConfig:
    """What the recipes read of an image tokenizer's config (derived from the HF config)."""

    resolution: int
    codebook_size: int
    embed_dim: int


class HFJanusVQ(nn.Module):
    """A transformers JanusVQVAE as a frozen unimm VQ image tokenizer."""

    def __init__(self, vq: nn.Module) -> None:
        super().__init__()
        self.vq = vq.eval().requires_grad_(False)
        c = vq.config
        side = int(c.num_patches)
        self.grid: tuple[int, int] = (side, side)
        self.codebook_size: int = int(c.num_embeddings)
        self.downsample = 2 ** (len(c.channel_multiplier) - 1)
        self.config = HFJanusVQConfig(
            resolution=side * self.downsample,
            codebook_size=self.codebook_size,
            embed_dim=int(c.embed_dim),
        )

    @torch.no_grad()
    def encode(self, images: Tensor) -> Tensor:
        """(B, 3, H, W) in [-1, 1] -> (B, h, w) codes in [0, codebook_size)."""
        r = self.config.resolution
        if images.ndim != 4 or tuple(images.shape[1:]) != (3, r, r):
            raise ValueError(f"expected images shaped (B, 3, {r}, {r}), got {tuple(images.shape)}")
        p = next(self.vq.parameters())
        codes = self.vq.encode(images.to(p.device, p.dtype)).image_tokens  # (B * h * w,)
        return codes.view(len(images), *self.grid)

    @torch.no_grad()
    def decode(self, codes: Tensor) -> Tensor:
        """(B, h, w) codes -> (B, 3, H, W) images in [-1, 1] (fp32)."""
        if codes.ndim != 3 or tuple(codes.shape[1:]) != self.grid:
            raise ValueError(
                f"expected codes shaped (B, {self.grid[0]}, {self.grid[1]}), "
                f"got {tuple(codes.shape)}"
            )
        p = next(self.vq.parameters())
        return self.vq.decode(codes.flatten(1).to(p.device)).float().clamp(-1, 1)

    def save_pretrained(self, directory: str | Path) -> None:
        self.vq.save_pretrained(Path(directory), safe_serialization=True)

    @classmethod
    def from_pretrained(cls, directory: str | Path, dtype: torch.dtype = torch.float32):
        """A folder this class (or transformers' JanusVQVAE.save_pretrained) wrote."""
        from transformers.models.janus.modeling_janus import JanusVQVAE

        directory = Path(directory)
        if not is_hf_janus_vq(directory):
            raise HFImportError(
                f"{directory / HF_CONFIG} is not a Janus VQ model (model_type {VQ_MODEL_TYPE!r})"
            )
        if not any(directory.glob("*.safetensors")):
            raise HFImportError(
                f"{directory} has no .safetensors weights (unimm never loads pickled weights)"
            )
        vq, info = JanusVQVAE.from_pretrained(
            directory, use_safetensors=True, dtype=dtype, output_loading_info=True
        )
        bad = list(info.get("missing_keys", [])) + list(info.get("mismatched_keys", []))
        if bad:
            raise HFImportError(
                f"{directory}: the weights do not fit its JanusVQVAE config (missing or "
                f"mismatched: {[str(b) for b in bad][:3]})"
            )
        return cls(vq)
