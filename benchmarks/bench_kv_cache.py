"""Image generation speed with the KV cache against recomputing the sequence every step.

Run (from the repo root):

    PYTHONPATH=src .venv/bin/python benchmarks/bench_kv_cache.py
    PYTHONPATH=src .venv/bin/python benchmarks/bench_kv_cache.py --tokens 64 256 --batches 1 16

For each image length (tokens per image: 64 = an 8x8 code grid, 256 = 16x16) and batch size,
`unimm.paradigms.autoregressive.generate` samples exactly that many codes (allowed_ids = the
image-code range, top-k 50) after a --prompt-token caption, with use_cache=True and False,
on the "small" preset with random weights (speed does not depend on the weights). Both paths
compute logits only at the last position, so the baseline is the honest "no cache" decoder.
Prints images/s for each path and the cached / recomputed ratio (target >= 10x at batch 16).
"""

from __future__ import annotations

import argparse
import time

import torch

from unimm.model import MODEL_PRESETS, Transformer
from unimm.paradigms.autoregressive import generate


def images_per_second(
    model: Transformer,
    batch: int,
    n_tokens: int,
    prompt_len: int,
    image_ids: range,
    use_cache: bool,
    repeats: int,
) -> float:
    prompts = [[(7 * i + j) % image_ids.start for j in range(prompt_len)] for i in range(batch)]
    best = float("inf")
    for r in range(repeats):
        g = torch.Generator().manual_seed(r)
        t0 = time.perf_counter()
        out = generate(
            model,
            prompts,
            n_tokens,
            top_k=50,
            allowed_ids=image_ids,
            generator=g,
            use_cache=use_cache,
        )
        best = min(best, time.perf_counter() - t0)
        assert all(len(o) == n_tokens for o in out)
    return batch / best


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--tokens", type=int, nargs="+", default=[64, 256])
    p.add_argument("--batches", type=int, nargs="+", default=[1, 16])
    p.add_argument("--prompt-tokens", type=int, default=24)
    p.add_argument("--vocab", type=int, default=4096)
    p.add_argument("--image-codes", type=int, default=1024)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--repeats", type=int, default=2, help="best of N for the cached path")
    args = p.parse_args()

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    config = MODEL_PRESETS["small"](vocab_size=args.vocab)
    model = Transformer(config).eval()
    image_ids = range(args.vocab - args.image_codes, args.vocab)
    generate(model, [[1, 2, 3]], 4)  # warm-up

    print(
        f"small preset ({model.num_params() / 1e6:.2f}M non-embedding params), vocab "
        f"{args.vocab}, {args.prompt_tokens}-token prompts, {args.threads} threads"
    )
    print(f"{'tokens':>6}{'batch':>6}{'cached img/s':>14}{'recompute img/s':>17}{'ratio':>8}")
    for n_tokens in args.tokens:
        for batch in args.batches:
            run = (model, batch, n_tokens, args.prompt_tokens, image_ids)
            cached = images_per_second(*run, use_cache=True, repeats=args.repeats)
            recomputed = images_per_second(*run, use_cache=False, repeats=1)
            print(
                f"{n_tokens:>6}{batch:>6}{cached:>14.2f}{recomputed:>17.3f}"
                f"{cached / recomputed:>7.1f}x"
            )


if __name__ == "__main__":
    main()
