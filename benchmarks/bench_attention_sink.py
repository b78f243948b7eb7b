"""The training step with an attention sink of either kind (ModelConfig.attention_sink_kind)
against the same backbone without one, in one process, rounds alternating.

    PYTHONPATH=src OMP_NUM_THREADS=1 python benchmarks/bench_attention_sink.py
    PYTHONPATH=src OMP_NUM_THREADS=1 python benchmarks/bench_attention_sink.py --compile

Prints the median step time of each and its ratio to the plain step (< 1.1: the sink costs
under a tenth of a step). The model is the "small" preset backbone (QK-norm on) at --batch x
--seq (the quickstart's batches are 48 sequences of about 80-100 tokens), bf16 autocast, AdamW;
--compile compiles each block as the quickstart does.
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

from unimm.model import MODEL_PRESETS  # noqa: E402

KINDS = {
    "none": {},
    "logit": {"attention_sink": True},
    "key": {"attention_sink": True, "attention_sink_kind": "key"},
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--batch", type=int, default=48)
    ap.add_argument("--seq", type=int, default=96)
    ap.add_argument("--rounds", type=int, default=6)
    ap.add_argument("--compile", action="store_true")
    args = ap.parse_args()
    steps, times = {}, {kind: [] for kind in KINDS}
    for kind, options in KINDS.items():
        torch.manual_seed(0)
        config = MODEL_PRESETS["small"](vocab_size=4608, qk_norm=True, **options)
        model, loss_fn = make_ours(config, compile_model=args.compile)
        steps[kind] = make_step(model, loss_fn, bf16=True)
    tokens = torch.randint(0, 4608, (args.batch, args.seq + 1))
    for r in range(args.rounds + 2):
        for kind, step in steps.items():
            t0 = time.perf_counter()
            step(tokens)
            if r >= 2:  # two rounds warm up (and compile)
                times[kind].append(time.perf_counter() - t0)
    print(
        f"batch {args.batch} x seq {args.seq}, {torch.get_num_threads()} threads, bf16 autocast"
        f"{', compiled blocks' if args.compile else ''}"
    )
    plain = statistics.median(times["none"])
    for kind, t in times.items():
        print(
            f"sink {kind:>5}: {statistics.median(t) * 1000:5.0f} ms/step, "
            f"{statistics.median(t) / plain:.2f}x the plain step"
        )


if __name__ == "__main__":
    main()
