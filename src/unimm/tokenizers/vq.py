"""Discrete image tokenizer: ViT patch encoder -> FSQ -> ViT decoder (ViT-VQGAN, arXiv 2110.04627,
with the learned codebook replaced by FSQ, arXiv 2309.15505).

Why this shape: on a 2-core CPU, convolutional autoencoders were slow and per-patch MLPs too
blocky (shared/MEASURED.md). Patch embedding plus a few transformer layers over the 8x8 grid of
patch tokens is almost all matmul (fast in bf16) and still lets each token see the whole image.

Legend: B batch, H W image size, p patch size, h w token grid (H/p, W/p), T = h*w, D width,
d = number of FSQ channels.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from unimm.tokenizers.fsq import FSQ
from unimm.tokenizers.vit_blocks import Transformer

CONFIG_NAME = "vq_config.json"
WEIGHTS_NAME = "vq.safetensors"


@dataclass(kw_only=True)
class VQConfig:
    resolution: int = 64
    patch: int = 8
    dim: int = 256
    enc_layers: int = 4
    dec_layers: int = 4
    n_heads: int = 4
    mlp_ratio: float = 4.0
    fsq_levels: tuple[int, ...] = (8, 8, 8)
    # How a decoder token becomes pixels. "linear": one linear layer to its p*p*3 pixels (mixes
    # a fixed set of `dim` basis patches, which smears edges at arbitrary positions). "mlp": a
    # per-patch MLP of width head_hidden. "conv": each token unfolds into 2x2 sub-tokens of
    # head_hidden channels at twice the grid resolution, two 3x3 convolutions there give
    # sub-patch detail and continuity across patch borders, and a 1x1 layer emits (p/2)^2*3
    # pixels per position. Convolutions run only at grid*2 (16x16 for 64 px), where they are cheap.
    head: str = "linear"
    head_hidden: int = 0
    head_stages: int = 1  # "conv" only: number of 2x upsamplings (channels halve at each)
    # The colour of an empty canvas in the data this tokenizer learned (RGB 0-255): what the
    # codes of "nothing here" look like, for the loss's background weight and for guidance
    # that leaves background alone. The world's is white; a tokenizer trained on user data
    # takes the data's uniform border colour (unimm.data.images.uniform_background), None
    # when the data has none.
    background: tuple[int, int, int] | None = (255, 255, 255)

    def __post_init__(self) -> None:
        self.fsq_levels = tuple(int(v) for v in self.fsq_levels)
        if self.background is not None:
            bg = tuple(self.background)
            if len(bg) != 3 or not all(isinstance(v, int) and 0 <= v <= 255 for v in bg):
                raise ValueError(f"background must be 3 integers 0-255 or None, got {bg}")
            self.background = bg  # type: ignore[assignment]
        if self.resolution % self.patch:
            raise ValueError(
                f"resolution ({self.resolution}) must be a multiple of patch ({self.patch})"
            )
        if self.head not in ("linear", "mlp", "conv"):
            raise ValueError(f"head must be 'linear', 'mlp' or 'conv', got {self.head!r}")
        if self.head != "linear" and self.head_hidden <= 0:
            raise ValueError(f"head {self.head!r} needs head_hidden > 0")
        if self.head == "conv" and self.patch % (2**self.head_stages):
            raise ValueError(
                f"head 'conv' with {self.head_stages} stages needs patch divisible by "
                f"{2**self.head_stages}, got {self.patch}"
            )
        if self.dim % self.n_heads:
            raise ValueError(f"dim ({self.dim}) must be divisible by n_heads ({self.n_heads})")

    @property
    def codebook_size(self) -> int:
        return math.prod(self.fsq_levels)


def _tiny() -> VQConfig:
    """For tests: trains in seconds, reconstructs nothing well."""
    return VQConfig(
        dim=32,
        enc_layers=1,
        dec_layers=1,
        n_heads=2,
        fsq_levels=(4, 4, 4),
        head="conv",
        head_hidden=16,
        head_stages=1,
    )


def _small() -> VQConfig:
    """The quickstart tokenizer (docs/LOG.md, "Image tokenizer"): 1.1M parameters, 512 codes."""
    return VQConfig(
        dim=128,
        enc_layers=2,
        dec_layers=3,
        n_heads=4,
        fsq_levels=(8, 8, 8),
        head="conv",
        head_hidden=64,
        head_stages=1,
    )


def _small16() -> VQConfig:
    """The small tokenizer on 4x4-px patches: a 16x16 grid of 256 codes per image. It keeps the
    detector's verdict on every scene where 8x8 codes keep about 9 in 10 (docs/LOG.md, "16x16
    codes"), at 4x the tokens per image for the model that reads and writes them."""
    return replace(_small(), patch=4)


