"""Settings of the JanusFlow recipe (RunConfig.janusflow); kept apart from the recipe so the run
config can name them without importing any model code."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal


@dataclass(kw_only=True)
class JanusFlowConfig:
    # RECIPES.md: JanusFlow's LLM attends causally (+ padding); "bidirectional" gives image
    # tokens Transfusion's full attention inside their image instead.
    image_attention: Literal["causal", "bidirectional"] = "causal"
    und_dim: int = 128  # width of the understanding encoder (SigLIP's role here)
    und_layers: int = 2
    gen_blocks: int = 1  # ConvNeXt blocks in each of the generation encoder and decoder
    # Representation alignment (REPA, arXiv 2410.06940; JanusFlow Sec. 3): cosine loss between
    # backbone features of noisy generation tokens at layer `repa_layer` (through a small MLP)
    # and the understanding encoder's features of the clean image (no gradient). 0 = off.
    repa_weight: float = 0.0
    repa_layer: int = 2

    def __post_init__(self) -> None:
        if self.image_attention not in ("causal", "bidirectional"):
            raise ValueError(
                f"janusflow.image_attention must be causal or bidirectional, got "
                f"{self.image_attention!r}"
            )
        if self.und_dim < 8 or self.und_layers < 1 or self.gen_blocks < 1:
            raise ValueError("janusflow.und_dim >= 8, und_layers >= 1 and gen_blocks >= 1")
        if self.repa_weight < 0 or self.repa_layer < 0:
            raise ValueError("janusflow.repa_weight and janusflow.repa_layer must be >= 0")
