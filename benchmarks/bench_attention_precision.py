"""The bf16 training step with attention upcast to fp32 for the backward against plain bf16 SDPA
(unimm.model.attention.UPCAST_CPU_BF16_ATTENTION_GRAD), in one process, rounds alternating.

    PYTHONPATH=src OMP_NUM_THREADS=1 python benchmarks/bench_attention_precision.py
    PYTHONPATH=src OMP_NUM_THREADS=1 python benchmarks/bench_attention_precision.py --seq 256

Prints the median step time of each and the ratio plain / upcast (> 1: the upcast is faster).
The model is the "small" preset backbone at --batch x --seq (the quickstart's batches are 48
sequences of about 80-100 tokens), bf16 autocast, AdamW.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script from anywhere
from benchmarks.bench_train_throughput import make_ours, make_step  # noqa: E402

from unimm.model import MODEL_PRESETS, attention  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--batch", type=int, default=48)
    ap.add_argument("--seq", type=int, default=96)
    ap.add_argument("--rounds", type=int, default=6)
    args = ap.parse_args()
    torch.manual_seed(0)
    config = MODEL_PRESETS["small"](vocab_size=4608)
    model, loss_fn = make_ours(config, compile_model=False)
    step = make_step(model, loss_fn, bf16=True)
    tokens = torch.randint(0, config.vocab_size, (args.batch, args.seq + 1))
    times: dict[bool, list[float]] = {True: [], False: []}
    for r in range(args.rounds + 1):
        for upcast in (True, False):
            attention.UPCAST_CPU_BF16_ATTENTION_GRAD = upcast
            t0 = time.perf_counter()
            step(tokens)
            if r:  # the first round warms up
                times[upcast].append(time.perf_counter() - t0)
    attention.UPCAST_CPU_BF16_ATTENTION_GRAD = True
    up, plain = statistics.median(times[True]), statistics.median(times[False])
    print(f"batch {args.batch} x seq {args.seq}, {torch.get_num_threads()} threads, bf16 autocast")
    print(f"attention upcast to fp32: {up * 1000:.0f} ms/step")
    print(f"plain bf16 attention:     {plain * 1000:.0f} ms/step")
    print(f"ratio plain / upcast:     {plain / up:.2f}x")


if __name__ == "__main__":
    main()
