"""Continuous image tokenizer: a small KL-regularised VAE (latent-diffusion autoencoder,
arXiv 2112.10752) with the discrete tokenizer's ViT shape.

The encoder is the VQ tokenizer's (patch embedding + transformer over the 8x8 grid of 8x8-px
patches), ending in a Gaussian posterior N(mu, sigma^2) of `latent_channels` per token instead
of FSQ; the decoder is the VQ tokenizer's transformer + conv pixel head. A small KL weight keeps
the latent space smooth (so that flow-generated latents decode to plausible images) without
blurring reconstructions. `encode` returns the posterior mean (deterministic), normalised by a
shift and scale measured on world images after training (SD's "scale factor"): flow matching
starts from N(0, I), so latents should have about unit variance.

Same interface as `PixelPatches`: grid, latent_dim, encode(images) -> (B, N, d),
decode(latents) -> images, save_pretrained / from_pretrained.
Legend: B batch, p patch, h w grid, N = h * w, D width, c = latent_channels.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

import torch
from torch import nn

from unimm.checkpoint import load_tensors, read_json, save_tensors, write_json
from unimm.config import ConfigError, from_dict, to_dict
from unimm.tokenizers.pixel_patches import patchify, unpatchify
from unimm.tokenizers.vit_blocks import Transformer
from unimm.tokenizers.vq import _ConvHead

VAE_CONFIG = "vae_config.json"
VAE_WEIGHTS = "vae.safetensors"


@dataclass(kw_only=True)
class VAEConfig:
    resolution: int = 64
    patch: int = 8
    dim: int = 128
    enc_layers: int = 2
    dec_layers: int = 3
    n_heads: int = 4
    latent_channels: int = 4
    head_hidden: int = 64  # conv pixel head at twice the grid resolution (as the VQ's)
    kl_weight: float = 1e-4
    shift: float = 0.0  # latent normalisation, measured on world images by `fit`
    scale: float = 1.0

    def __post_init__(self) -> None:
        if self.resolution % self.patch or self.patch % 2:
            raise ValueError(
                f"vae.resolution ({self.resolution}) must be a multiple of an even "
                f"vae.patch ({self.patch})"
            )
        for name in ("dim", "enc_layers", "dec_layers", "n_heads", "latent_channels"):
            if getattr(self, name) <= 0:
                raise ValueError(f"vae.{name} must be positive")
        if self.dim % self.n_heads:
            raise ValueError(f"vae.dim ({self.dim}) must be divisible by n_heads ({self.n_heads})")
        if self.scale <= 0 or self.kl_weight < 0:
            raise ValueError("vae.scale must be > 0 and vae.kl_weight >= 0")


VAE_PRESETS = {
    "tiny": lambda: VAEConfig(dim=32, enc_layers=1, dec_layers=1, n_heads=2, head_hidden=16),
    "small": VAEConfig,
}


class VAETokenizer(nn.Module):
    kind = "vae"

    def __init__(self, config: VAEConfig) -> None:
        super().__init__()
        self.config = c = config
        n = c.resolution // c.patch
        self.grid: tuple[int, int] = (n, n)
        self.latent_dim = c.latent_channels
        patch_dim = 3 * c.patch**2
        self.enc_in = nn.Linear(patch_dim, c.dim)
        self.enc_pos = nn.Parameter(torch.randn(1, n * n, c.dim) * 0.02)
        self.encoder = Transformer(c.dim, c.enc_layers, c.n_heads)
        self.enc_out = nn.Linear(c.dim, 2 * c.latent_channels)  # mean and log-variance
        self.dec_in = nn.Linear(c.latent_channels, c.dim)
        self.dec_pos = nn.Parameter(torch.randn(1, n * n, c.dim) * 0.02)
        self.decoder = Transformer(c.dim, c.dec_layers, c.n_heads)
        self.dec_head = _ConvHead(c.dim, c.head_hidden, n, 1)
        self.dec_out = nn.Linear(self.dec_head.out_channels, patch_dim // 4)
        # As the VQ decoder: start at a flat white image, residual branches near the identity.
        nn.init.zeros_(self.dec_out.weight)
        nn.init.constant_(self.dec_out.bias, 1.0)
        for m in (*self.encoder.blocks, *self.decoder.blocks):
            nn.init.zeros_(m.proj.weight)
            nn.init.zeros_(m.fc2.weight)

    def _check(self, images: torch.Tensor) -> None:
        r = self.config.resolution
        if images.ndim != 4 or tuple(images.shape[1:]) != (3, r, r):
            raise ValueError(f"expected images shaped (B, 3, {r}, {r}), got {tuple(images.shape)}")

    def posterior(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, 3, H, W) -> mean, log-variance, each (B, N, c), unnormalised."""
        self._check(images)
        x = self.enc_in(patchify(images, self.config.patch)) + self.enc_pos  # (B, N, D)
        mean, logvar = self.enc_out(self.encoder(x)).chunk(2, dim=-1)
        return mean, logvar.clamp(-30.0, 20.0)

    def decode_raw(self, z: torch.Tensor) -> torch.Tensor:
        """(B, N, c) unnormalised latents -> (B, 3, H, W), unclamped."""
        x = self.dec_in(z.to(self.dec_in.weight.dtype)) + self.dec_pos  # (B, N, D)
        pixels = self.dec_out(self.dec_head(self.decoder(x)))  # (B, 4N, p*p*3/4)
        h = self.grid[0] * 2
        return unpatchify(pixels, self.config.patch // 2, h, h, 3)

    def forward(
        self, images: torch.Tensor, generator: torch.Generator | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Training pass: (reconstruction from a posterior sample, KL per latent element)."""
        mean, logvar = self.posterior(images)
        eps = torch.randn(mean.shape, generator=generator).to(mean)
        z = mean + torch.exp(0.5 * logvar) * eps
        kl = 0.5 * (mean.float().pow(2) + logvar.float().exp() - 1.0 - logvar.float()).mean()
        return self.decode_raw(z), kl

    @torch.no_grad()
    def encode(self, images: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) in [-1, 1] -> (B, N, c) normalised posterior means."""
        mean, _ = self.posterior(images.float())
        return (mean.float() - self.config.shift) / self.config.scale

    @torch.no_grad()
    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """(B, N, c) normalised latents -> (B, 3, H, W) in [-1, 1]."""
        n = self.grid[0] * self.grid[1]
        if latents.ndim != 3 or tuple(latents.shape[1:]) != (n, self.latent_dim):
            raise ValueError(
                f"expected latents shaped (B, {n}, {self.latent_dim}), got {tuple(latents.shape)}"
            )
        z = latents.float() * self.config.scale + self.config.shift
        return self.decode_raw(z).float().clamp(-1.0, 1.0)

    @torch.no_grad()
    def fit(self, images: torch.Tensor) -> VAETokenizer:
        """Set shift/scale so the posterior means of `images` have zero mean and unit variance."""
        mean, _ = self.posterior(images.float())
        self.config = replace(
            self.config, shift=float(mean.mean()), scale=float(mean.std().clamp(min=1e-6))
        )
        return self

    def save_pretrained(self, directory: str | Path) -> None:
        d = Path(directory)
        d.mkdir(parents=True, exist_ok=True)
        write_json(d / VAE_CONFIG, to_dict(self.config))
        save_tensors(self.state_dict(), d / VAE_WEIGHTS)

    @classmethod
    def from_pretrained(cls, directory: str | Path) -> VAETokenizer:
        d = Path(directory)
        try:
            config = from_dict(VAEConfig, read_json(d / VAE_CONFIG))
        except (ConfigError, TypeError) as e:
            raise ValueError(f"bad VAE config {d / VAE_CONFIG}: {e}") from None
        model = cls(config)
        missing, unexpected = model.load_state_dict(load_tensors(d / VAE_WEIGHTS), strict=False)
        if missing or unexpected:
            raise ValueError(
                f"{d / VAE_WEIGHTS} does not match its config: {missing[:3]} {unexpected[:3]}"
            )
        return model.eval()
