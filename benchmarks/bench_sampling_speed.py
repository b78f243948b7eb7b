"""Images/s of each discrete recipe's image sampler against the AR recipe with its KV cache.

Run (from the repo root):

    PYTHONPATH=src .venv/bin/python benchmarks/bench_sampling_speed.py
    PYTHONPATH=src .venv/bin/python benchmarks/bench_sampling_speed.py --batches 1 16 --steps 8

Every model is the "small" run preset (same backbone, same 8x8-code image tokenizer, random
weights: speed does not depend on them) generating from the same caption prompts with
classifier-free guidance (two rows per image), through the public `generate_images` API, so the
timings include prompt encoding and VQ decoding. The baseline is `chameleon` (AR, 64 cached
decoding steps); `showo` (omni-attention) and `mmada` (full attention) run MaskGIT-style masked
diffusion for the given numbers of steps, re-reading the whole sequence each step (no KV cache:
image tokens attend to each other bidirectionally). Prints images/s and the ratio to the AR
baseline measured in the same process (best of --repeats runs).
"""

from __future__ import annotations

import argparse
import time
from dataclasses import replace

import torch

from unimm.pipeline import world_texts
from unimm.presets import get_run_config
from unimm.recipes.base import SamplingConfig
from unimm.recipes.parts import Parts
from unimm.recipes.registry import build_model
from unimm.tokenizers.text import TextTokenizer
from unimm.tokenizers.vq import VQTokenizer

PROMPTS = [
    "a red circle left of a blue square",
    "three green triangles",
    "a purple diamond above an orange circle",
    "a yellow square",
]


def make(recipe: str, text: TextTokenizer, image: VQTokenizer):
    cfg = get_run_config("small", [f"recipe={recipe}"])
    cfg = replace(cfg, model=replace(cfg.model, vocab_size=text.vocab_size + image.codebook_size))
    torch.manual_seed(0)
    return build_model(Parts(cfg, text, image)).eval()


def images_per_second(model, batch: int, sampling: SamplingConfig, repeats: int) -> float:
    prompts = [PROMPTS[i % len(PROMPTS)] for i in range(batch)]
    best = float("inf")
    for r in range(repeats):
        t0 = time.perf_counter()
        model.generate_images(prompts, 1, seed=r, sampling=sampling, batch_size=batch)
        best = min(best, time.perf_counter() - t0)
    return batch / best


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--batches", type=int, nargs="+", default=[1, 16])
    p.add_argument("--steps", type=int, nargs="+", default=[4, 8, 16, 32])
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=None)
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    cfg = get_run_config("small")
    text = TextTokenizer.train(world_texts(2000, 0), cfg.text_vocab_size)
    image = VQTokenizer(cfg.vq).eval()
    models = {r: make(r, text, image) for r in ("chameleon", "showo", "mmada")}
    print(f"threads {torch.get_num_threads()}, best of {args.repeats}")
    print(f"{'recipe':<10} {'steps':>5} {'batch':>5} {'images/s':>9} {'vs AR':>6}")
    for batch in args.batches:
        base = images_per_second(models["chameleon"], batch, SamplingConfig(), args.repeats)
        print(f"{'chameleon':<10} {64:>5} {batch:>5} {base:>9.2f} {1.0:>6.2f}")
        for recipe in ("showo", "mmada"):
            for steps in args.steps:
                s = SamplingConfig(steps=steps)
                ips = images_per_second(models[recipe], batch, s, args.repeats)
                print(f"{recipe:<10} {steps:>5} {batch:>5} {ips:>9.2f} {ips / base:>6.2f}")


if __name__ == "__main__":
    main()
