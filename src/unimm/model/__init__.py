"""The backbone: config and presets, layers, attention with KV cache, mask policies."""

from unimm.model.attention import KVCache
from unimm.model.config import MODEL_PRESETS, ModelConfig
from unimm.model.transformer import Transformer

__all__ = ["MODEL_PRESETS", "KVCache", "ModelConfig", "Transformer"]
