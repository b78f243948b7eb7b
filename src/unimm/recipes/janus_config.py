"""Settings of the Janus recipe (RunConfig.janus); apart from the recipe so the run config can
name them without importing model code."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(kw_only=True)
class JanusConfig:
    # Width of the generation codebook embedding before its MLP aligner (Janus: LlamaGen's
    # 8-d code vectors, then an MLP to the LLM width; here a learned table of this width).
    gen_embed_dim: int = 64
    # Linear layers of the understanding and generation aligners (GELU between them): Janus's
    # `depth` (vision_config) and `num_hidden_layers` (vq_config), 2 in every release.
    und_aligner_depth: int = 2
    gen_aligner_depth: int = 2
    # The learned (row, col) embedding that chameleon adds to image slots. Janus has none, so a
    # Hugging Face Janus import turns it off.
    image_pos_embed: bool = True

    def __post_init__(self) -> None:
        if self.gen_embed_dim < 1:
            raise ValueError(f"janus.gen_embed_dim must be >= 1, got {self.gen_embed_dim}")
        for name in ("und_aligner_depth", "gen_aligner_depth"):
            if getattr(self, name) < 1:
                raise ValueError(f"janus.{name} must be >= 1, got {getattr(self, name)}")
