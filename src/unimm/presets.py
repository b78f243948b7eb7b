"""A run's whole configuration and its named presets.

`RunConfig` nests every component's config; it is what `config.json` in a checkpoint holds and
what the CLI's `--preset NAME key.sub=value ...` builds.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Literal

from unimm.config import ConfigError, apply_overrides
from unimm.data.config import DataConfig
from unimm.model.config import MODEL_PRESETS, ModelConfig
from unimm.paradigms.diffusion_head import HeadConfig
from unimm.paradigms.flow import FlowConfig
from unimm.paradigms.masked_diffusion import DiscreteDiffusionConfig
from unimm.recipes.bagel_config import BagelConfig
from unimm.recipes.chameleon_config import ChameleonConfig
from unimm.recipes.ddit_config import DDiTConfig
from unimm.recipes.janus_config import JanusConfig
from unimm.recipes.janusflow_config import JanusFlowConfig
from unimm.recipes.metaquery_config import MetaQueryConfig
from unimm.recipes.transfusion_config import TransfusionConfig
from unimm.tokenizers.pixel_patches import PatchConfig
from unimm.tokenizers.semantic import SemanticConfig
from unimm.tokenizers.vae import VAEConfig
from unimm.tokenizers.vq import VQ_PRESETS, VQConfig
from unimm.train.config import TrainConfig


@dataclass(kw_only=True)
class TokenizerTrainConfig:
    """How long the image tokenizer trains before the unified model (quickstart pipeline)."""

    seconds: float = 180.0
    batch_size: int = 16  # docs/LOG.md: more steps beat bigger batches at this budget
    lr: float = 2e-3
    # > 0: semantic discrete tokens (VILA-U): MSE + align_weight * a CLIP loss between the pooled
    # codes and the captions (unimm.tokenizers.semantic_vq, BENCHMARKS.md)
    align_weight: float = 0.0


@dataclass(kw_only=True)
class SemanticTrainConfig:
    """How long the semantic encoder trains (recipes that read images through one, e.g. janus)."""

    seconds: float = 120.0
    batch_size: int = 64  # contrastive losses want many negatives per positive
    lr: float = 1e-3


@dataclass(kw_only=True)
class RunConfig:
    recipe: str = "chameleon"
    text_vocab_size: int = 512
    model: ModelConfig
    vq: VQConfig
    vq_train: TokenizerTrainConfig = field(default_factory=TokenizerTrainConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    # How train.data's images (any size and mode) and captions become samples: data.resize etc.
    data: DataConfig = field(default_factory=DataConfig)
    diffusion: DiscreteDiffusionConfig = field(default_factory=DiscreteDiffusionConfig)
    # Continuous recipes (Transfusion): which continuous image tokens ("pixels": raw patches,
    # "vae": latents of a KL-VAE trained for vq_train.seconds), their configs, the flow settings.
    continuous_tokenizer: Literal["pixels", "vae"] = "pixels"
    patches: PatchConfig = field(default_factory=PatchConfig)
    vae: VAEConfig = field(default_factory=VAEConfig)
    flow: FlowConfig = field(default_factory=FlowConfig)
    head: HeadConfig = field(default_factory=HeadConfig)  # the MAR / Harmon per-token head
    janusflow: JanusFlowConfig = field(default_factory=JanusFlowConfig)
    transfusion: TransfusionConfig = field(default_factory=TransfusionConfig)
    chameleon: ChameleonConfig = field(default_factory=ChameleonConfig)
    janus: JanusConfig = field(default_factory=JanusConfig)
    metaquery: MetaQueryConfig = field(default_factory=MetaQueryConfig)
    bagel: BagelConfig = field(default_factory=BagelConfig)
    ddit: DDiTConfig = field(default_factory=DDiTConfig)  # Dual Diffusion's loss weights, text CFG
    # The contrastively trained image encoder of the decoupled recipes (SigLIP's role).
    semantic: SemanticConfig = field(default_factory=SemanticConfig)
    semantic_train: SemanticTrainConfig = field(default_factory=SemanticTrainConfig)


def _tiny() -> RunConfig:
    return RunConfig(
        text_vocab_size=320,
        model=MODEL_PRESETS["tiny"](max_seq_len=192),
        vq=VQ_PRESETS["tiny"](),
        vq_train=TokenizerTrainConfig(seconds=5.0, batch_size=16),
        vae=VAEConfig(dim=32, enc_layers=1, dec_layers=1, n_heads=2, head_hidden=16),
        semantic=SemanticConfig(
            dim=32, layers=1, n_heads=2, text_dim=32, text_layers=1, embed_dim=32
        ),
        semantic_train=SemanticTrainConfig(seconds=5.0, batch_size=16),
        train=TrainConfig(steps=20, batch_size=8, warmup_steps=2, log_every=5, precision="fp32"),
    )


def _small() -> RunConfig:
    # The quickstart: the unified model trains for at most 8.5 minutes of wall clock (the
    # cosine schedule anneals on whichever budget runs out first), so the whole quickstart
    # (setup, 3 min of image tokenizer, training, evaluation) stays within about 13.5 of the 15
    # minutes issue 17 allows on 2 cores whatever the machine's speed; 7 minutes until
    # 2026-12-07 left 3 minutes of that unused. train.max_seconds=none turns the clock off and
    # train.steps alone decides.
    return RunConfig(
        # QK-norm: at 1400 steps x 48, two seeds paired, GenEval-scene +0.045 / +0.050, VQA-scene
        # +0.010 / +0.068, captions +0.065 / +0.035, for 2-5 % more time a step (docs/LOG.md,
        # "QK-norm, second seed")
        model=MODEL_PRESETS["small"](max_seq_len=256, qk_norm=True),
        vq=VQ_PRESETS["small"](),
        # Muon for the hidden matrices: at 450 steps the image loss is where AdamW's is at 700;
        # three questions per VQA image: GenEval-scene +0.04 over two seeds at equal steps for
        # 8 % more time per step (docs/LOG.md, "Quality per CPU-minute").
        # compile: the blocks under torch.compile, 1.27x the steps in the same 7 minutes and
        # GenEval-scene 0.364 -> 0.426 over two seeds (Sapphire Rapids; docs/LOG.md, "Compiled
        # blocks"); evaluation afterwards runs eager, and a machine without a C++ compiler
        # trains eager with a note.
        train=TrainConfig(
            steps=2400, max_seconds=510.0, optimizer="muon", vqa_questions=3, compile=True
        ),
        # background codes at 0.3 of an object code's weight in the loss: object-token loss
        # 2.88 -> 2.64 on every seed, captions 0.34 -> 0.43 (3 seeds, within the spread), drawing
        # and VQA level (docs/LOG.md, "Third round of levers")
        chameleon=ChameleonConfig(background_weight=0.3),
    )


def _reference() -> RunConfig:
    # The reference tier (`make reference`): the quickstart's recipe with a longer-trained
    # image tokenizer and 45 minutes of model training on 2 cores, so that setup, tokenizers,
    # training and the full evaluation stay within 60 minutes (docs/LOG.md, "Reference run").
    cfg = _small()
    cfg.vq_train.seconds = 300.0
    cfg.train.steps = 20_000  # the clock, not the step count, ends this run
    cfg.train.max_seconds = 2700.0
    # Plan, then draw: each text-to-image sample lays its scene out in words before the image,
    # and the model writes its own layout before each image it draws. Held-out compositions
    # 0.300-0.333 (three references without it) -> 0.482, the position task 0.32-0.40 -> 0.485,
    # in distribution level (0.728 against 0.700-0.764), reading a little lower (captions 0.850
    # against 0.875-0.890), one seed so far; at 1400 steps held-out +0.10 / +0.17 over two seeds
    # (docs/LOG.md, "Plan, then draw"). Off in `small`: at the quickstart's budget it costs the
    # reading that the quickstart's VQA bar still lacks.
    cfg.train.t2i_plan = True
    return cfg


RUN_PRESETS: dict[str, Callable[[], RunConfig]] = {
    "tiny": _tiny,
    "small": _small,
    "reference": _reference,
}


def get_run_config(preset: str, overrides: list[str] | None = None) -> RunConfig:
    if preset not in RUN_PRESETS:
        raise ConfigError(f"unknown preset {preset!r} (choose from {', '.join(RUN_PRESETS)})")
    cfg = apply_overrides(RUN_PRESETS[preset](), overrides or [])
    # A preset's layouts are the chameleon recipe's (its sampler writes them); another recipe
    # trained on the preset draws without, unless the overrides ask for them (then its
    # check_config refuses them by name).
    asked = any(o.split("=", 1)[0].strip() == "train.t2i_plan" for o in overrides or [])
    if cfg.recipe != "chameleon" and cfg.train.t2i_plan and not asked:
        cfg = replace(cfg, train=replace(cfg.train, t2i_plan=False))
    return cfg
