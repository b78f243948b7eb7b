"""Settings of the MetaQuery recipe (RunConfig.metaquery); apart from the recipe so the run config
can name them without importing model code."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(kw_only=True)
class MetaQueryConfig:
    # Learnable query tokens appended after the generation prompt's <boi>. MetaQuery (arXiv
    # 2504.06256, Sec. 5) finds text-to-image quality saturating around 64 queries.
    num_queries: int = 64
    # The image decoder: a small DiT over the latent grid with the (connected) query features
    # as a prefix of its bidirectional self-attention, adaLN on time + pooled condition.
    decoder_dim: int = 128
    decoder_layers: int = 4
    decoder_heads: int = 4
    # MetaQuery's recipe: the understanding model (backbone, its embeddings and head, the image
    # adaptor) stays frozen; only queries, connector and decoder learn. Understanding scores of
    # such a run are then the frozen model's, not something this run learned.
    freeze_llm: bool = False
    # A trained unimm checkpoint (or run directory) to start the understanding model from: a
    # `transfusion` or `metaquery` run of the same model config. Its text and image tokenizers
    # are reused by `unimm train`.
    init_llm: str | None = None

    def __post_init__(self) -> None:
        for name in ("num_queries", "decoder_dim", "decoder_layers", "decoder_heads"):
            if getattr(self, name) < 1:
                raise ValueError(f"metaquery.{name} must be >= 1, got {getattr(self, name)}")
        if self.decoder_dim % self.decoder_heads:
            raise ValueError(
                f"metaquery.decoder_dim ({self.decoder_dim}) must be divisible by "
                f"metaquery.decoder_heads ({self.decoder_heads})"
            )
