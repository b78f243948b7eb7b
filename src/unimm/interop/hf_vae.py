"""A diffusers `AutoencoderKL` (Stable Diffusion / SDXL / FLUX VAEs) as unimm's continuous
image tokenizer (unimm.tokenizers.continuous.ContinuousTokenizer).

The network itself is diffusers' own module, loaded from safetensors only: writing the VAE again
would add nothing (DESIGN.md: prefer a well-kept library where one fits). What unimm adds is the
contract around it: latents normalised with the checkpoint's scaling/shift factors, a
deterministic encode (the posterior mean) unless a generator asks for a sample, outputs clamped
to [-1, 1], and clear errors for folders that are not an AutoencoderKL.
"""

from __future__ import annotations

from pathlib import Path

import torch

from unimm.checkpoint import read_json
from unimm.interop.hf_files import HFImportError

VAE_CLASS = "AutoencoderKL"


def find_vae_folder(directory: str | Path) -> Path:
    """The VAE folder itself, or the `vae/` folder of a diffusers pipeline folder."""
    directory = Path(directory)
    for candidate in (directory, directory / "vae"):
        if (candidate / "config.json").is_file():
            cfg = read_json(candidate / "config.json")
            if cfg.get("_class_name") == VAE_CLASS:
                return candidate
    raise HFImportError(
        f"{directory} holds no diffusers {VAE_CLASS} (looked for config.json with "
        f"_class_name={VAE_CLASS!r} there and in vae/)"
    )


class DiffusersVAE(torch.nn.Module):
    """Wraps a diffusers AutoencoderKL; frozen and in eval mode, as a tokenizer is."""

    def __init__(self, vae: torch.nn.Module) -> None:
        super().__init__()
        self.vae = vae.eval().requires_grad_(False)
        cfg = vae.config
        self.latent_channels = int(cfg.latent_channels)
        self.downsample = 2 ** (len(cfg.block_out_channels) - 1)
        self.scaling_factor = float(cfg.scaling_factor)
        self.shift_factor = float(getattr(cfg, "shift_factor", None) or 0.0)

    @classmethod
    def from_pretrained(
        cls, directory: str | Path, dtype: torch.dtype = torch.float32
    ) -> DiffusersVAE:
        from diffusers import AutoencoderKL

        from unimm.interop.importer import resolve_source

        folder = find_vae_folder(resolve_source(directory))
        if not any(folder.glob("*.safetensors")):
            raise HFImportError(
                f"{folder} has no .safetensors weights (unimm never loads pickled weights)"
            )
        vae = AutoencoderKL.from_pretrained(
            folder, use_safetensors=True, torch_dtype=dtype, low_cpu_mem_usage=False
        )
        return cls(vae)

    def _check(self, x: torch.Tensor, channels: int, what: str) -> None:
        if x.ndim != 4 or x.shape[1] != channels:
            raise ValueError(f"{what} must be (B, {channels}, H, W), got {tuple(x.shape)}")

    @torch.no_grad()
    def encode(
        self, images: torch.Tensor, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        self._check(images, 3, "images")
        if images.shape[-1] % self.downsample or images.shape[-2] % self.downsample:
            raise ValueError(
                f"image sides {tuple(images.shape[-2:])} must be multiples of {self.downsample}"
            )
        posterior = self.vae.encode(images.to(self.vae.dtype)).latent_dist
        z = posterior.mean if generator is None else posterior.sample(generator)
        return (z - self.shift_factor) * self.scaling_factor  # (B, C, h, w)

    @torch.no_grad()
    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        self._check(latents, self.latent_channels, "latents")
        z = latents.to(self.vae.dtype) / self.scaling_factor + self.shift_factor
        return self.vae.decode(z).sample.clamp(-1, 1)  # (B, 3, H, W)
