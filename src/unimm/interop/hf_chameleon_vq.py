"""The VQ model of a Hugging Face Chameleon (Make-A-Scene's VQGAN, arXiv 2405.09818 sec. 2.1)
as a unimm image tokenizer, so the chameleon recipe reads images in Chameleon's own codes.

`HFChameleonVQ` wraps transformers' own `ChameleonVQVAE` (not reimplemented) behind the
interface the discrete recipes use of unimm.tokenizers.vq.VQTokenizer: `grid`, `codebook_size`,
`config.resolution`, `encode` ((B, 3, H, W) in [-1, 1] -> (B, h, w) codes: the nearest codebook
entry of the encoder's latent, as transformers' `encode`), save_pretrained / from_pretrained.
Saved as the transformers folder itself (config.json with model_type "chameleon_vqgan" +
model.safetensors), which unimm.recipes.parts.load_image_tokenizer recognises; safetensors only.
Frozen: Chameleon never trains its VQ model.

**No decoder.** The released Chameleon weights (hence transformers' module) hold the encoder and
the codebook only, so `decode` raises and `has_decoder` is False: a recipe can generate codes
(ChameleonModel.generate_image_codes) but nobody can turn them into pixels.

Images are `vq_config.resolution` pixels square (512 for Chameleon: 32 x 32 codes of 16 x 16
pixels; the downsampling is 2 ** (len(channel_multiplier) - 1)). Chameleon's processor resizes
and crops to that square and scales to [-1, 1] (mean 1, std 1 after / 127.5), as unimm's
images already are.
Legend: B batch, H W image size, h w code grid.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor, nn

from unimm.checkpoint import read_json
from unimm.interop.hf_files import HF_CONFIG, HFImportError

VQ_MODEL_TYPE = "chameleon_vqgan"


def is_hf_chameleon_vq(directory: str | Path) -> bool:
    path = Path(directory) / HF_CONFIG
    if not path.is_file():
        return False
    try:
        return read_json(path).get("model_type") == VQ_MODEL_TYPE
    except (ValueError, OSError, AttributeError):
        return False


@dataclass(frozen=True)
class HFChameleonVQConfig:
    """What the recipes read of an image tokenizer's config (derived from the HF config)."""

    resolution: int
    codebook_size: int
    embed_dim: int


class HFChameleonVQ(nn.Module):
    """A transformers ChameleonVQVAE as a frozen unimm VQ image tokenizer (encoder only)."""

    has_decoder = False
    no_decoder = (
        "a Hugging Face Chameleon's VQ model has no decoder (the released weights hold only "
        "its encoder and codebook), so its image codes cannot be turned into pixels"
    )

    def __init__(self, vq: nn.Module) -> None:
        super().__init__()
        self.vq = vq.eval().requires_grad_(False)
        c = vq.config
        self.downsample = 2 ** (len(c.channel_multiplier) - 1)
        resolution = int(c.resolution)
        if resolution % self.downsample:
            raise HFImportError(
                f"vq_config.resolution {resolution} is not a multiple of the encoder's "
                f"downsampling {self.downsample}"
            )
        side = resolution // self.downsample
        self.grid: tuple[int, int] = (side, side)
        self.codebook_size: int = int(c.num_embeddings)
        self.config = HFChameleonVQConfig(
            resolution=resolution, codebook_size=self.codebook_size, embed_dim=int(c.embed_dim)
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

    def decode(self, codes: Tensor) -> Tensor:
        raise NotImplementedError(self.no_decoder)

    def save_pretrained(self, directory: str | Path) -> None:
        self.vq.save_pretrained(Path(directory), safe_serialization=True)

    @classmethod
    def from_pretrained(cls, directory: str | Path, dtype: torch.dtype = torch.float32):
        """A folder this class (or transformers' ChameleonVQVAE.save_pretrained) wrote."""
        from transformers import ChameleonVQVAE

        directory = Path(directory)
        if not is_hf_chameleon_vq(directory):
            raise HFImportError(
                f"{directory / HF_CONFIG} is not a Chameleon VQ model "
                f"(model_type {VQ_MODEL_TYPE!r})"
            )
        if not any(directory.glob("*.safetensors")):
            raise HFImportError(
                f"{directory} has no .safetensors weights (unimm never loads pickled weights)"
            )
        vq, info = ChameleonVQVAE.from_pretrained(
            directory, use_safetensors=True, dtype=dtype, output_loading_info=True
        )
        bad = list(info.get("missing_keys", [])) + list(info.get("mismatched_keys", []))
        if bad:
            raise HFImportError(
                f"{directory}: the weights do not fit its ChameleonVQVAE config (missing or "
                f"mismatched: {[str(b) for b in bad][:3]})"
            )
        return cls(vq)
