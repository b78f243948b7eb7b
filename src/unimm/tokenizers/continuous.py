"""The interface of a continuous image tokenizer: images <-> latent grids (no codebook).

Continuous recipes (Transfusion, JanusFlow, BAGEL, Harmon: shared/RECIPES.md) diffuse or flow
over latents instead of predicting code ids. They only need what this protocol states, so any
autoencoder (a diffusers AutoencoderKL via unimm.interop.hf_vae, or one unimm trains) fits.

Latents are already normalised for the generative model: encode returns
(z - shift_factor) * scaling_factor, and decode undoes that before decoding (the Stable Diffusion
convention, Rombach et al. arXiv 2112.10752, section 4.3 / appendix: unit-variance latents).
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import torch


@runtime_checkable
class ContinuousTokenizer(Protocol):
    latent_channels: int
    downsample: int  # image side / latent side
    scaling_factor: float
    shift_factor: float

    def encode(
        self, images: torch.Tensor, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        """(B, 3, H, W) in [-1, 1] -> normalised latents (B, C, H / downsample, W / downsample).
        generator None = the posterior's mean (deterministic); else a sample from it."""
        ...

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """Normalised latents (B, C, h, w) -> (B, 3, h * downsample, w * downsample) in [-1, 1]."""
        ...
