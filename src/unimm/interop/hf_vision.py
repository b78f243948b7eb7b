"""Hugging Face SigLIP / CLIP checkpoints as unimm's semantic image encoder.

The anchors read images for understanding through a pretrained SigLIP (Janus, Janus-Pro, BAGEL)
or CLIP (LLaVA) tower. `HFSemanticEncoder` wraps transformers' own `SiglipVisionModel`,
`SiglipModel`, `CLIPVisionModel` or `CLIPModel` (loaded from safetensors only, never pickles)
behind the interface of unimm.tokenizers.semantic.SemanticEncoder: `features`, `embed_images`,
`embed_texts`, `grid`, `feature_dim`, save_pretrained / from_pretrained. The towers are not
reimplemented (DESIGN.md: prefer a well-kept library where one fits); unimm adds the contract:

- input: unimm's [-1, 1] images -> [0, 1] -> resized to the tower's `image_size` (the
  processor's resampling, bicubic by default; torch's kernel, not PIL's) -> (x - mean) / std,
  mean / std / resampling from the folder's preprocessor_config.json, else the family's
  defaults (SigLIP 0.5 / 0.5; CLIP the OpenAI statistics). For an image already at
  `image_size` this is exactly the HF image processor's rescale + normalise.
- features: the patch tokens of the last layer (`last_hidden_state`: after SigLIP's
  post-LayerNorm, the output HF Janus feeds its aligner) or of the penultimate one
  (`hidden_states[-2]`, as LLaVA-1.5 reads CLIP, arXiv 2310.03744); CLIP's class token is
  dropped. They are average-pooled from the checkpoint's s x s patch grid to `grid`, so each
  feature fills one slot of the image tokenizer's grid (a recipe like janus requires equal grids).
- a checkpoint's `semantic_encoder/` holds the HF folder itself (config.json, model.safetensors,
  tokenizer files) plus `hf_semantic.json` (grid, layer, preprocessing): transformers still
  loads it, and unimm.recipes.parts.load_semantic_encoder recognises it by its config.json.

The encoder is frozen: features and embeddings are computed without gradients.
Legend: B batch, D tower width, s checkpoint patch grid side, g pooled grid side, E joint width.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from unimm.checkpoint import read_json, write_json
from unimm.config import ConfigError, from_dict, to_dict
from unimm.interop.hf_files import HF_CONFIG, HFImportError, read_hf_config

HF_SEMANTIC_CONFIG = "hf_semantic.json"
PREPROCESSOR_CONFIG = "preprocessor_config.json"
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "spiece.model", "vocab.json")

# model_type -> (transformers class, family, has a text tower)
MODEL_TYPES = {
    "siglip_vision_model": ("SiglipVisionModel", "siglip", False),
    "siglip": ("SiglipModel", "siglip", True),
    "clip_vision_model": ("CLIPVisionModel", "clip", False),
    "clip": ("CLIPModel", "clip", True),
    # The SigLIP tower of a Hugging Face Janus, saved on its own (unimm.interop.hf_janus_recipe).
    "janus_vision_model": ("JanusVisionModel", "siglip", False),
}
# The families' processors when a folder has no preprocessor_config.json.
DEFAULT_MEAN_STD = {
    "siglip": ((0.5, 0.5, 0.5), (0.5, 0.5, 0.5)),
    "clip": ((0.48145466, 0.4578275, 0.40821073), (0.26862954, 0.26130258, 0.27577711)),
}
PIL_RESAMPLE = {0: "nearest", 2: "bilinear", 3: "bicubic"}  # PIL.Image.Resampling codes


@dataclass(kw_only=True)
class HFSemanticConfig:
    grid: int | None = None  # side of the pooled feature grid; None: the checkpoint's patch grid
    layer: Literal["last", "penultimate"] = "last"
    image_mean: list[float] = field(default_factory=lambda: [0.5, 0.5, 0.5])
    image_std: list[float] = field(default_factory=lambda: [0.5, 0.5, 0.5])
    resample: Literal["nearest", "bilinear", "bicubic"] = "bicubic"

    def __post_init__(self) -> None:
        if self.grid is not None and self.grid < 1:
            raise ValueError(f"grid must be >= 1, got {self.grid}")
        if self.layer not in ("last", "penultimate"):
            raise ValueError(f"layer must be 'last' or 'penultimate', got {self.layer!r}")
        if len(self.image_mean) != 3 or len(self.image_std) != 3 or min(self.image_std) <= 0:
            raise ValueError("image_mean and image_std need 3 values each, std > 0")
        if self.resample not in ("nearest", "bilinear", "bicubic"):
            raise ValueError(f"unsupported resample {self.resample!r}")


def hf_vision_kind(directory: str | Path) -> tuple[str, str, bool] | None:
    """(transformers class, family, has text tower) for a SigLIP / CLIP folder, else None."""
    path = Path(directory) / HF_CONFIG
    if not path.is_file():
        return None
    try:
        model_type = read_json(path).get("model_type")
    except (ValueError, OSError, AttributeError):
        return None
    return MODEL_TYPES.get(model_type)


def is_hf_semantic_folder(directory: str | Path) -> bool:
    return hf_vision_kind(directory) is not None


def _preprocessing(directory: Path, family: str) -> tuple[dict, dict | None]:
    """Mean, std and resampling of the folder's image processor (family defaults without one),
    and the raw preprocessor_config.json to write back on save."""
    mean, std = DEFAULT_MEAN_STD[family]
    out = {"image_mean": list(mean), "image_std": list(std), "resample": "bicubic"}
    path = directory / PREPROCESSOR_CONFIG
    if not path.is_file():
        return out, None
    raw = read_json(path)
    if raw.get("do_normalize", True) is False:
        out["image_mean"], out["image_std"] = [0.0] * 3, [1.0] * 3
    else:
        for key in ("image_mean", "image_std"):
            value = raw.get(key, out[key])
            out[key] = [
                float(v) for v in ([value] * 3 if isinstance(value, int | float) else value)
            ]
    code = raw.get("resample", 3)
    if code not in PIL_RESAMPLE:
        raise HFImportError(
            f"{path}: resample {code!r} is not nearest (0), bilinear (2), bicubic (3)"
        )
    out["resample"] = PIL_RESAMPLE[code]
    return out, raw


class HFSemanticEncoder(nn.Module):
    """A transformers SigLIP / CLIP model as a frozen unimm semantic encoder."""

    def __init__(
        self,
        model: nn.Module,
        family: Literal["siglip", "clip"],
        config: HFSemanticConfig,
        tokenizer=None,
        preprocessor: dict | None = None,
    ) -> None:
        super().__init__()
        self.model = model.eval().requires_grad_(False)
        self.family, self.config, self.tokenizer = family, config, tokenizer
        self._preprocessor = preprocessor
        self.has_text = hasattr(model, "text_model")
        self.vision = model.vision_model if self.has_text else model  # a *VisionModel either way
        vcfg = self.vision.config
        self.image_size, self.patch_side = int(vcfg.image_size), vcfg.image_size // vcfg.patch_size
        self.n_prefix = 1 if family == "clip" else 0  # CLIP's class token precedes the patches
        side = config.grid or self.patch_side
        if side > self.patch_side:
            raise ValueError(
                f"grid {side} is finer than the checkpoint's {self.patch_side}x{self.patch_side} "
                f"patch grid (image_size {vcfg.image_size} / patch_size {vcfg.patch_size}); "
                "pooling only coarsens"
            )
        self.config.grid = side
        self.register_buffer("mean", torch.tensor(config.image_mean)[:, None, None], False)
        self.register_buffer("std", torch.tensor(config.image_std)[:, None, None], False)

    @property
    def grid(self) -> tuple[int, int]:
        return self.config.grid, self.config.grid

    @property
    def feature_dim(self) -> int:
        return int(self.vision.config.hidden_size)

    # ----- images ---------------------------------------------------------------------------

    def preprocess(self, images: Tensor) -> Tensor:
        """(B, 3, H, W) in [-1, 1] -> (B, 3, S, S) the tower's pixel_values (S = image_size)."""
        if images.ndim != 4 or images.shape[1] != 3:
            raise ValueError(f"images must be (B, 3, H, W) in [-1, 1], got {tuple(images.shape)}")
        p = next(self.model.parameters())
        x = (images.to(p.device, torch.float32) + 1) / 2  # [0, 1], the processor's rescale
        size = (self.image_size, self.image_size)
        if tuple(x.shape[-2:]) != size:
            mode = self.config.resample
            smooth = mode != "nearest"
            x = F.interpolate(x, size=size, mode=mode, antialias=smooth, align_corners=None)
            x = x.clamp(0, 1)  # bicubic overshoots; PIL's uint8 output cannot
        return ((x - self.mean) / self.std).to(p.dtype)

    @torch.no_grad()
    def features(self, images: Tensor) -> Tensor:
        """(B, 3, H, W) in [-1, 1] -> (B, g * g, D) patch features in raster order (fp32)."""
        penultimate = self.config.layer == "penultimate"
        out = self.vision(pixel_values=self.preprocess(images), output_hidden_states=penultimate)
        h = out.hidden_states[-2] if penultimate else out.last_hidden_state  # (B, [1 +] s*s, D)
        h = h[:, self.n_prefix :]
        s, g = self.patch_side, self.config.grid
        if h.shape[1] != s * s:
            raise ValueError(f"the tower gave {h.shape[1]} patch tokens, expected {s}x{s}")
        if g != s:
            grid = h.transpose(1, 2).reshape(len(h), -1, s, s)  # (B, D, s, s)
            h = F.adaptive_avg_pool2d(grid, g).flatten(2).transpose(1, 2)  # (B, g * g, D)
        return h.float()

    def _need_text_tower(self, what: str) -> None:
        if not self.has_text:
            raise ValueError(
                f"{what} needs the joint image-text model: this is a {type(self.model).__name__} "
                "(vision tower only); load a SiglipModel / CLIPModel folder instead"
            )

    @torch.no_grad()
    def embed_images(self, images: Tensor) -> Tensor:
        """(B, 3, H, W) -> (B, E) unit vectors in the joint image-text space."""
        self._need_text_tower("embed_images")
        pooled = self.vision(pixel_values=self.preprocess(images)).pooler_output  # (B, D)
        if self.family == "clip":
            pooled = self.model.visual_projection(pooled)
        return F.normalize(pooled.float(), dim=-1)

    @torch.no_grad()
    def embed_texts(self, texts: list[str]) -> Tensor:
        """Texts -> (B, E) unit vectors, tokenized as the checkpoint was trained: SigLIP padded
        to its full length with no mask (its text tower pools the last position), CLIP padded
        to the longest with a mask (it pools at the end-of-text token)."""
        self._need_text_tower("embed_texts")
        if self.tokenizer is None:
            raise ValueError(
                "embed_texts needs the checkpoint's tokenizer, and its folder had no tokenizer "
                f"files ({', '.join(TOKENIZER_FILES)})"
            )
        max_len = int(self.model.text_model.config.max_position_embeddings)
        device = next(self.model.parameters()).device
        if self.family == "siglip":
            enc = self.tokenizer(
                texts, padding="max_length", truncation=True, max_length=max_len,
                return_tensors="pt",
            )  # fmt: skip
            out = self.model.text_model(input_ids=enc["input_ids"].to(device))
            pooled = out.pooler_output
        else:
            enc = self.tokenizer(
                texts, padding=True, truncation=True, max_length=max_len, return_tensors="pt"
            )
            out = self.model.text_model(
                input_ids=enc["input_ids"].to(device),
                attention_mask=enc["attention_mask"].to(device),
            )
            pooled = self.model.text_projection(out.pooler_output)
        return F.normalize(pooled.float(), dim=-1)

    # ----- checkpoints ----------------------------------------------------------------------

    def save_pretrained(self, directory: str | Path) -> None:
        """The HF folder (transformers loads it) plus hf_semantic.json (the unimm side)."""
        d = Path(directory)
        d.mkdir(parents=True, exist_ok=True)
        self.model.save_pretrained(d)
        if self.tokenizer is not None:
            self.tokenizer.save_pretrained(d)
        if self._preprocessor is not None:
            write_json(d / PREPROCESSOR_CONFIG, self._preprocessor)
        write_json(d / HF_SEMANTIC_CONFIG, to_dict(self.config))

    @classmethod
    def from_pretrained(
        cls,
        directory: str | Path,
        grid: int | tuple[int, int] | None = None,
        layer: Literal["last", "penultimate"] | None = None,
        dtype: torch.dtype = torch.float32,
    ) -> HFSemanticEncoder:
        """A local HF SigLIP / CLIP folder (or a hub id where online), or one this class saved.
        grid / layer override the saved ones (default: the checkpoint's grid, the last layer)."""
        import transformers

        from unimm.interop.importer import resolve_source

        directory = resolve_source(directory)
        if directory.is_dir() and not (directory / HF_CONFIG).is_file():
            unimm_own = (directory / "semantic_config.json").is_file()
            hint = " (it is unimm's own: SemanticEncoder.from_pretrained)" if unimm_own else ""
            raise HFImportError(f"{directory} has no {HF_CONFIG}: not a Hugging Face folder{hint}")
        cfg = read_hf_config(directory)
        kind = MODEL_TYPES.get(cfg["model_type"])
        if kind is None:
            raise HFImportError(
                f"{directory / HF_CONFIG}: model_type {cfg['model_type']!r} is not a SigLIP / "
                "CLIP image encoder (expected siglip_vision_model, siglip, clip_vision_model, "
                "clip or janus_vision_model: a SiglipVisionModel, SiglipModel, CLIPVisionModel, "
                "CLIPModel or a Janus checkpoint's JanusVisionModel)"
            )
        class_name, family, _ = kind
        if not any(directory.glob("*.safetensors")):
            raise HFImportError(
                f"{directory} has no .safetensors weights (unimm never loads pickled weights)"
            )
        if (directory / HF_SEMANTIC_CONFIG).is_file():
            try:
                config = from_dict(HFSemanticConfig, read_json(directory / HF_SEMANTIC_CONFIG))
            except (ConfigError, ValueError, TypeError) as e:
                raise HFImportError(f"bad {directory / HF_SEMANTIC_CONFIG}: {e}") from None
            preprocessor = (
                read_json(directory / PREPROCESSOR_CONFIG)
                if (directory / PREPROCESSOR_CONFIG).is_file()
                else None
            )
        else:
            prep, preprocessor = _preprocessing(directory, family)
            config = HFSemanticConfig(**prep)
        if isinstance(grid, tuple):
            if grid[0] != grid[1]:
                raise ValueError(f"the pooled grid must be square, got {grid}")
            grid = grid[0]
        if grid is not None:
            config.grid = grid
        if layer is not None:
            config.layer = layer
        config.__post_init__()
        model, info = getattr(transformers, class_name).from_pretrained(
            directory, use_safetensors=True, dtype=dtype, output_loading_info=True
        )
        bad = list(info.get("missing_keys", [])) + list(info.get("mismatched_keys", []))
        if bad:
            raise HFImportError(
                f"{directory}: the weights do not fit its {class_name} config (missing or "
                f"mismatched: {[str(b) for b in bad][:3]})"
            )
        tokenizer = None
        if any((directory / f).is_file() for f in TOKENIZER_FILES):
            try:
                tokenizer = transformers.AutoTokenizer.from_pretrained(directory)
            except (OSError, ValueError, ImportError) as e:
                raise HFImportError(f"{directory}: its tokenizer files do not load: {e}") from None
        return cls(model, family, config, tokenizer, preprocessor)
