"""Image-generation throughput: the continuous recipes (Transfusion on pixels and VAE latents,
JanusFlow and the MAR head on VAE latents) vs the AR recipe (chameleon), all at the `small`
preset, timed in the same process.

Run (from the repo root; about a minute on one thread):

    OMP_NUM_THREADS=1 PYTHONPATH=src .venv/bin/python benchmarks/bench_gen_speed.py \
        --images 64 --steps 8 20

Weights are random: the cost of generating an image does not depend on them (AR always draws
64 codes; a flow sampler always runs its steps; MAR always runs head.mar_steps backbone passes
and head.head_steps head steps). Prints images/s and the ratio to AR. All use CFG (a
conditional and an unconditional row per image) and a KV cache for the prompt.
Results: BENCHMARKS.md, "Continuous family".
"""

from __future__ import annotations

import argparse
import time
from dataclasses import replace

import torch

from unimm.pipeline import world_texts
from unimm.presets import get_run_config
from unimm.recipes.base import SamplingConfig
from unimm.recipes.chameleon import ChameleonModel
from unimm.recipes.diffusion_head import DiffusionHeadModel
from unimm.recipes.janusflow import JanusFlowModel
from unimm.recipes.parts import Parts
from unimm.recipes.transfusion import TransfusionModel
from unimm.tokenizers.pixel_patches import PixelPatches
from unimm.tokenizers.text import TextTokenizer
from unimm.tokenizers.vae import VAETokenizer
from unimm.tokenizers.vq import VQTokenizer

PROMPTS = ["a red circle left of a blue square", "two green triangles", "a yellow diamond"]


def images_per_s(model, n: int, batch: int) -> float:
    prompts = [PROMPTS[i % len(PROMPTS)] for i in range(n)]
    model.generate_images(prompts[:2], 1, 0, SamplingConfig(), batch)  # warm-up
    t0 = time.perf_counter()
    model.generate_images(prompts, 1, 0, SamplingConfig(), batch)
    return n / (time.perf_counter() - t0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--images", type=int, default=64)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--steps", type=int, nargs="+", default=[8, 20])
    args = ap.parse_args()
    torch.manual_seed(0)
    cfg = get_run_config("small")
    text = TextTokenizer.train(world_texts(2000, 0), cfg.text_vocab_size)
    vq = VQTokenizer(cfg.vq).eval()
    ar_cfg = replace(cfg, model=replace(cfg.model, vocab_size=text.vocab_size + vq.codebook_size))
    ar = ChameleonModel(Parts(ar_cfg, text, vq)).eval()
    base = images_per_s(ar, args.images, args.batch)
    print(f"threads {torch.get_num_threads()}, {args.images} images, batch {args.batch}, cfg 3")
    print(f"{'model':34s} {'img/s':>7s} {'vs AR':>6s}")
    print(f"{'chameleon AR (64 codes, KV cache)':34s} {base:7.2f} {1.0:6.2f}x")
    tf_cfg = replace(
        cfg, recipe="transfusion", model=replace(cfg.model, vocab_size=text.vocab_size)
    )
    tokenizers = {
        "pixels 8x8 patches": PixelPatches(cfg.patches),
        "VAE 8x8x4": VAETokenizer(cfg.vae),
    }
    for name, tok in tokenizers.items():
        for steps in args.steps:
            run = replace(tf_cfg, flow=replace(tf_cfg.flow, num_steps=steps))
            model = TransfusionModel(Parts(run, text, tok.eval())).eval()
            rate = images_per_s(model, args.images, args.batch)
            label = f"transfusion {name}, {steps} Euler"
            print(f"{label:34s} {rate:7.2f} {rate / base:6.2f}x", flush=True)
    vae = tokenizers["VAE 8x8x4"]
    for steps in args.steps:
        run = replace(tf_cfg, recipe="janusflow", flow=replace(tf_cfg.flow, num_steps=steps))
        rate = images_per_s(JanusFlowModel(Parts(run, text, vae)).eval(), args.images, args.batch)
        label = f"janusflow VAE 8x8x4, {steps} Euler"
        print(f"{label:34s} {rate:7.2f} {rate / base:6.2f}x", flush=True)
    run = replace(tf_cfg, recipe="mar")
    rate = images_per_s(DiffusionHeadModel(Parts(run, text, vae)).eval(), args.images, args.batch)
    head = run.head
    label = f"mar VAE, {head.mar_steps} passes x {head.head_steps} head"
    print(f"{label:34s} {rate:7.2f} {rate / base:6.2f}x", flush=True)


if __name__ == "__main__":
    main()
