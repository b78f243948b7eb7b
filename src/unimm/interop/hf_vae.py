"""A diffusers `AutoencoderKL` (Stable Diffusion / SDXL / FLUX VAEs) as unimm's continuous
image tokenizer (unimm.tokenizers.continuous.ContinuousTokenizer).

The network itself is diffusers' own module, loaded from safetensors only: writing the VAE again
would add nothing (DESIGN.md: prefer a well-kept library where one fits). What unimm adds is the
contract around it: latents normalised with the checkpoint's scaling/shift factors, a
deterministic encode (the posterior mean) unless a generator asks for a sample, outputs clamped
to [-1, 1], and clear errors for folders that are not an AutoencoderKL.

`DiffusersVAETokens` is the same VAE seen as the continuous-token tokenizer the recipes consume
(Transfusion, JanusFlow: the interface of unimm.tokenizers.vae.VAETokenizer), so a pretrained
SD / SDXL / FLUX VAE can replace the VAE unimm trains; a checkpoint keeps it as a diffusers
folder plus `diffusers_vae.json` (the image side the recipe was built for).
Legend: B batch, C latent channels, h w latent grid, N = h * w tokens.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from unimm.checkpoint import read_json, write_json
from unimm.config import from_dict, to_dict
from unimm.interop.hf_files import HFImportError

VAE_CLASS = "AutoencoderKL"
TOKENS_CONFIG = "diffusers_vae.json"


def is_diffusers_vae(directory: str | Path) -> bool:
    """True for a folder `find_vae_folder` accepts (a VAE, or a pipeline with one in vae/)."""
    try:
        find_vae_folder(directory)
    except (HFImportError, ValueError, OSError):
        return False
    return True


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


@dataclass(kw_only=True)
class DiffusersTokensConfig:
    resolution: int = 64  # image side the recipe works at (unimm's world: 64 px)


class DiffusersVAETokens(torch.nn.Module):
    """A DiffusersVAE as recipe tokens: the (B, C, h, w) latent grid read in raster order as
    (B, N, C), like unimm's own VAETokenizer (grid, latent_dim, config.resolution, encode,
    decode, save_pretrained / from_pretrained)."""

    def __init__(self, vae: DiffusersVAE, config: DiffusersTokensConfig | None = None) -> None:
        super().__init__()
        self.vae = vae.eval().requires_grad_(False)
        self.config = config = config or DiffusersTokensConfig()
        if config.resolution % vae.downsample:
            raise ValueError(
                f"resolution {config.resolution} is not a multiple of the VAE's downsampling "
                f"factor {vae.downsample}"
            )
        side = config.resolution // vae.downsample
        self.grid = (side, side)
        self.latent_dim = vae.latent_channels

    @torch.no_grad()
    def encode(self, images: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) in [-1, 1] -> (B, N, C) normalised posterior means (fp32)."""
        r = self.config.resolution
        if images.ndim != 4 or tuple(images.shape[1:]) != (3, r, r):
            raise ValueError(f"expected images shaped (B, 3, {r}, {r}), got {tuple(images.shape)}")
        z = self.vae.encode(images)  # (B, C, h, w)
        return z.flatten(2).transpose(1, 2).float()  # (B, N, C)

    @torch.no_grad()
    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """(B, N, C) normalised latents -> (B, 3, H, W) in [-1, 1] (fp32)."""
        (h, w), c = self.grid, self.latent_dim
        if latents.ndim != 3 or tuple(latents.shape[1:]) != (h * w, c):
            raise ValueError(
                f"expected latents shaped (B, {h * w}, {c}), got {tuple(latents.shape)}"
            )
        z = latents.transpose(1, 2).reshape(latents.shape[0], c, h, w)  # (B, C, h, w)
        return self.vae.decode(z).float()

    def save_pretrained(self, directory: str | Path) -> None:
        directory = Path(directory)
        self.vae.vae.save_pretrained(directory, safe_serialization=True)
        write_json(directory / TOKENS_CONFIG, to_dict(self.config))

    @classmethod
    def from_pretrained(
        cls, directory: str | Path, resolution: int | None = None, dtype=torch.float32
    ) -> DiffusersVAETokens:
        """A folder this class saved, or any diffusers VAE / pipeline folder (resolution: the
        image side to work at; default the saved one, else 64)."""
        directory = Path(directory)
        config = DiffusersTokensConfig()
        if (directory / TOKENS_CONFIG).is_file():
            config = from_dict(DiffusersTokensConfig, read_json(directory / TOKENS_CONFIG))
        if resolution is not None:
            config = DiffusersTokensConfig(resolution=resolution)
        return cls(DiffusersVAE.from_pretrained(directory, dtype), config)
