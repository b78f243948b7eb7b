"""End-to-end jobs the CLI runs: train a run (tokenizers, then the unified model), evaluate it,
and the quickstart that does both and writes a report.

Run directory layout:
    text tokenizer + image_tokenizer/   trained first
    checkpoint/                         the unified model (self-contained checkpoint directory)
    train_log.jsonl, trainer_state.json the training log
    report.md, metrics.json, *.png      written by evaluation
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable
from dataclasses import replace
from functools import partial
from pathlib import Path

import numpy as np
import torch

from unimm.checkpoint import CHECKPOINT_DIR, checkpoint_dir, load_tensors, read_json, write_json
from unimm.data import streams
from unimm.data.images import to_tensor
from unimm.data.readers import BadSamples
from unimm.data.records import within
from unimm.data.sample import Text
from unimm.presets import RunConfig, get_run_config
from unimm.recipes.base import SamplingConfig, UnifiedModel
from unimm.recipes.parts import SEMANTIC_DIR, Parts, load_image_tokenizer, load_semantic_encoder
from unimm.recipes.registry import build_model, load_model, recipe_class
from unimm.tokenizers.pixel_patches import PixelPatches
from unimm.tokenizers.semantic import SemanticEncoder
from unimm.tokenizers.text import TextTokenizer
from unimm.tokenizers.vae import VAETokenizer
from unimm.tokenizers.vq import VQTokenizer
from unimm.train.provenance import TrainedOn
from unimm.train.run_data import RunData, sequence_length
from unimm.train.semantic_trainer import train_semantic
from unimm.train.tokenizer_trainer import train_vq
from unimm.train.trainer import EMA_FILE, STATE_FILE, train_model
from unimm.train.vae_trainer import train_vae

IMAGE_TOKENIZER_DIR = "image_tokenizer"


def world_texts(n: int, seed: int) -> list[str]:
    """Text of n training samples of every world task (the corpus of a run on the world)."""
    return streams.texts({"world": 1.0}, n, seed, resolution=64)


def train_run(
    out: str | Path,
    preset: str = "small",
    overrides: list[str] | None = None,
    image_tokenizer: str | Path | None = None,
    progress: bool = True,
    on_saved: Callable[[int], None] | None = None,
    resume: bool = False,
    semantic_encoder: str | Path | None = None,
) -> UnifiedModel:
    """Train the text tokenizer, the image tokenizer (unless one is given) and the unified model
    into run directory `out`; on_saved(step) runs after each checkpoint save.

    resume=True reuses the run's image tokenizer and continues from its newest good
    training-state checkpoint (OUT/state). Under torchrun rank 0 trains the image tokenizer
    and the others load it, so every rank holds the same one. Recipes that read images through
    a semantic encoder (janus) get one the same way: `semantic_encoder` reuses a trained one
    or takes a Hugging Face SigLIP / CLIP folder (unimm.interop.hf_vision, its features pooled
    to the image tokenizer's grid), otherwise it trains for semantic_train.seconds into
    OUT/semantic_encoder.
    """
    from unimm.train.distributed import barrier, init_from_env

    cfg = get_run_config(preset, overrides)
    d = init_from_env(cfg.train.device)
    recipe_class(cfg.recipe).check_config(cfg)  # unknown recipe, refused options: before training
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(torch.get_num_threads())
    timings: dict[str, float] = {}
    bad = BadSamples()
    data = RunData(cfg, bad)
    trained_on = TrainedOn(cfg.train.data)
    say = _log if d.is_main else lambda msg: None
    for msg in trained_on.lines():
        say(msg)

    t0 = time.perf_counter()
    init = recipe_class(cfg.recipe).init_checkpoint(cfg)
    if init is not None:  # the model starts from a trained one: keep its tokenizers
        text = TextTokenizer.load(init)
        image_tokenizer = image_tokenizer or init / IMAGE_TOKENIZER_DIR
        trained_on.add("text tokenizer", f"the one of {init}")
    else:
        corpus = streams.texts(
            cfg.train.data,
            20_000,
            cfg.train.seed,
            _resolution(cfg),
            cfg.data,
            bad,
            data.text_options(),
        )
        text = TextTokenizer.train(corpus, cfg.text_vocab_size)
    timings["text_tokenizer_s"] = time.perf_counter() - t0
    if init is None:
        say(
            trained_on.add("text tokenizer", texts=len(corpus), seconds=timings["text_tokenizer_s"])
        )

    t0 = time.perf_counter()
    kind = recipe_class(cfg.recipe).image_tokenizer_kind
    prepare = _vq_tokenizer if kind == "vq" else partial(_continuous_tokenizer, kind)
    prepare = partial(prepare, data=data)
    tok_dir = out / IMAGE_TOKENIZER_DIR
    if image_tokenizer is None and resume and tok_dir.is_dir():
        image_tokenizer = tok_dir
    if image_tokenizer is None and not d.is_main:
        barrier(d)  # rank 0 prepares the tokenizer; the other ranks load its copy
        image, cfg = prepare(cfg, out, tok_dir, progress)
    else:
        image, cfg = prepare(cfg, out, image_tokenizer, progress)
        if image_tokenizer is None:
            barrier(d)
    n_image_ids = image.codebook_size if kind == "vq" else 0  # continuous tokens are vectors
    image.eval().requires_grad_(False)
    timings["image_tokenizer_s"] = time.perf_counter() - t0
    say(_image_tokenizer_line(trained_on, image_tokenizer, tok_dir, timings["image_tokenizer_s"]))

    semantic = None
    if recipe_class(cfg.recipe).uses_semantic_encoder:
        t0 = time.perf_counter()
        sem_dir = out / SEMANTIC_DIR
        if semantic_encoder is None and resume and sem_dir.is_dir():
            semantic_encoder = sem_dir
        if semantic_encoder is None and not d.is_main:
            barrier(d)
            semantic_encoder = sem_dir
        elif semantic_encoder is None:
            _log(f"training the semantic encoder for {cfg.semantic_train.seconds:.0f} s")
            st = cfg.semantic_train
            pairs, eval_pairs = data.pairs(cfg.semantic.resolution)
            m = train_semantic(
                cfg.semantic,
                sem_dir,
                seconds=st.seconds,
                batch_size=st.batch_size,
                lr=st.lr,
                seed=cfg.train.seed,
                progress=progress,
                pairs=pairs,
                eval_pairs=eval_pairs,
            )
            barrier(d)
            semantic_encoder = sem_dir
            n_pairs = m["steps"] * st.batch_size
            say(trained_on.add("semantic encoder", steps=m["steps"], pairs=n_pairs))
        # An HF SigLIP / CLIP folder is pooled to the image tokenizer's grid; the run config's
        # `semantic` section then describes nothing (it is unimm's own encoder's).
        semantic = load_semantic_encoder(semantic_encoder, grid=image.grid)
        semantic.eval().requires_grad_(False)
        if isinstance(semantic, SemanticEncoder):
            cfg = replace(cfg, semantic=semantic.config)
        timings["semantic_encoder_s"] = time.perf_counter() - t0
        if "semantic encoder" not in trained_on.parts:
            trained_on.add("semantic encoder", f"given: {semantic_encoder}")
        trained_on.parts["semantic encoder"]["seconds"] = timings["semantic_encoder_s"]

    # The backbone's vocabulary is the text vocabulary followed by any image codebook.
    model_cfg = replace(cfg.model, vocab_size=text.vocab_size + n_image_ids)
    cfg = replace(cfg, model=model_cfg)
    model = build_model(Parts(cfg, text, image, semantic))
    n_params = sum(p.numel() for p in model.parameters())
    _log(f"training {cfg.recipe} ({n_params / 1e6:.1f}M parameters) for {cfg.train.steps} steps")

    def save(step: int) -> None:
        model.save_pretrained(out / CHECKPOINT_DIR)
        if on_saved is not None:
            on_saved(step)

    source = data.source(image.config.resolution)
    if not data.world:  # world samples fit by construction; the user's may not
        tokens = image.grid[0] * image.grid[1]
        source = within(source, sequence_length(text, tokens), cfg.model.max_seq_len, bad)
    t0 = time.perf_counter()
    rows = train_model(
        model,
        cfg.train,
        source,
        out,
        progress=progress,
        on_save=save,
        resume=resume,
    )
    timings["model_s"] = time.perf_counter() - t0
    # The trainer's final state, not the last logged row: a clock budget stops between logs.
    state = out / STATE_FILE
    step = read_json(state)["step"] if state.is_file() else (rows[-1]["step"] if rows else 0)
    trained_on.add(
        "model", steps=step, samples=step * cfg.train.batch_size, seconds=timings["model_s"]
    )
    if not data.world:
        _log(f"data (rank {d.rank}): {bad.report()}")
        write_json(out / f"bad_samples_rank{d.rank}.json", dict(bad))
    if d.is_main:
        write_json(out / "timings.json", timings)
        trained_on.save(out)
        for msg in ["what each part trained on:", *trained_on.lines()]:
            _log(msg)
    return model


def _resolution(cfg: RunConfig) -> int:
    """The image resolution of the run's image tokenizer, before it exists."""
    if recipe_class(cfg.recipe).image_tokenizer_kind == "vq":
        return cfg.vq.resolution
    return cfg.vae.resolution if cfg.continuous_tokenizer == "vae" else cfg.patches.resolution


def _image_tokenizer_line(trained_on: TrainedOn, given, tok_dir: Path, seconds: float) -> str:
    """Record the image tokenizer's training from its metrics.json (or that it was given)."""
    metrics_path = tok_dir / "metrics.json"
    if given is not None and Path(given).resolve() != tok_dir.resolve():
        return trained_on.add("image tokenizer", f"given: {given}", seconds=seconds)
    if given is not None or not metrics_path.is_file():  # resumed, or pixel patches
        m = read_json(metrics_path) if metrics_path.is_file() else {}
        facts = {"steps": m["steps"]} if "steps" in m else {}
        return trained_on.add("image tokenizer", **facts, seconds=seconds)
    m = read_json(metrics_path)
    n = m.get("images", m["steps"] * m.get("batch_size", 16))
    return trained_on.add("image tokenizer", steps=m["steps"], images=n, seconds=seconds)


def finetune_run(
    checkpoint: str | Path,
    out: str | Path,
    overrides: list[str] | None = None,
    progress: bool = True,
) -> UnifiedModel:
    """Continue training `checkpoint` (any recipe, e.g. one imported from Hugging Face weights)
    on train.data (default: the scene world); only train.* and data.* settings may change, and
    model.max_seq_len (the architecture is the checkpoint's): positions are rotary (computed,
    not learned), so a longer context changes no weight (e.g. for edit and interleaved samples,
    longer than t2i ones)."""
    from unimm.config import ConfigError, apply_overrides
    from unimm.model.transformer import Transformer

    allowed = ("train.", "data.", "model.max_seq_len=", *GROWING_OPTIONS, *TRAINING_ONLY_OPTIONS)
    wrong = [o for o in overrides or [] if not o.startswith(allowed)]
    if wrong:
        raise ConfigError(
            f"finetune only takes train.*, data.* and model.max_seq_len overrides (and "
            f"{', '.join(o.rstrip('=') for o in GROWING_OPTIONS + TRAINING_ONLY_OPTIONS)}), "
            f"got {wrong}"
        )
    model, _ = load_checkpoint(checkpoint)
    parts = model.parts
    parts.config = apply_overrides(parts.config, overrides or [])
    if any(o.startswith(GROWING_OPTIONS) for o in overrides or []):
        model = _grown(model, parts)
    for m in model.modules():  # the backbone's own copy sizes its KV caches
        if isinstance(m, Transformer):
            m.config = replace(m.config, max_seq_len=parts.config.model.max_seq_len)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    cfg = parts.config.train
    bad = BadSamples()
    _log(f"data: {streams.describe(cfg.data)}")
    source = RunData(parts.config, bad).source(model.image_resolution)
    if not streams.world_only(cfg.data):
        length = sequence_length(parts.text, parts.image.grid[0] * parts.image.grid[1])
        source = within(source, length, parts.config.model.max_seq_len, bad)
    train_model(
        model,
        cfg,
        source,
        out,
        progress=progress,
        on_save=lambda step: model.save_pretrained(out / CHECKPOINT_DIR),
    )
    if not streams.world_only(cfg.data):
        _log(f"data: {bad.report()}")
    return model


# Options a finetune may switch on although they add weights. copy_source adds zero-initialised
# ones only, so the grown model computes exactly what the checkpoint computed until it trains;
# copy_gate starts by moving 0.12 of the probability onto the source image's code where an
# image follows another (text-to-image is untouched): an edit's finetune is what it is for.
GROWING_OPTIONS = ("chameleon.copy_source=", "chameleon.copy_gate=")
# Recipe options that change only how training runs, not the weights: a finetune may set them.
TRAINING_ONLY_OPTIONS = ("chameleon.copy_input_noise=",)


def _grown(model: UnifiedModel, parts: Parts) -> UnifiedModel:
    """The same recipe built on `parts` (with a growing option on), holding `model`'s weights."""
    grown = type(model)(parts).to(model.device)
    missing, unexpected = grown.load_state_dict(model.state_dict(), strict=False)
    new = {n for n, _ in grown.named_parameters()} - set(model.state_dict())
    lost = sorted(set(unexpected) | (set(missing) - new))
    if lost:
        raise ValueError(
            f"finetune cannot switch these options for a {model.recipe} checkpoint (weights "
            f"that do not carry over: {lost[:3]})"
        )
    return grown


def _vq_tokenizer(
    cfg: RunConfig,
    out: Path,
    image_tokenizer: str | Path | None,
    progress: bool,
    data: RunData,
) -> tuple[VQTokenizer, RunConfig]:
    if image_tokenizer is not None:
        image = VQTokenizer.from_pretrained(image_tokenizer)
        return image, replace(cfg, vq=image.config)
    _log(f"training the image tokenizer for {cfg.vq_train.seconds:.0f} s")
    if cfg.vq_train.align_weight > 0:  # semantic codes learn from captions too
        images, pairs = data.pairs(cfg.vq.resolution)
        eval_images = None if pairs is None else data.eval_images(cfg.vq.resolution)
    else:
        images, eval_images = data.images(cfg.vq.resolution)
    train_vq(
        cfg.vq,
        out / IMAGE_TOKENIZER_DIR,
        seconds=cfg.vq_train.seconds,
        batch_size=cfg.vq_train.batch_size,
        lr=cfg.vq_train.lr,
        seed=cfg.train.seed,
        progress=progress,
        align_weight=cfg.vq_train.align_weight,
        images=images,
        eval_images=eval_images,
    )
    return VQTokenizer.from_pretrained(out / IMAGE_TOKENIZER_DIR), cfg


def _continuous_tokenizer(
    kind: str,
    cfg: RunConfig,
    out: Path,
    image_tokenizer: str | Path | None,
    progress: bool,
    data: RunData,
) -> tuple[PixelPatches | VAETokenizer, RunConfig]:
    """Raw pixel patches (normalised on 256 training images) or a KL-VAE (trained here unless
    one is given: unimm's own or a diffusers AutoencoderKL folder); the run directory gets a
    copy either way."""
    if kind != "continuous":
        raise ValueError(f"unknown image tokenizer kind {kind!r}")
    if image_tokenizer is not None:
        image = load_image_tokenizer(image_tokenizer)
        if isinstance(image, VQTokenizer):
            raise ValueError(
                f"{image_tokenizer} holds a VQ tokenizer; {cfg.recipe} needs "
                "continuous tokens (a VAE)"
            )
    elif cfg.continuous_tokenizer == "vae":
        _log(f"training the VAE for {cfg.vq_train.seconds:.0f} s")
        images, eval_images = data.images(cfg.vae.resolution)
        train_vae(
            cfg.vae,
            out / IMAGE_TOKENIZER_DIR,
            seconds=cfg.vq_train.seconds,
            batch_size=cfg.vq_train.batch_size,
            lr=cfg.vq_train.lr,
            seed=cfg.train.seed,
            progress=progress,
            images=images,
            eval_images=eval_images,
        )
        image = VAETokenizer.from_pretrained(out / IMAGE_TOKENIZER_DIR)
    else:  # normalised on 256 images of train.data (the world's t2i images by default)
        source = data.source(cfg.patches.resolution, {"t2i": 1.0})
        image = PixelPatches(cfg.patches).fit(to_tensor(streams.take(streams.images(source), 256)))
    target = out / IMAGE_TOKENIZER_DIR
    if image_tokenizer is None or Path(image_tokenizer).resolve() != target.resolve():
        image.save_pretrained(target)  # the run directory keeps its own copy
    if isinstance(image, VAETokenizer):
        return image, replace(cfg, vae=image.config, continuous_tokenizer="vae")
    if isinstance(image, PixelPatches):
        return image, replace(cfg, patches=image.config, continuous_tokenizer="pixels")
    return image, cfg  # a diffusers VAE (interop.hf_vae): its config lives in its own folder


def load_checkpoint(path: str | Path, ema: bool = False) -> tuple[UnifiedModel, Path]:
    """Accept a checkpoint directory or a run directory that holds one; returns (model, run dir).
    ema: replace the trained weights by their moving average (RUN/ema.safetensors, kept when
    the run trained with train.ema_decay > 0)."""
    path = checkpoint_dir(path)
    model = load_model(path)
    run_dir = path.parent if path.name == CHECKPOINT_DIR else path
    if ema:
        load_ema_weights(model, run_dir / EMA_FILE)
    return model, run_dir


def load_ema_weights(model: UnifiedModel, path: Path) -> None:
    """Copy the EMA of the trainable weights into `model`; every tensor must name one of the
    model's own with the same shape, so a file from another run is refused, not half-applied."""
    if not path.is_file():
        raise ValueError(
            f"{path} not found: this run kept no moving average of its weights (train with "
            "train.ema_decay > 0, e.g. 0.99)"
        )
    averaged = load_tensors(path)
    own = model.state_dict()
    wrong = [k for k, v in averaged.items() if k not in own or own[k].shape != v.shape]
    if wrong:
        raise ValueError(
            f"{path} does not match this checkpoint's model ({len(wrong)} tensors differ, e.g. "
            f"{wrong[0]!r})"
        )
    model.load_state_dict(averaged, strict=False)


def evaluate_run(
    model: UnifiedModel,
    out: str | Path,
    per_task: int = 50,
    images_per_prompt: int = 4,
    questions: int = 500,
    captions: int = 200,
    seed: int = 0,
    sampling: SamplingConfig | None = None,
    progress: bool = True,
    log_dir: str | Path | None = None,
    edits: int | None = None,
    episodes: int | None = None,
    diagnostics: bool = True,
) -> dict:
    """Run every scene-world benchmark on `model` and write report.md + metrics.json into `out`;
    the loss curve comes from log_dir/train_log.jsonl (default: `out`) when there is one.
    edits / episodes: Edit-scene samples and Interleaved-scene episodes per split; None = 200 and
    100 when the model trained on that task (or its tasks are unknown), else skipped; 0 skips.
    diagnostics: also measure where GenEval-scene quality is lost (a few seconds): the image
    tokenizer's ceiling on the same prompts ("ceiling_in", "ceiling_heldout") and the
    teacher-forced image-token loss on objects vs background ("image_token_loss"), and whether
    relation words move the image's likelihood ("relation_use"), and for a model that writes a
    layout before it draws, whether its layouts and its drawings go wrong ("layout_fidelity");
    the failure classes of the
    generated images are always in the GenEval-scene results."""
    from unimm.evaluate.ceiling import tokenizer_ceiling, tokenizer_roundtrip
    from unimm.evaluate.edit_chain import edit_chains
    from unimm.evaluate.editing import edit_scene
    from unimm.evaluate.geneval import geneval_scene
    from unimm.evaluate.interleaved import interleaved_scene
    from unimm.evaluate.layouts import layout_fidelity
    from unimm.evaluate.relation_use import relation_use
    from unimm.evaluate.report import write_report
    from unimm.evaluate.token_loss import image_token_loss
    from unimm.evaluate.understanding import caption_scene, vqa_scene

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    sampling = sampling or SamplingConfig()

    def gen(prompts: list[str], n: int, s: int):
        return model.generate_images(prompts, n, s, sampling)

    # Understanding decodes greedily; iterative text samplers (MMaDA, D-DiT) take the steps,
    # blocks and text guidance.
    text_sampling = SamplingConfig(
        temperature=0.0,
        steps=sampling.steps,
        text_blocks=sampling.text_blocks,
        text_cfg_scale=sampling.text_cfg_scale,
    )

    def answer(images: list, questions: list[str]) -> list[str]:
        return model.answer(images, questions, text_sampling)

    def caption(images: list) -> list[str]:
        return model.caption(images, text_sampling)

    t0 = time.perf_counter()
    results = {
        "geneval_in": geneval_scene(
            gen, "in", per_task, images_per_prompt, seed=seed, progress=progress
        ),
        "geneval_heldout": geneval_scene(
            gen, "heldout", per_task, images_per_prompt, seed=seed, progress=progress
        ),
    }
    if diagnostics:
        t1 = time.perf_counter()
        roundtrip = tokenizer_roundtrip(model.parts.image, model.device)
        for split in ("in", "heldout"):
            results[f"ceiling_{split}"] = tokenizer_ceiling(
                roundtrip, split, per_task, seed=seed, resolution=model.image_resolution
            )
        results["image_token_loss"] = image_token_loss(model, seed=seed)
        results["relation_use"] = relation_use(model, seed=seed)
        results["layout_fidelity"] = layout_fidelity(model, seed=seed, sampling=sampling)
        results["diagnostics_seconds"] = time.perf_counter() - t1
    results |= {
        "vqa_eval": vqa_scene(answer, "eval", questions, seed=seed, progress=progress),
        "vqa_heldout": vqa_scene(answer, "heldout", questions, seed=seed, progress=progress),
        "caption_eval": caption_scene(caption, "eval", captions, seed=seed, progress=progress),
    }
    tasks = model.trained_tasks()
    if edits is None:
        edits = 200 if tasks is None or "edit" in tasks else 0
    if episodes is None:
        episodes = 100 if tasks is None or "interleaved" in tasks else 0
    for split in ("eval", "heldout") if edits else ():
        results[f"edit_{split}"] = edit_scene(
            lambda ims, ins: model.edit_images(ims, ins, sampling, seed=seed),
            split,
            edits,
            seed=seed,
            progress=progress,
        )
    if edits:  # a quarter as many chains as single edits: each costs three
        results["edit_chain"] = edit_chains(
            lambda ims, ins: model.edit_images(ims, ins, sampling, seed=seed),
            max(1, edits // 4),
            seed=seed,
            progress=progress,
        )
    for split in ("eval", "heldout") if episodes else ():
        results[f"interleaved_{split}"] = interleaved_scene(
            lambda eps: model.interleave(eps, sampling=sampling, seed=seed),
            split,
            episodes,
            seed=seed,
            progress=progress,
        )
    results["eval_seconds"] = time.perf_counter() - t0
    results["model"] = model.describe()
    results["sampling"] = vars(sampling)
    log_dir = Path(log_dir or out)
    log_path = log_dir / "train_log.jsonl"
    log_rows = (
        [json.loads(x) for x in log_path.read_text().splitlines()] if log_path.exists() else []
    )
    results["training"] = training_summary(log_dir)
    write_report(
        out,
        results,
        title=f"unimm evaluation: {model.recipe}",
        loss_rows=log_rows,
        notes=describe_training(results["training"], results["model"]),
    )
    return results


def training_summary(run_dir: Path) -> dict:
    """What the run's own files say about its training (empty when they are absent)."""
    summary: dict = {}
    for name in ("trainer_state.json", "timings.json"):
        path = run_dir / name
        if path.is_file():
            data = json.loads(path.read_text())
            data.pop("config", None)
            summary.update(data)
    return summary


def describe_training(t: dict, model: dict) -> str:
    trained = model.get("trained_parameters", model["parameters"])
    text = f"Recipe `{model['recipe']}`, {trained / 1e6:.1f}M trained parameters"
    if trained != model["parameters"]:  # part of the model was frozen
        text += f" ({model['parameters'] / 1e6:.1f}M in all)"
    active = model.get("active_parameters", model["parameters"])
    if active != model["parameters"]:  # a mixture of experts
        text += f" ({active / 1e6:.1f}M active per token)"
    text += "."
    if "note" in model:
        text += f" {model['note']}"
    if "step" in t:
        text += (
            f" Trained {t['step']} steps ({t.get('tokens', 0) / 1e6:.1f}M tokens) in "
            f"{t['seconds'] / 60:.1f} min; peak RSS {t.get('peak_rss_mb', 0):.0f} MB."
        )
    if "image_tokenizer_s" in t:
        text += f" Image tokenizer trained for {t['image_tokenizer_s'] / 60:.1f} min."
    return text


def quickstart(out: str | Path = "runs/quickstart", preset: str = "small", overrides=None) -> dict:
    t0 = time.perf_counter()
    model = train_run(out, preset, overrides)
    metrics = evaluate_run(model, out)
    metrics["total_seconds"] = time.perf_counter() - t0
    saved = read_json(Path(out) / "metrics.json")
    saved["total_seconds"] = metrics["total_seconds"]
    write_json(Path(out) / "metrics.json", saved)
    print(summary_line(metrics))
    print(f"report: {Path(out) / 'report.md'}  ({metrics['total_seconds'] / 60:.1f} min in all)")
    return metrics


def summary_line(m: dict) -> str:
    return (
        f"GenEval-scene in-distribution {m['geneval_in']['overall']:.3f}, "
        f"held-out {m['geneval_heldout']['overall']:.3f}; "
        f"VQA-scene {m['vqa_eval']['overall']:.3f} (held-out {m['vqa_heldout']['overall']:.3f}); "
        f"caption-scene {m['caption_eval']['overall']:.3f}"
        + (f"; Edit-scene {m['edit_eval']['overall']:.3f}" if "edit_eval" in m else "")
        + (
            f"; Interleaved-scene (all 3 steps) {m['interleaved_eval']['overall']:.3f}"
            if "interleaved_eval" in m
            else ""
        )
    )


def generate_with_layouts(
    model: UnifiedModel,
    prompt: str,
    n: int,
    seed: int,
    sampling: SamplingConfig,
    layout: str | None = None,
) -> tuple[list[str] | None, list[np.ndarray]]:
    """n images for `prompt`, and for a model that writes a layout first (train.t2i_plan) the
    layout of each: `layout` when given (the user's), else the model's own. Other models get
    (None, their images), as generate_images draws them."""
    if not model.plans:
        if layout is not None:
            raise ValueError(
                "--layout is for a model trained with train.t2i_plan=true; this one draws "
                "from the prompt alone"
            )
        return None, model.generate_images([prompt], n, seed, sampling)[0]
    if layout is not None and not layout.strip():
        raise ValueError("empty --layout: omit it to let the model write its own")
    planned, images = [], []
    for i in range(0, n, 64):  # batched as generate_images: the same images for a given seed
        asks = [[Text(prompt)] for _ in range(min(64, n - i))]
        if layout is None:
            asks = model.with_layouts(asks, sampling, seed + i)
        else:
            asks = [[*a, Text(layout.strip(), role="assistant")] for a in asks]
        planned += asks
        images += [s.pixels for s in model.generate(asks, "image", sampling, seed + i)]
    return [p[-1].text for p in planned], images


def slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "_", text.lower()).strip("_")[:60] or "image"


def _log(msg: str) -> None:
    print(f"[unimm] {msg}", flush=True)


__all__ = ["RunConfig", "evaluate_run", "load_checkpoint", "quickstart", "train_run"]
