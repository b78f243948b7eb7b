"""Train and evaluate the discrete image tokenizer on freshly rendered scene-world images.

Run (the quickstart tokenizer: about 3 minutes on 2 idle CPU cores, about 2300 steps of batch 16):
    PYTHONPATH=src python -m unimm.train.tokenizer_trainer --preset small --seconds 180 \
        --out runs/vq_small
Expected (docs/LOG.md, "Image tokenizer", round 2): PSNR about 28 dB, about 86 % of
held-out-seed scenes keep the world detector's verdict (below the 99 % goal), about 75 % of
scenes with held-out colour-shape pairs. A busy machine runs fewer steps in the same seconds;
`--steps 2300` fixes the work instead.

Semantic discrete tokens (VILA-U, arXiv 2409.04429; unimm.tokenizers.semantic_vq): add
`--align-weight 0.01` to train the codes with a CLIP loss against the world's captions as well
(at 1500 steps: 27.2 dB, 82 % verdict kept vs 27.7 dB, 85 % plain; 0.1 costs far more);
metrics.json then also holds `retrieval` / `retrieval_heldout` (zero-shot caption retrieval
from the codes, pools of 100, chance 0.01). `--probe DIR --steps N --out OUT` trains only that
aligner on the frozen codes of the tokenizer in DIR (the baseline a plain VQ gives).
Measured figures: BENCHMARKS.md, "Semantic discrete tokens (SEED / VILA-U)".
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import random
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from unimm.data.images import to_tensor, uniform_background
from unimm.progress import progress_bar
from unimm.tokenizers.semantic_vq import ALIGNER_DIR, AlignConfig, CodeAligner, QuantisedEmbedder
from unimm.tokenizers.vq import VQ_PRESETS, VQConfig, VQTokenizer

POSITION_TOL = 2.0  # px at 64 px; a reconstruction keeps a scene when every object is within this


# -- the world, behind one seam -----------------------------------------------------------------
def _world() -> tuple[Callable, Callable, Callable]:
    """(sample_scene(rng, resolution), render(scene), detect(image)) of unimm.world."""
    from unimm.world.detector import detect
    from unimm.world.render import render
    from unimm.world.scene import sample_scene

    return sample_scene, render, detect


def render_batch(
    rng: random.Random, n: int, resolution: int, heldout: str = "exclude", max_objects: int = 4
) -> tuple[torch.Tensor, list]:
    """n fresh scenes of 1..max_objects objects -> ((n, 3, R, R) float in [-1, 1], the scenes).

    Training uses heldout="exclude": the held-out colour-shape pairs never appear in any
    training image (shared/WORLD.md), the tokenizer included.
    """
    sample_scene, render, _ = _world()
    scenes = [
        sample_scene(rng, resolution=resolution, max_objects=max_objects, heldout=heldout)
        for _ in range(n)
    ]
    return to_tensor(np.stack([render(s) for s in scenes])), scenes


def same_verdict(a, b, tol: float = POSITION_TOL) -> bool:
    """Same multiset of (shape, colour), objects matched one to one with centres within tol px."""
    from unimm.world.scene import scenes_match

    return scenes_match(a, b, pos_tol=tol)


# -- evaluation ---------------------------------------------------------------------------------
@torch.no_grad()
def evaluate_vq(
    tok: VQTokenizer, n: int = 500, seed: int = 1, batch_size: int = 100, heldout: str = "exclude"
) -> dict:
    """PSNR, codebook usage/perplexity and the detector's verdict kept, over n held-out scenes.

    redetect_rate: detect(reconstruction) equals detect(original) (shapes, colours, centres
    within 2 px); truth_rate: detect(reconstruction) equals the true scene.
    """
    _, _, detect = _world()
    was_training = tok.training
    tok.eval()
    # A seed stream disjoint from training's ("vq-train-*"): eval images are never trained on.
    rng = random.Random(f"vq-eval-{seed}")
    res = tok.config.resolution
    counts = torch.zeros(tok.codebook_size, dtype=torch.long)
    mse_sum, kept, truth, done = 0.0, 0, 0, 0
    while done < n:
        m = min(batch_size, n - done)
        x, scenes = render_batch(rng, m, res, heldout)
        codes = tok.encode(x)
        recon = tok.decode(codes)
        counts += torch.bincount(codes.flatten(), minlength=tok.codebook_size)
        mse_sum += F.mse_loss(recon, x, reduction="none").mean((1, 2, 3)).sum().item()
        pix = ((recon + 1) * 127.5).round().clamp(0, 255).to(torch.uint8)
        pix = pix.permute(0, 2, 3, 1).numpy()
        orig = ((x + 1) * 127.5).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()
        for i in range(m):
            got = detect(pix[i])
            kept += same_verdict(detect(orig[i]), got)
            truth += same_verdict(scenes[i], got)
        done += m
    tok.train(was_training)
    p = counts.float() / counts.sum()
    nz = p[p > 0]
    mse = mse_sum / n
    return {
        # images live in [-1, 1]: peak-to-peak 2, so PSNR = 10 log10(4 / MSE)
        "psnr": 10 * math.log10(4.0 / max(mse, 1e-12)),
        "codebook_usage": float((counts > 0).float().mean()),
        "perplexity": float(torch.exp(-(nz * nz.log()).sum())),
        "redetect_rate": kept / n,
        "truth_rate": truth / n,
        "n": n,
    }


@torch.no_grad()
def evaluate_vq_images(tok: VQTokenizer, images: np.ndarray, batch_size: int = 100) -> dict:
    """PSNR and codebook usage / perplexity on given (N, R, R, 3) uint8 images (user data)."""
    was_training = tok.training
    tok.eval()
    counts = torch.zeros(tok.codebook_size, dtype=torch.long)
    mse_sum = 0.0
    for i in range(0, len(images), batch_size):
        x = to_tensor(images[i : i + batch_size])
        codes = tok.encode(x)
        counts += torch.bincount(codes.flatten(), minlength=tok.codebook_size)
        mse_sum += F.mse_loss(tok.decode(codes), x, reduction="none").mean((1, 2, 3)).sum().item()
    tok.train(was_training)
    p = counts.float() / counts.sum()
    nz = p[p > 0]
    return {
        "psnr": psnr(mse_sum / len(images)),
        "codebook_usage": float((counts > 0).float().mean()),
        "perplexity": float(torch.exp(-(nz * nz.log()).sum())),
        "n": len(images),
    }


def psnr(mse: float) -> float:
    """Images live in [-1, 1]: peak-to-peak 2, so PSNR = 10 log10(4 / MSE)."""
    return 10 * math.log10(4.0 / max(mse, 1e-12))


def given_batch(images: Iterator, n: int, with_texts: bool) -> tuple[torch.Tensor, list | None]:
    """The next n items of a given image stream -> ((n, 3, R, R) in [-1, 1], captions or None)."""
    items = [next(images) for _ in range(n)]
    if not with_texts:
        return to_tensor(np.stack(items)), None
    if not all(isinstance(it, tuple) for it in items):
        raise ValueError("align_weight > 0 on given images needs (image, caption) pairs")
    return to_tensor(np.stack([im for im, _ in items])), [t for _, t in items]


# -- training -----------------------------------------------------------------------------------
def _lr_at(progress: float, lr: float, warmup: float = 0.03) -> float:
    """Linear warmup then cosine decay to 10 %, on the fraction of the budget spent."""
    if progress < warmup:
        return lr * max(progress / warmup, 0.02)
    t = min(1.0, (progress - warmup) / (1 - warmup))
    return lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * t)))


def ink_weights(x: torch.Tensor, ink_weight: float) -> torch.Tensor:
    """(B, 3, H, W) targets in [-1, 1] -> per-pixel loss weights (B, 1, H, W), mean 1.

    Pixels that are not background white, and their 1-px ring (the edges), weigh 1 + ink_weight:
    objects cover under a tenth of a scene, so plain MSE spends most of its gradient on keeping
    the background flat, while shapes and colours are what the detector (and the AR model) read.
    """
    ink = (x < 0.99).any(1, keepdim=True).float()  # (B, 1, H, W)
    ink = F.max_pool2d(ink, 3, stride=1, padding=1)  # grow by one pixel to cover both edge sides
    w = 1.0 + ink_weight * ink
    return w / w.mean()


def vq_loss(
    tok: VQTokenizer,
    x: torch.Tensor,
    ink_weight: float = 0.0,
    bf16: bool = True,
    aligner: CodeAligner | None = None,
    texts: list[str] | None = None,
    align_weight: float = 0.0,
) -> dict[str, torch.Tensor]:
    """One batch's objective: {"loss", "recon"} (pixel MSE, ink-weighted if asked), plus
    "align" (the CLIP loss of the quantised latents against `texts`) with an aligner; then
    loss = recon + align_weight * align (VILA-U's reconstruction + contrastive sum)."""
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
        recon, _, aux = tok(x)
        if aligner is not None:
            if texts is None or len(texts) != len(x):
                raise ValueError("the alignment loss needs one caption per image")
            align = aligner.loss(aux["latent"], texts)
    err = (recon.float() - x) ** 2  # (B, 3, H, W)
    loss = (err * ink_weights(x, ink_weight)).mean() if ink_weight else err.mean()
    if aligner is None:
        return {"loss": loss, "recon": loss}
    return {"loss": loss + align_weight * align, "recon": loss, "align": align}


def train_vq(
    config: VQConfig,
    out_dir: str | Path,
    *,
    seconds: float | None = None,
    steps: int | None = None,
    batch_size: int = 16,
    lr: float = 2e-3,
    seed: int = 0,
    progress: bool = True,
    log: Callable[[dict], None] | None = None,
    log_every: int = 25,
    eval_n: int = 500,
    curve_every: float | None = None,
    curve_n: int = 200,
    bf16: bool = True,
    max_objects: int = 8,
    ink_weight: float = 0.0,
    ema: float | None = None,
    warmup: float = 0.1,
    align_weight: float = 0.0,
    align: AlignConfig | None = None,
    images: Iterator | None = None,
    eval_images: np.ndarray | None = None,
) -> dict:
    """Train a VQTokenizer on streamed world renders for `seconds` of wall clock or `steps`.

    images: train on this stream instead (the run's `train.data`, unimm.data.streams): (R, R, 3)
    uint8 arrays, or (array, caption) pairs when align_weight > 0. The world's detector then
    judges nothing: metrics are the reconstruction PSNR and codebook use on `eval_images`
    ((N, R, R, 3) uint8; none: no evaluation) and `"data": "given"`.

    The learning-rate schedule (linear warmup over the first `warmup` fraction of the budget,
    then cosine to 10 %) runs on whichever budget is spent first. Training scenes hold 1 to
    `max_objects` objects (more ink per step than the world's default 4; held-out pairs stay
    excluded); `ink_weight` > 0 weighs object pixels and their edges more in the loss; `ema`
    (a decay) evaluates and saves an exponential moving average of the weights. The defaults
    are the best measured settings (docs/LOG.md, "Image tokenizer"): batch 16, 8 objects,
    warmup 0.1, no ink weighting, no EMA. With `curve_every`,
    a quick evaluation on `curve_n` scenes runs every that many training seconds (its own time
    is not counted) and lands in metrics["curve"]. Saves the tokenizer to out_dir with
    metrics.json, and returns the metrics.

    Semantic discrete tokens (VILA-U, arXiv 2409.04429; unimm.tokenizers.semantic_vq): with
    `align_weight` > 0 the loss becomes MSE + align_weight * CLIP loss between the pooled
    quantised latents and each training scene's world caption, through a `CodeAligner`
    (config `align`) trained alongside and saved in out_dir/text_aligner; metrics then hold
    the zero-shot retrieval of the codes (`retrieval`, `retrieval_heldout`). The images are the
    same stream as at align_weight 0 (captions draw from their own seed), and align_weight 0
    is exactly the plain tokenizer's training.
    """
    if seconds is None and steps is None:
        raise ValueError("train_vq needs a budget: seconds=..., steps=..., or both")
    if ema is not None and not 0.0 < ema < 1.0:
        raise ValueError(f"ema must be a decay in (0, 1) or None, got {ema}")
    if ink_weight < 0:
        raise ValueError(f"ink_weight must be >= 0, got {ink_weight}")
    if align_weight < 0:
        raise ValueError(f"align_weight must be >= 0, got {align_weight}")
    if curve_every is not None and images is not None and eval_images is None:
        raise ValueError("a curve on given images needs eval_images")
    if images is not None:  # user data: its own empty canvas, if it has one, not the world's
        background = None if eval_images is None else uniform_background(eval_images)
        config = replace(config, background=background)
    torch.manual_seed(seed)
    rng = random.Random(f"vq-train-{seed}")
    tok = VQTokenizer(config)
    tok.train()
    # Built after the tokenizer, so the tokenizer's initial weights do not depend on it.
    aligner = None
    if align_weight > 0:
        from unimm.world.language import caption

        aligner = CodeAligner(align or AlignConfig(), tok.fsq.dim, tok.grid[0] * tok.grid[1])
        aligner.train()
        caption_rng = random.Random(f"vq-captions-{seed}")
    params = list(tok.parameters()) + (list(aligner.parameters()) if aligner else [])
    # An exponential moving average of the weights is what gets evaluated and saved: it averages
    # out the step-to-step noise of a short, high-lr run (Polyak averaging).
    avg = copy.deepcopy(tok).eval().requires_grad_(False) if ema is not None else None
    avg_aligner = None
    if ema is not None and aligner is not None:
        avg_aligner = copy.deepcopy(aligner).eval().requires_grad_(False)
    opt = torch.optim.AdamW(params, lr=lr, betas=(0.9, 0.99), weight_decay=0.0)
    bar = None
    if progress:
        bar = progress_bar(
            total=steps if seconds is None else int(seconds),
            unit="step" if seconds is None else "s",
            desc="vq",
        )
    trained, step, curve, next_curve = 0.0, 0, [], curve_every
    first_loss = last_loss = first_align = last_align = None
    while True:
        frac = max(trained / seconds if seconds else 0.0, step / steps if steps else 0.0)
        if frac >= 1.0:
            break
        t0 = time.perf_counter()
        for g in opt.param_groups:
            g["lr"] = _lr_at(frac, lr, warmup)
        if images is None:
            x, scenes = render_batch(rng, batch_size, config.resolution, max_objects=max_objects)
            texts = [caption(s, caption_rng) for s in scenes] if aligner is not None else None
        else:
            x, texts = given_batch(images, batch_size, aligner is not None)
        losses = vq_loss(tok, x, ink_weight, bf16, aligner, texts, align_weight)
        loss = losses["loss"]
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(tok.parameters(), 1.0)
        if aligner is not None:
            # clipped apart: the text tower's gradient must not shrink the tokenizer's steps
            torch.nn.utils.clip_grad_norm_(aligner.parameters(), 1.0)
        opt.step()
        if avg is not None:
            with torch.no_grad():
                # warm start: early on the average follows the weights closely
                decay = min(ema, (1 + step) / (10 + step))
                torch._foreach_lerp_(list(avg.parameters()), list(tok.parameters()), 1.0 - decay)
                if avg_aligner is not None:
                    pairs = list(avg_aligner.parameters()), list(aligner.parameters())
                    torch._foreach_lerp_(*pairs, 1.0 - decay)
        dt = time.perf_counter() - t0
        trained += dt
        step += 1
        last_loss = loss.item()
        first_loss = last_loss if first_loss is None else first_loss
        entry = {"step": step, "seconds": trained, "loss": last_loss}
        if aligner is not None:
            last_align = losses["align"].item()
            first_align = last_align if first_align is None else first_align
            entry |= {"recon_loss": losses["recon"].item(), "align_loss": last_align}
        if bar is not None:
            bar.update(1 if seconds is None else int(trained) - bar.n)
            bar.set_postfix(loss=f"{last_loss:.4f}", step=step)
        if log is not None and step % log_every == 0:
            lr_now = opt.param_groups[0]["lr"]
            log({**entry, "lr": lr_now})
        if next_curve is not None and trained >= next_curve:
            judged = avg if avg is not None else tok
            if images is None:
                judgement = evaluate_vq(judged, n=curve_n)
            else:  # given images: judged on eval_images (train_vq checks there are some)
                judgement = evaluate_vq_images(judged, eval_images[:curve_n])
            point = {"seconds": round(trained, 1), "steps": step, **judgement}
            curve.append(point)
            if log is not None:
                log(point)
            next_curve += curve_every
    if bar is not None:
        bar.close()
    tok = avg if avg is not None else tok.eval()
    if aligner is not None:
        aligner = avg_aligner if avg_aligner is not None else aligner.eval()
    if images is None:
        held = evaluate_vq(tok, n=eval_n, heldout="only")
        metrics = {
            **evaluate_vq(tok, n=eval_n),
            # scenes with a colour-shape pair the tokenizer never saw (shared/WORLD.md)
            "heldout_redetect_rate": held["redetect_rate"],
            "heldout_psnr": held["psnr"],
        }
    else:
        metrics = {"data": "given", "images": step * batch_size}
        if eval_images is not None:
            metrics |= evaluate_vq_images(tok, eval_images)
    metrics |= {
        "steps": step,
        "seconds": trained,
        "first_loss": first_loss,
        "final_loss": last_loss,
        "batch_size": batch_size,
        "lr": lr,
        "max_objects": max_objects,
        "ink_weight": ink_weight,
        "ema": ema,
        "warmup": warmup,
        "align_weight": align_weight,
        "config": {**asdict(config), "fsq_levels": list(config.fsq_levels)},
    }
    if aligner is not None and images is None:
        metrics |= _retrieval_metrics(QuantisedEmbedder(tok, aligner), eval_n)
    if aligner is not None:
        metrics |= {"first_align_loss": first_align, "final_align_loss": last_align}
        metrics["align"] = asdict(aligner.config)
    if curve:
        metrics["curve"] = curve
    out = Path(out_dir)
    tok.save_pretrained(out)
    if aligner is not None:
        aligner.save_pretrained(out / ALIGNER_DIR)
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2))
    return metrics


