"""Train the semantic image encoder (unimm.tokenizers.semantic) on world image-caption pairs,
and measure its zero-shot retrieval on the eval split.

Run (about 2 minutes on one idle core):
    PYTHONPATH=src python -m unimm.train.semantic_trainer --seconds 120 --out runs/semantic
Writes the encoder (semantic_config.json, semantic.safetensors) and metrics.json with the
retrieval figures (see `evaluate_retrieval`).
"""

from __future__ import annotations

import argparse
import itertools
import json
import random
import time
from pathlib import Path

import numpy as np
import torch

from unimm.config import to_dict
from unimm.data.images import to_tensor
from unimm.tokenizers.semantic import SemanticConfig, SemanticEncoder
from unimm.train.tokenizer_trainer import _lr_at
from unimm.world.language import caption
from unimm.world.render import render
from unimm.world.scene import sample_scene


def caption_batch(
    rng: random.Random, n: int, resolution: int, heldout: str = "exclude"
) -> tuple[torch.Tensor, list[str]]:
    """n fresh scenes -> ((n, 3, R, R) in [-1, 1], one world caption each)."""
    scenes = [sample_scene(rng, resolution=resolution, heldout=heldout) for _ in range(n)]
    images = to_tensor(np.stack([render(s) for s in scenes]))
    return images, [caption(s, rng) for s in scenes]


@torch.no_grad()
def evaluate_retrieval(
    encoder: SemanticEncoder,
    n: int = 500,
    pool: int = 100,
    seed: int = 1,
    heldout: str = "exclude",
) -> dict:
    """Zero-shot retrieval over n eval pairs in pools of `pool` candidates.

    image_to_text: the share of images whose most similar caption in the pool is theirs;
    text_to_image likewise. Two scenes can share a caption ("a red circle"), so a retrieved
    caption with the same text counts as right. chance = 1 / pool.
    """
    was_training = encoder.training
    encoder.eval()
    rng = random.Random(f"semantic-eval-{seed}-{heldout}")  # disjoint from training's stream
    hits_i2t = hits_t2i = total = 0
    while total < n:
        k = min(pool, n - total)
        images, texts = caption_batch(rng, k, encoder.config.resolution, heldout)
        sim = encoder.embed_images(images) @ encoder.embed_texts(texts).T  # (k, k)
        same = torch.tensor([[a == b for b in texts] for a in texts])
        hits_i2t += int(same[torch.arange(k), sim.argmax(1)].sum())
        hits_t2i += int(same[sim.argmax(0), torch.arange(k)].sum())
        total += k
    encoder.train(was_training)
    return {
        "image_to_text": hits_i2t / total,
        "text_to_image": hits_t2i / total,
        "pool": pool,
        "n": total,
        "chance": 1 / pool,
    }


def train_semantic(
    config: SemanticConfig,
    out_dir: str | Path,
    *,
    seconds: float | None = None,
    steps: int | None = None,
    batch_size: int = 64,
    lr: float = 1e-3,
    seed: int = 0,
    progress: bool = True,
    eval_n: int = 500,
) -> dict:
    """Train on streamed (render, caption) pairs for `seconds` or `steps` (whichever is spent
    first; warmup 10 %, then cosine), save to out_dir with metrics.json, return the metrics.
    Large batches matter for contrastive losses (more negatives per positive)."""
    if seconds is None and steps is None:
        raise ValueError("train_semantic needs a budget: seconds=..., steps=..., or both")
    torch.manual_seed(seed)
    rng = random.Random(f"semantic-train-{seed}")
    encoder = SemanticEncoder(config).train()
    opt = torch.optim.AdamW(encoder.parameters(), lr=lr, betas=(0.9, 0.98), weight_decay=0.05)
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(
            total=steps if seconds is None else int(seconds),
            unit="step" if seconds is None else "s",
            desc="semantic encoder",
            dynamic_ncols=True,
        )
    before = evaluate_retrieval(encoder, n=200)
    trained, first_loss, last_loss = 0.0, None, None
    for step in itertools.count():
        frac = max(trained / seconds if seconds else 0.0, step / steps if steps else 0.0)
        if frac >= 1.0:
            break
        t0 = time.perf_counter()
        for g in opt.param_groups:
            g["lr"] = _lr_at(frac, lr, 0.1)
        images, texts = caption_batch(rng, batch_size, config.resolution)
        loss = encoder.contrastive_loss(images, texts)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(encoder.parameters(), 1.0)
        opt.step()
        trained += time.perf_counter() - t0
        last_loss = loss.item()
        first_loss = last_loss if first_loss is None else first_loss
        if bar is not None:
            bar.update(1 if seconds is None else int(trained) - bar.n)
            bar.set_postfix(loss=f"{last_loss:.3f}", step=step + 1)
    if bar is not None:
        bar.close()
    encoder.eval()
    metrics = {
        "retrieval": evaluate_retrieval(encoder, n=eval_n),
        # scenes holding a colour-shape pair no training image had (shared/WORLD.md)
        "retrieval_heldout": evaluate_retrieval(encoder, n=eval_n, heldout="only"),
        "retrieval_untrained": before,
        "steps": step,
        "seconds": trained,
        "first_loss": first_loss,
        "final_loss": last_loss,
        "batch_size": batch_size,
        "lr": lr,
        "config": to_dict(config),
    }
    out = Path(out_dir)
    encoder.save_pretrained(out)
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2))
    return metrics


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", required=True, help="folder to write the encoder and metrics.json")
    ap.add_argument("--seconds", type=float, default=120.0, help="training wall-clock budget")
    ap.add_argument("--steps", type=int, default=None, help="step budget (instead of, or with)")
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--loss", choices=("clip", "siglip"), default="clip")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    m = train_semantic(
        SemanticConfig(loss=args.loss),
        args.out,
        seconds=args.seconds,
        steps=args.steps,
        batch_size=args.batch_size,
        lr=args.lr,
        seed=args.seed,
    )
    r, h = m["retrieval"], m["retrieval_heldout"]
    print(
        f"{m['steps']} steps in {m['seconds']:.0f} s; retrieval in pools of {r['pool']}: "
        f"image->text {r['image_to_text']:.3f}, text->image {r['text_to_image']:.3f} "
        f"(held-out pairs {h['image_to_text']:.3f} / {h['text_to_image']:.3f}; chance "
        f"{r['chance']:.3f})"
    )


if __name__ == "__main__":
    main()
