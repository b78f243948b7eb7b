"""Hugging Face interoperability: import transformers / diffusers checkpoints, export backbones.

See docs/INTEROP.md. Every importer maps tensor names and shapes explicitly and raises
`HFImportError` (a ValueError, so the CLI prints one line) on anything it cannot map.
"""
