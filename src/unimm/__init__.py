"""unimm: unified multimodal understanding and generation models on one shared core."""

__version__ = "0.1.0"