VQ_PRESETS = {"tiny": _tiny, "small": _small, "small16": _small16}


class VQTokenizer(nn.Module):
    """Images (B, 3, H, W) in [-1, 1] <-> integer codes (B, h, w) in [0, codebook_size)."""

    def __init__(self, config: VQConfig) -> None:
        super().__init__()
        self.config = config
        c = config
        n = c.resolution // c.patch
        self.grid: tuple[int, int] = (n, n)
        self.codebook_size: int = c.codebook_size
        patch_dim = 3 * c.patch * c.patch
        self.fsq = FSQ(c.fsq_levels)
        self.enc_in = nn.Linear(patch_dim, c.dim)
        self.enc_pos = nn.Parameter(torch.randn(1, n * n, c.dim) * 0.02)
        self.encoder = Transformer(c.dim, c.enc_layers, c.n_heads, c.mlp_ratio)
        self.enc_out = nn.Linear(c.dim, self.fsq.dim)
        self.dec_in = nn.Linear(self.fsq.dim, c.dim)
        self.dec_pos = nn.Parameter(torch.randn(1, n * n, c.dim) * 0.02)
        self.decoder = Transformer(c.dim, c.dec_layers, c.n_heads, c.mlp_ratio)
        if c.head == "mlp":
            self.dec_head = nn.Sequential(nn.Linear(c.dim, c.head_hidden), nn.GELU())
            self.dec_out = nn.Linear(c.head_hidden, patch_dim)
        elif c.head == "conv":
            self.dec_head = _ConvHead(c.dim, c.head_hidden, n, c.head_stages)
            self.dec_out = nn.Linear(self.dec_head.out_channels, patch_dim // 4**c.head_stages)
        else:
            self.dec_head = nn.Identity()
            self.dec_out = nn.Linear(c.dim, patch_dim)
        self._init_weights()

    def _init_weights(self) -> None:
        # Start the decoder at a flat white image (the world's background) instead of noise of
        # unit variance: the first hundred steps then go to objects, not to undoing the init.
        nn.init.zeros_(self.dec_out.weight)
        nn.init.constant_(self.dec_out.bias, 1.0)
        # Residual branches start small (GPT-2 style), so each block begins near the identity.
        for m in (*self.encoder.blocks, *self.decoder.blocks):
            nn.init.zeros_(m.proj.weight)
            nn.init.zeros_(m.fc2.weight)

    # -- pixels <-> patch tokens ---------------------------------------------------------------
    def _patchify(self, x: torch.Tensor) -> torch.Tensor:
        B, C, H, W = x.shape
        p, (h, w) = self.config.patch, self.grid
        x = x.reshape(B, C, h, p, w, p).permute(0, 2, 4, 3, 5, 1)  # (B, h, w, p, p, C)
        return x.reshape(B, h * w, p * p * C)  # (B, T, p*p*3)

    def _unpatchify(self, t: torch.Tensor, p: int | None = None) -> torch.Tensor:
        B = t.shape[0]
        p = p or self.config.patch
        h = w = self.config.resolution // p
        x = t.reshape(B, h, w, p, p, 3).permute(0, 5, 1, 3, 2, 4)  # (B, 3, h, p, w, p)
        return x.reshape(B, 3, h * p, w * p)

    def _check_images(self, images: torch.Tensor) -> None:
        r = self.config.resolution
        if images.ndim != 4 or images.shape[1] != 3 or images.shape[2:] != (r, r):
            raise ValueError(f"expected images shaped (B, 3, {r}, {r}), got {tuple(images.shape)}")

    # -- network halves ------------------------------------------------------------------------
    def _encode_latent(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        self._check_images(images)
        x = self.enc_in(self._patchify(images)) + self.enc_pos  # (B, T, D)
        z = self.enc_out(self.encoder(x))  # (B, T, d)
        return self.fsq(z)  # (B, T, d) in [-1, 1], (B, T)

    def _decode_latent(self, q: torch.Tensor) -> torch.Tensor:
        x = self.dec_in(q.to(self.dec_in.weight.dtype)) + self.dec_pos  # (B, T, D)
        pixels = self.dec_out(self.dec_head(self.decoder(x)))  # (B, T or 4T, p*p*3 or /4)
        if self.config.head == "conv":
            return self._unpatchify(pixels, self.config.patch // 2**self.config.head_stages)
        return self._unpatchify(pixels)  # (B, 3, H, W)

    # -- public API ----------------------------------------------------------------------------
    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, dict]:
        """Training pass: (reconstruction, unclamped; codes (B, h, w); aux)."""
        q, idx = self._encode_latent(images)
        recon = self._decode_latent(q)
        return recon, idx.view(-1, *self.grid), {"latent": q}

    @torch.no_grad()
    def encode(self, images: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) float in [-1, 1] -> (B, h, w) long codes."""
        _, idx = self._encode_latent(images.float())
        return idx.view(-1, *self.grid)

    @torch.no_grad()
    def decode(self, codes: torch.Tensor) -> torch.Tensor:
        """(B, h, w) long codes -> (B, 3, H, W) float in [-1, 1]."""
        if codes.ndim != 3 or tuple(codes.shape[1:]) != self.grid:
            raise ValueError(
                f"expected codes shaped (B, {self.grid[0]}, {self.grid[1]}), "
                f"got {tuple(codes.shape)}"
            )
        q = self.fsq.indices_to_codes(codes.reshape(codes.shape[0], -1))  # (B, T, d)
        return self._decode_latent(q).clamp(-1.0, 1.0)

    # -- checkpoints ---------------------------------------------------------------------------
    def save_pretrained(self, directory: str | Path) -> None:
        """Write `vq_config.json` and `vq.safetensors`, each atomically (temp file + rename)."""
        from safetensors.torch import save_file

        d = Path(directory)
        d.mkdir(parents=True, exist_ok=True)
        cfg = asdict(self.config)
        cfg["fsq_levels"] = list(cfg["fsq_levels"])
        cfg["background"] = None if cfg["background"] is None else list(cfg["background"])
        _atomic_write(d / CONFIG_NAME, lambda p: Path(p).write_text(json.dumps(cfg, indent=2)))
        state = {k: v.detach().contiguous().cpu() for k, v in self.state_dict().items()}
        _atomic_write(d / WEIGHTS_NAME, lambda p: save_file(state, p))

    @classmethod
    def from_pretrained(cls, directory: str | Path) -> VQTokenizer:
        """Load a tokenizer written by `save_pretrained`; ValueError names a missing/bad file."""
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        d = Path(directory)
        cfg_path, w_path = d / CONFIG_NAME, d / WEIGHTS_NAME
        for p in (cfg_path, w_path):
            if not p.is_file():
                raise ValueError(f"VQ tokenizer file not found: {p}")
        try:
            raw = json.loads(cfg_path.read_text())
            known = {f.name for f in fields(VQConfig)}
            unknown = set(raw) - known
            if unknown:
                raise ValueError(f"unknown keys {sorted(unknown)}")
            config = VQConfig(**raw)
        except (json.JSONDecodeError, TypeError, ValueError) as e:
            raise ValueError(f"corrupt VQ tokenizer config {cfg_path}: {e}") from None
        try:
            state = load_file(str(w_path))
        except (SafetensorError, OSError, ValueError) as e:
            raise ValueError(f"corrupt VQ tokenizer weights {w_path}: {e}") from None
        model = cls(config)
        try:
            model.load_state_dict(state, strict=True)
        except RuntimeError as e:
            msg = f"VQ tokenizer weights {w_path} do not match {cfg_path}: {e}"
            raise ValueError(msg) from None
        return model.eval()


class _Upsample(nn.Module):
    """(B, C_in, n, n) -> (B, C_out, 2n, 2n): each position unfolds into 2x2 children, then a
    residual pair of 3x3 convolutions mixes neighbours (sub-patch detail, smooth patch borders)."""

    def __init__(self, c_in: int, c_out: int) -> None:
        super().__init__()
        self.c_out = c_out
        self.unfold = nn.Conv2d(c_in, 4 * c_out, 1)
        self.conv1 = nn.Conv2d(c_out, c_out, 3, padding=1)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.gelu(F.pixel_shuffle(self.unfold(x), 2))  # (B, C_out, 2n, 2n)
        return y + self.conv2(F.gelu(self.conv1(y)))


class _ConvHead(nn.Module):
    """Decoder tokens (B, n*n, D) -> features (B, (2^s n)^2, C_s) on a grid 2^s times finer."""

    def __init__(self, dim: int, channels: int, n: int, stages: int) -> None:
        super().__init__()
        self.n = n
        widths = [dim] + [max(channels >> i, 8) for i in range(stages)]
        self.stages = nn.ModuleList(_Upsample(a, b) for a, b in zip(widths[:-1], widths[1:]))
        self.out_channels = widths[-1]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, T, D = x.shape
        y = x.transpose(1, 2).reshape(B, D, self.n, self.n)  # (B, D, n, n)
        for stage in self.stages:
            y = stage(y)
        return F.gelu(y).flatten(2).transpose(1, 2)  # (B, T', C), row-major over the fine grid


def _atomic_write(path: Path, write) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


__all__ = ["VQ_PRESETS", "VQConfig", "VQTokenizer"]
