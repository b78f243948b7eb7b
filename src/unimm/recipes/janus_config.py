"""Settings of the Janus recipe (RunConfig.janus); apart from the recipe so the run config can
name them without importing model code."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(kw_only=True)
class JanusConfig:
    # Width of the generation codebook embedding before its MLP aligner (Janus: LlamaGen's
    # 8-d code vectors, then an MLP to the LLM width; here a learned table of this width).
    gen_embed_dim: int = 64

    def __post_init__(self) -> None:
        if self.gen_embed_dim < 1:
            raise ValueError(f"janus.gen_embed_dim must be >= 1, got {self.gen_embed_dim}")
