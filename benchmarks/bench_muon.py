"""Muon's Newton-Schulz orthogonalisation, one matrix at a time against same-shape matrices
batched (unimm.train.muon.orthogonalise_all), in one process, rounds alternating.

    PYTHONPATH=src OMP_NUM_THREADS=1 python benchmarks/bench_muon.py
    PYTHONPATH=src OMP_NUM_THREADS=2 python benchmarks/bench_muon.py --preset base

The matrices are the shapes of a model preset's transformer blocks (what train.optimizer=muon
orthogonalises every step). Prints the median time of each and the ratio one-at-a-time /
batched (> 1: batching is faster), and checks the two agree.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from unimm.model import MODEL_PRESETS
from unimm.model.transformer import Transformer
from unimm.train.muon import orthogonalise, orthogonalise_all


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--preset", default="small", choices=sorted(MODEL_PRESETS))
    ap.add_argument("--rounds", type=int, default=10)
    args = ap.parse_args()
    torch.manual_seed(0)
    model = Transformer(MODEL_PRESETS[args.preset](vocab_size=1024))
    updates = [
        torch.randn(p.shape) for n, p in model.named_parameters() if p.ndim == 2 and "layers." in n
    ]
    ways = {
        "one at a time": lambda: [orthogonalise(u) for u in updates],
        "batched": lambda: orthogonalise_all(updates),
    }
    times: dict[str, list[float]] = {name: [] for name in ways}
    for r in range(args.rounds + 1):
        for name, way in ways.items():
            start = time.perf_counter()
            way()
            if r:  # round 0 warms up
                times[name].append(time.perf_counter() - start)
    for a, b in zip(ways["one at a time"](), ways["batched"]()):
        torch.testing.assert_close(a.float(), b.float(), rtol=0, atol=1e-2)
    shapes = sorted({tuple(u.shape) for u in updates})
    threads = torch.get_num_threads()
    print(f"{args.preset}: {len(updates)} matrices of shapes {shapes}, {threads} thread(s)")
    med = {name: statistics.median(t) * 1000 for name, t in times.items()}
    for name, ms in med.items():
        print(f"  {name:14s} {ms:7.1f} ms")
    print(f"  one at a time / batched: {med['one at a time'] / med['batched']:.2f}x")


if __name__ == "__main__":
    main()
