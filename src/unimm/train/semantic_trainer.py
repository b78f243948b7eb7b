"""Train the semantic image encoder (unimm.tokenizers.semantic) on world image-caption pairs,
and measure its zero-shot retrieval on the eval split.

Run (about 2 minutes on one idle core):
    PYTHONPATH=src python -m unimm.train.semantic_trainer --seconds 120 --out runs/semantic
Writes the encoder (semantic_config.json, semantic.safetensors) and metrics.json with the
retrieval figures (see `evaluate_retrieval`) and a shape probe on held-out colour-shape pairs
(`evaluate_shape_probe`). `--shape-views 0.5` shows half of each batch as colour-free views;
it raised the probe on seen pairs 0.59 -> 0.90 but not Janus's held-out shape answers
(docs/LOG.md, "Colour-free shape views").
"""

from __future__ import annotations

import argparse
import itertools
import json
import random
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import torch

from unimm.config import to_dict
from unimm.data.images import to_tensor
from unimm.progress import progress_bar
from unimm.tokenizers.semantic import SemanticConfig, SemanticEncoder
from unimm.train.tokenizer_trainer import _lr_at
from unimm.world.language import caption, describe, scene_groups
from unimm.world.palette import SHAPES
from unimm.world.render import render
from unimm.world.scene import allowed_pairs, place_objects, sample_scene


def ink_only(pixels: np.ndarray) -> np.ndarray:
    """(H, W, 3) uint8 render -> the same shapes in black ink on white: every colour gives
    ink by how far its darkest channel is from white (anti-aliased edges stay soft)."""
    white = pixels.min(axis=-1, keepdims=True)  # 255 on the background, 0 on full ink
    return np.repeat(white, 3, axis=-1)


def caption_batch(
    rng: random.Random,
    n: int,
    resolution: int,
    heldout: str = "exclude",
    shape_views: float = 0.0,
) -> tuple[torch.Tensor, list[str]]:
    """n fresh scenes -> ((n, 3, R, R) in [-1, 1], one world caption each).

    shape_views: the share of pairs shown as colour-free views, the scene in black ink with a
    caption that names shapes and counts only. Held-out colour-shape pairs are never rendered
    in training, so an encoder that learns shape only together with colour names the shape of
    a red triangle wrongly; colour-free views make shape a feature of its own."""
    scenes = [sample_scene(rng, resolution=resolution, heldout=heldout) for _ in range(n)]
    images, texts = [], []
    for s in scenes:
        if shape_views > 0 and rng.random() < shape_views:
            images.append(ink_only(render(s)))
            texts.append(describe(scene_groups(s, with_color=False)))
        else:
            images.append(render(s))
            texts.append(caption(s, rng))
    return to_tensor(np.stack(images)), texts


@torch.no_grad()
def pooled_features(encoder: SemanticEncoder, images: torch.Tensor) -> torch.Tensor:
    """(B, 2 * dim): the class token and the mean of the patch features that recipes read."""
    h = encoder._image_tower(images)
    return torch.cat([h[:, 0], h[:, 1:].mean(1)], dim=-1)


def _single_objects(rng: random.Random, n: int, resolution: int, heldout: str):
    pairs = allowed_pairs(heldout)
    scenes = [place_objects(rng, [rng.choice(pairs)], resolution=resolution) for _ in range(n)]
    images = to_tensor(np.stack([render(s) for s in scenes]))
    return images, torch.tensor([SHAPES.index(s.objects[0].shape) for s in scenes])


