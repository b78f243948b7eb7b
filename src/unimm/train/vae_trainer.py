"""Train and evaluate the continuous image tokenizer (KL-VAE) on freshly rendered world images.

Run (about 3 minutes on one busy thread):
    OMP_NUM_THREADS=1 PYTHONPATH=src python -m unimm.train.vae_trainer --seconds 180 \
        --out runs/vae_small
Reports PSNR and the rate of scenes whose detector verdict survives reconstruction, measured as
for the VQ tokenizer (unimm.train.tokenizer_trainer.evaluate_vq), plus the latent scale.
Figures: BENCHMARKS.md, "Continuous family".
"""

from __future__ import annotations

import argparse
import json
import math
import random
import time
from collections.abc import Iterator
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from unimm.data.images import to_tensor
from unimm.data.streams import take
from unimm.tokenizers.vae import VAE_PRESETS, VAEConfig, VAETokenizer
from unimm.train.tokenizer_trainer import _lr_at, _world, psnr, render_batch, same_verdict


@torch.no_grad()
def evaluate_vae(
    tok: VAETokenizer, n: int = 500, seed: int = 1, batch_size: int = 100, heldout: str = "exclude"
) -> dict:
    """PSNR and the detector's verdict kept (encode = posterior mean, then decode)."""
    _, _, detect = _world()
    was_training = tok.training
    tok.eval()
    rng = random.Random(f"vq-eval-{seed}")  # the VQ's eval scenes, so the rates compare
    mse_sum, kept, truth, done = 0.0, 0, 0, 0
    while done < n:
        m = min(batch_size, n - done)
        x, scenes = render_batch(rng, m, tok.config.resolution, heldout)
        recon = tok.decode(tok.encode(x))
        mse_sum += F.mse_loss(recon, x, reduction="none").mean((1, 2, 3)).sum().item()
        pix = ((recon + 1) * 127.5).round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1)
        orig = ((x + 1) * 127.5).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()
        for i in range(m):
            got = detect(pix[i].numpy())
            kept += same_verdict(detect(orig[i]), got)
            truth += same_verdict(scenes[i], got)
        done += m
    tok.train(was_training)
    return {
        "psnr": 10 * math.log10(4.0 / max(mse_sum / n, 1e-12)),
        "redetect_rate": kept / n,
        "truth_rate": truth / n,
        "n": n,
    }


@torch.no_grad()
def evaluate_vae_images(tok: VAETokenizer, images: np.ndarray, batch_size: int = 100) -> dict:
    """PSNR on given (N, R, R, 3) uint8 images (user data)."""
    was_training = tok.training
    tok.eval()
    mse_sum = 0.0
    for i in range(0, len(images), batch_size):
        x = to_tensor(images[i : i + batch_size])
        recon = tok.decode(tok.encode(x))
        mse_sum += F.mse_loss(recon, x, reduction="none").mean((1, 2, 3)).sum().item()
    tok.train(was_training)
    return {"psnr": psnr(mse_sum / len(images)), "n": len(images)}


def train_vae(
    config: VAEConfig,
    out_dir: str | Path,
    *,
    seconds: float | None = None,
    steps: int | None = None,
    batch_size: int = 16,
    lr: float = 2e-3,
    seed: int = 0,
    warmup: float = 0.1,
    max_objects: int = 8,
    eval_n: int = 500,
    progress: bool = True,
    images: Iterator[np.ndarray] | None = None,
    eval_images: np.ndarray | None = None,
) -> dict:
    """Train on streamed renders for `seconds` or `steps` (the VQ trainer's best schedule:
    batch 16, warmup 10 %, cosine to 10 %), fit the latent scale on 512 images, evaluate, save
    to out_dir with metrics.json; returns the metrics.

    images: train (and fit the latent scale) on this stream of (R, R, 3) uint8 arrays instead
    (the run's `train.data`); metrics are then the PSNR on `eval_images` (if any)."""
    if seconds is None and steps is None:
        raise ValueError("train_vae needs a budget: seconds=..., steps=..., or both")
    torch.manual_seed(seed)
    rng = random.Random(f"vq-train-{seed}")
    gen = torch.Generator().manual_seed(seed)
    tok = VAETokenizer(config).train()
    opt = torch.optim.AdamW(tok.parameters(), lr=lr, betas=(0.9, 0.99), weight_decay=0.0)
    trained, step, rec = 0.0, 0, float("nan")
    while True:
        frac = max(trained / seconds if seconds else 0.0, step / steps if steps else 0.0)
        if frac >= 1.0:
            break
        t0 = time.perf_counter()
        for g in opt.param_groups:
            g["lr"] = _lr_at(frac, lr, warmup)
        if images is None:
            x, _ = render_batch(rng, batch_size, config.resolution, max_objects=max_objects)
        else:
            x = to_tensor(take(images, batch_size))
        with torch.autocast("cpu", dtype=torch.bfloat16):
            recon, kl = tok(x, gen)
        rec_loss = F.mse_loss(recon.float(), x)
        loss = rec_loss + config.kl_weight * kl
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(tok.parameters(), 1.0)
        opt.step()
        trained += time.perf_counter() - t0
        step += 1
        rec = rec_loss.item()
        if progress and step % 100 == 0:
            print(f"vae step {step} {trained:.0f}s mse {rec:.4f} kl {kl.item():.3f}", flush=True)
    tok.eval()
    if images is None:
        fit_images, _ = render_batch(random.Random(f"vae-fit-{seed}"), 512, config.resolution)
    else:
        fit_images = to_tensor(take(images, 512))
    tok.fit(fit_images)
    if images is None:
        held = evaluate_vae(tok, n=eval_n, heldout="only")
        metrics = {
            **evaluate_vae(tok, n=eval_n),
            "heldout_redetect_rate": held["redetect_rate"],
            "heldout_psnr": held["psnr"],
        }
    else:
        metrics = {"data": "given", "images": step * batch_size}
        if eval_images is not None:
            metrics |= evaluate_vae_images(tok, eval_images)
    metrics |= {
        "steps": step,
        "seconds": trained,
        "final_mse": rec,
        "latent_shift": tok.config.shift,
        "latent_scale": tok.config.scale,
        "config": asdict(tok.config),
    }
    out = Path(out_dir)
    tok.save_pretrained(out)
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2))
    return metrics


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--preset", default="small", choices=sorted(VAE_PRESETS))
    ap.add_argument("--out", required=True)
    ap.add_argument("--seconds", type=float, default=None)
    ap.add_argument("--steps", type=int, default=None)
    ap.add_argument("--latent-channels", type=int, default=4)
    ap.add_argument("--kl-weight", type=float, default=1e-4)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    cfg = VAE_PRESETS[args.preset]()
    cfg.latent_channels, cfg.kl_weight = args.latent_channels, args.kl_weight
    m = train_vae(cfg, args.out, seconds=args.seconds, steps=args.steps, seed=args.seed)
    print(json.dumps({k: v for k, v in m.items() if k != "config"}, indent=2))


if __name__ == "__main__":
    main()
