"""Settings of the Transfusion recipe (RunConfig.transfusion); kept apart from the recipe so the
run config can name them without importing any model code."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal


@dataclass(kw_only=True)
class TransfusionConfig:
    # How latents become backbone tokens and velocities come back out (arXiv 2408.11039,
    # Sec. 3.2 and 4.4): "linear" = one linear layer per token in and out; "unet" = U-Net down
    # blocks (time-conditioned ResNet blocks, then a patch x patch strided conv) in and the
    # mirrored up blocks out. The paper finds the U-Net keeps image quality as patches grow,
    # i.e. with fewer image tokens in the sequence.
    patching: Literal["linear", "unet"] = "linear"
    # Grid cells of the image tokenizer per backbone token along each side: one token covers
    # patch x patch cells, so an image is (h / patch) * (w / patch) tokens.
    patch: int = 1
    unet_width: int = 64  # channels of the U-Net blocks
    unet_blocks: int = 1  # ResNet blocks in each of the down and the up path

    def __post_init__(self) -> None:
        if self.patching not in ("linear", "unet"):
            raise ValueError(f"transfusion.patching must be linear or unet, got {self.patching!r}")
        if self.patch < 1 or self.unet_width < 8 or self.unet_blocks < 1:
            raise ValueError(
                "transfusion.patch >= 1, transfusion.unet_width >= 8 and "
                "transfusion.unet_blocks >= 1"
            )