def _retrieval_metrics(embedder: QuantisedEmbedder, n: int) -> dict:
    """Zero-shot retrieval of the codes on the eval split, in pools of 100 (as the semantic
    encoder reports it: unimm.train.semantic_trainer.evaluate_retrieval)."""
    from unimm.train.semantic_trainer import evaluate_retrieval

    return {
        "retrieval": evaluate_retrieval(embedder, n=n),
        # scenes holding a colour-shape pair no training image had (shared/WORLD.md)
        "retrieval_heldout": evaluate_retrieval(embedder, n=n, heldout="only"),
    }


def probe_alignment(
    tok: VQTokenizer,
    *,
    seconds: float | None = None,
    steps: int | None = None,
    batch_size: int = 16,
    lr: float = 2e-3,
    seed: int = 0,
    align: AlignConfig | None = None,
    max_objects: int = 8,
    eval_n: int = 500,
) -> dict:
    """Train a fresh `CodeAligner` on a *frozen* tokenizer's codes, then measure retrieval.

    The same head, loss, data and schedule as `train_vq(align_weight > 0)`, but the codes cannot
    move: the probe of a plain VQ tokenizer is the baseline that a semantic one's retrieval is
    compared with (how much caption information its codes hold for this head to read).
    """
    from unimm.world.language import caption

    if seconds is None and steps is None:
        raise ValueError("probe_alignment needs a budget: seconds=..., steps=..., or both")
    torch.manual_seed(seed)
    rng, caption_rng = random.Random(f"vq-train-{seed}"), random.Random(f"vq-captions-{seed}")
    tok = tok.eval().requires_grad_(False)
    aligner = CodeAligner(align or AlignConfig(), tok.fsq.dim, tok.grid[0] * tok.grid[1]).train()
    opt = torch.optim.AdamW(aligner.parameters(), lr=lr, betas=(0.9, 0.99), weight_decay=0.0)
    trained, step, first_loss, last_loss = 0.0, 0, None, None
    while True:
        frac = max(trained / seconds if seconds else 0.0, step / steps if steps else 0.0)
        if frac >= 1.0:
            break
        t0 = time.perf_counter()
        for g in opt.param_groups:
            g["lr"] = _lr_at(frac, lr, 0.1)
        x, scenes = render_batch(rng, batch_size, tok.config.resolution, max_objects=max_objects)
        q = tok.fsq.indices_to_codes(tok.encode(x).flatten(1))  # (B, T, d), no gradient
        with torch.autocast("cpu", dtype=torch.bfloat16):
            loss = aligner.loss(q, [caption(s, caption_rng) for s in scenes])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(aligner.parameters(), 1.0)
        opt.step()
        trained += time.perf_counter() - t0
        step += 1
        last_loss = loss.item()
        first_loss = last_loss if first_loss is None else first_loss
    metrics = _retrieval_metrics(QuantisedEmbedder(tok, aligner.eval()), eval_n)
    return {
        **metrics,
        "steps": step,
        "seconds": trained,
        "first_loss": first_loss,
        "final_loss": last_loss,
        "batch_size": batch_size,
        "lr": lr,
    }


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--preset", default="small", choices=sorted(VQ_PRESETS))
    ap.add_argument("--out", required=True)
    ap.add_argument("--seconds", type=float, default=None)
    ap.add_argument("--steps", type=int, default=None)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--curve-every", type=float, default=None, help="eval every N train seconds")
    ap.add_argument(
        "--align-weight",
        type=float,
        default=0.0,
        help="> 0: semantic discrete tokens (VILA-U), MSE + this * CLIP loss on the codes",
    )
    ap.add_argument(
        "--probe",
        metavar="DIR",
        help="instead of training a tokenizer: train a text aligner on the frozen codes of the "
        "tokenizer in DIR for the budget, write retrieval to OUT/probe_metrics.json",
    )
    args = ap.parse_args(argv)
    if args.probe:
        m = probe_alignment(
            VQTokenizer.from_pretrained(args.probe),
            seconds=args.seconds,
            steps=args.steps,
            batch_size=args.batch_size,
            lr=args.lr,
            seed=args.seed,
        )
        m["tokenizer"] = str(args.probe)
        Path(args.out).mkdir(parents=True, exist_ok=True)
        (Path(args.out) / "probe_metrics.json").write_text(json.dumps(m, indent=2))
        print(json.dumps(m, indent=2))
        return
    m = train_vq(
        VQ_PRESETS[args.preset](),
        args.out,
        seconds=args.seconds,
        steps=args.steps,
        batch_size=args.batch_size,
        lr=args.lr,
        seed=args.seed,
        curve_every=args.curve_every,
        align_weight=args.align_weight,
    )
    print(json.dumps({k: v for k, v in m.items() if k != "config"}, indent=2))


if __name__ == "__main__":
    main()