def evaluate_shape_probe(
    encoder: SemanticEncoder,
    n_train: int = 1024,
    n_test: int = 256,
    seed: int = 1,
    features: Callable[[torch.Tensor], torch.Tensor] | None = None,
) -> dict:
    """A linear probe for an object's shape on frozen features of one-object scenes: fitted on
    training colour-shape pairs, scored on them ("seen") and on the held-out pairs that no
    training image has ("heldout", e.g. a red triangle). Features that carry shape apart from
    colour score alike on both; features that know shape only through colour (red objects
    were never triangles in training) fall to 0 on held-out pairs, below chance (1 / number of
    shapes). features: images -> (B, F); default `pooled_features` of the encoder."""
    was_training = encoder.training
    encoder.eval()
    features = features or (lambda images: pooled_features(encoder, images))
    rng = random.Random(f"semantic-probe-{seed}")
    r = encoder.config.resolution
    x, y = _single_objects(rng, n_train, r, "exclude")
    feats = features(x)
    mean, std = feats.mean(0), feats.std(0) + 1e-6
    probe = torch.nn.Linear(feats.shape[1], len(SHAPES))
    opt = torch.optim.Adam(probe.parameters(), lr=1e-2)
    with torch.enable_grad():
        for _ in range(300):  # full batch; converges well before
            loss = torch.nn.functional.cross_entropy(probe((feats - mean) / std), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
    out = {"chance": 1 / len(SHAPES), "n_test": n_test}
    for name, split in (("seen", "exclude"), ("heldout", "only")):
        xt, yt = _single_objects(rng, n_test, r, split)
        pred = probe((features(xt) - mean) / std).argmax(-1)
        out[name] = float((pred == yt).float().mean())
    encoder.train(was_training)
    return out


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
    rng = random.Random(f"semantic-eval-{seed}-{heldout}")  # disjoint from training's stream
    pools, total = [], 0
    while total < n:
        k = min(pool, n - total)
        pools.append(caption_batch(rng, k, encoder.config.resolution, heldout))
        total += k
    return retrieval_in_pools(encoder, pools, pool)


@torch.no_grad()
def retrieval_in_pools(
    encoder: SemanticEncoder, pools: list[tuple[torch.Tensor, list[str]]], pool: int = 100
) -> dict:
    """image_to_text / text_to_image hit rates over pools of (images, their captions), each
    of at most `pool` (chance = 1 / pool)."""
    was_training = encoder.training
    encoder.eval()
    hits_i2t = hits_t2i = total = 0
    for images, texts in pools:
        k = len(texts)
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


def given_pools(pairs: list[tuple[np.ndarray, str]], pool: int = 100) -> list:
    """(image, caption) pairs -> retrieval pools of `pool` (the last one may be smaller)."""
    return [
        (to_tensor(np.stack([im for im, _ in pairs[i : i + pool]])),
         [t for _, t in pairs[i : i + pool]])
        for i in range(0, len(pairs), pool)
    ]  # fmt: skip


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
    shape_views: float = 0.0,
    pairs: Iterator[tuple[np.ndarray, str]] | None = None,
    eval_pairs: list[tuple[np.ndarray, str]] | None = None,
) -> dict:
    """Train on streamed (render, caption) pairs for `seconds` or `steps` (whichever is spent
    first; warmup 10 %, then cosine), save to out_dir with metrics.json, return the metrics.
    Large batches matter for contrastive losses (more negatives per positive). shape_views:
    see `caption_batch`.

    pairs: train on this stream of ((R, R, 3) uint8 image, text) instead (the run's
    `train.data`, unimm.data.streams.captioned_images); the world's retrieval and shape probe
    then judge nothing: metrics hold retrieval on `eval_pairs` (if any) in pools of 100."""
    if not 0.0 <= shape_views < 1.0:
        raise ValueError(f"shape_views is a share of each batch in [0, 1), got {shape_views}")
    if seconds is None and steps is None:
        raise ValueError("train_semantic needs a budget: seconds=..., steps=..., or both")
    torch.manual_seed(seed)
    rng = random.Random(f"semantic-train-{seed}")
    encoder = SemanticEncoder(config).train()
    opt = torch.optim.AdamW(encoder.parameters(), lr=lr, betas=(0.9, 0.98), weight_decay=0.05)
    bar = None
    if progress:
        bar = progress_bar(
            total=steps if seconds is None else int(seconds),
            unit="step" if seconds is None else "s",
            desc="semantic encoder",
        )
    if pairs is not None and shape_views > 0:
        raise ValueError("shape_views are world renders: not with given pairs")

    def retrieval(n: int) -> dict | None:
        if pairs is None:
            return evaluate_retrieval(encoder, n=n)
        return retrieval_in_pools(encoder, given_pools(eval_pairs[:n])) if eval_pairs else None

    before = retrieval(200)
    trained, first_loss, last_loss = 0.0, None, None
    for step in itertools.count():
        frac = max(trained / seconds if seconds else 0.0, step / steps if steps else 0.0)
        if frac >= 1.0:
            break
        t0 = time.perf_counter()
        for g in opt.param_groups:
            g["lr"] = _lr_at(frac, lr, 0.1)
        if pairs is None:
            res = config.resolution
            images, texts = caption_batch(rng, batch_size, res, shape_views=shape_views)
        else:
            batch = [next(pairs) for _ in range(batch_size)]
            images, texts = to_tensor(np.stack([im for im, _ in batch])), [t for _, t in batch]
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
    if pairs is None:
        metrics = {
            "retrieval": evaluate_retrieval(encoder, n=eval_n),
            # scenes holding a colour-shape pair no training image had (shared/WORLD.md)
            "retrieval_heldout": evaluate_retrieval(encoder, n=eval_n, heldout="only"),
            "shape_probe": evaluate_shape_probe(encoder),
        }
    else:
        metrics = {"data": "given", "pairs": step * batch_size, "retrieval": retrieval(eval_n)}
    metrics |= {
        "retrieval_untrained": before,
        "shape_views": shape_views,
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
    ap.add_argument(
        "--shape-views",
        type=float,
        default=0.0,
        help="share of each batch shown as colour-free views (black ink, shapes-only caption)",
    )
    args = ap.parse_args(argv)
    m = train_semantic(
        SemanticConfig(loss=args.loss),
        args.out,
        seconds=args.seconds,
        steps=args.steps,
        batch_size=args.batch_size,
        lr=args.lr,
        seed=args.seed,
        shape_views=args.shape_views,
    )
    r, h, p = m["retrieval"], m["retrieval_heldout"], m["shape_probe"]
    print(
        f"{m['steps']} steps in {m['seconds']:.0f} s; retrieval in pools of {r['pool']}: "
        f"image->text {r['image_to_text']:.3f}, text->image {r['text_to_image']:.3f} "
        f"(held-out pairs {h['image_to_text']:.3f} / {h['text_to_image']:.3f}; chance "
        f"{r['chance']:.3f}); shape probe seen pairs {p['seen']:.3f}, held-out pairs "
        f"{p['heldout']:.3f} (chance {p['chance']:.2f})"
    )


if __name__ == "__main__":
    main()
