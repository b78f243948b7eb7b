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

from pathlib import Path

import torch
from torch import Tensor, nn

from unimm.interop.hf_vq import HFVQTokenizer, has_model_type

VQ_MODEL_TYPE = "janus_vqgan"


def is_hf_janus_vq(directory: str | Path) -> bool:
    return has_model_type(directory, VQ_MODEL_TYPE)


class HFJanusVQ(HFVQTokenizer):
    """A transformers JanusVQVAE as a frozen unimm VQ image tokenizer."""

    model_type = VQ_MODEL_TYPE
    family = "Janus"

    def __init__(self, vq: nn.Module) -> None:
        super().__init__(vq, side=int(vq.config.num_patches))

    @classmethod
    def model_class(cls) -> type:
        from transformers.models.janus.modeling_janus import JanusVQVAE

        return JanusVQVAE

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
