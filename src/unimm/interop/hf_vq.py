"""What the Hugging Face VQ wrappers (unimm.interop.hf_janus_vq, hf_chameleon_vq) share: telling
their folders apart by model_type, the config the recipes read, encoding through transformers'
own module, and safetensors-only save / load. Subclasses set the grid and decode."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import torch
from torch import Tensor, nn

from unimm.checkpoint import read_json
from unimm.interop.hf_files import HF_CONFIG, HFImportError


def has_model_type(directory: str | Path, model_type: str) -> bool:
    path = Path(directory) / HF_CONFIG
    if not path.is_file():
        return False
    try:
        return read_json(path).get("model_type") == model_type
    except (ValueError, OSError, AttributeError):
        return False


@dataclass(frozen=True)
class HFVQConfig:
    """What the recipes read of an image tokenizer's config (derived from the HF config)."""

    resolution: int
    codebook_size: int
    embed_dim: int


class HFVQTokenizer(nn.Module):
    """A frozen transformers VQ model behind unimm's VQ image tokenizer interface."""

    model_type: ClassVar[str]  # config.json's model_type of the folder
    family: ClassVar[str]  # "Janus", "Chameleon": for messages

    def __init__(self, vq: nn.Module, side: int) -> None:
        super().__init__()
        self.vq = vq.eval().requires_grad_(False)
        c = vq.config
        self.downsample = 2 ** (len(c.channel_multiplier) - 1)
        self.grid: tuple[int, int] = (side, side)
        self.codebook_size: int = int(c.num_embeddings)
        self.config = HFVQConfig(
            resolution=side * self.downsample,
            codebook_size=self.codebook_size,
            embed_dim=int(c.embed_dim),
        )

    @classmethod
    def model_class(cls) -> type:
        """transformers' VQ module class (imported lazily: transformers is optional)."""
        raise NotImplementedError

    @torch.no_grad()
    def encode(self, images: Tensor) -> Tensor:
        """(B, 3, H, W) in [-1, 1] -> (B, h, w) codes in [0, codebook_size)."""
        r = self.config.resolution
        if images.ndim != 4 or tuple(images.shape[1:]) != (3, r, r):
            raise ValueError(f"expected images shaped (B, 3, {r}, {r}), got {tuple(images.shape)}")
        p = next(self.vq.parameters())
        codes = self.vq.encode(images.to(p.device, p.dtype)).image_tokens  # (B * h * w,)
        return codes.view(len(images), *self.grid)

    def save_pretrained(self, directory: str | Path) -> None:
        self.vq.save_pretrained(Path(directory), safe_serialization=True)

    @classmethod
    def from_pretrained(cls, directory: str | Path, dtype: torch.dtype = torch.float32):
        """A folder this class (or the transformers module's save_pretrained) wrote."""
        directory = Path(directory)
        if not has_model_type(directory, cls.model_type):
            raise HFImportError(
                f"{directory / HF_CONFIG} is not a {cls.family} VQ model "
                f"(model_type {cls.model_type!r})"
            )
        if not any(directory.glob("*.safetensors")):
            raise HFImportError(
                f"{directory} has no .safetensors weights (unimm never loads pickled weights)"
            )
        module = cls.model_class()
        vq, info = module.from_pretrained(
            directory, use_safetensors=True, dtype=dtype, output_loading_info=True
        )
        bad = list(info.get("missing_keys", [])) + list(info.get("mismatched_keys", []))
        if bad:
            raise HFImportError(
                f"{directory}: the weights do not fit its {module.__name__} config (missing or "
                f"mismatched: {[str(b) for b in bad][:3]})"
            )
        return cls(vq)
