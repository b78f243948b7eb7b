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

from pathlib import Path

from torch import Tensor, nn

from unimm.interop.hf_files import HFImportError
from unimm.interop.hf_vq import HFVQTokenizer, has_model_type

VQ_MODEL_TYPE = "chameleon_vqgan"


def is_hf_chameleon_vq(directory: str | Path) -> bool:
    return has_model_type(directory, VQ_MODEL_TYPE)


class HFChameleonVQ(HFVQTokenizer):
    """A transformers ChameleonVQVAE as a frozen unimm VQ image tokenizer (encoder only)."""

    model_type = VQ_MODEL_TYPE
    family = "Chameleon"
    has_decoder = False
    no_decoder = (
        "a Hugging Face Chameleon's VQ model has no decoder (the released weights hold only "
        "its encoder and codebook), so its image codes cannot be turned into pixels"
    )

    def __init__(self, vq: nn.Module) -> None:
        c = vq.config
        downsample = 2 ** (len(c.channel_multiplier) - 1)
        resolution = int(c.resolution)
        if resolution % downsample:
            raise HFImportError(
                f"vq_config.resolution {resolution} is not a multiple of the encoder's "
                f"downsampling {downsample}"
            )
        super().__init__(vq, side=resolution // downsample)

    @classmethod
    def model_class(cls) -> type:
        from transformers import ChameleonVQVAE

        return ChameleonVQVAE

    def decode(self, codes: Tensor) -> Tensor:
        raise NotImplementedError(self.no_decoder)
