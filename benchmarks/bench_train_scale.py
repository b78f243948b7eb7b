"""Throughput of the real training loop (unimm.train.trainer.train_model) under the scale options:
1 vs 2 processes (DDP over gloo), fp32 vs bf16 autocast, eager vs torch.compile.

Run (from the repo root):

    PYTHONPATH=src OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_train_scale.py
    PYTHONPATH=src OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_train_scale.py \
        --preset small --steps 12

Every configuration trains the same model (the run preset's backbone, random tokenizers) on the
world stream at the same global batch, one thread per process. Throughput is measured after
the first two steps (process-group start, compilation): tokens per second between step 3
and the last step, from each run's train_log.jsonl. Ratios are against the 1-process fp32 eager
run of this same invocation. 2 processes on a 2-core machine shared with other jobs compete
for cores: read that row as an upper bound on overhead, not as a scaling figure.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
from dataclasses import replace
from pathlib import Path

# compile is explicit in every row: the small and reference presets compile by default.
CONFIGS = [
    ("1 proc fp32 eager", 1, ["precision=fp32", "compile=false"]),
    ("1 proc bf16 eager", 1, ["precision=bf16", "compile=false"]),
    ("1 proc fp32 compile", 1, ["precision=fp32", "compile=true"]),
    ("1 proc bf16 compile", 1, ["precision=bf16", "compile=true"]),
    ("2 proc fp32 DDP", 2, ["precision=fp32", "parallel=ddp", "compile=false"]),
    ("2 proc bf16 DDP compile", 2, ["precision=bf16", "parallel=ddp", "compile=true"]),
    (
        "2 proc bf16 FSDP2",
        2,
        # AdamW first: Muon (the small preset's optimizer) needs whole matrices, not shards
        ["optimizer=adamw", "precision=bf16", "parallel=fsdp2", "compile=false"],
    ),
]


def worker(out: str, preset: str, kv: list[str]) -> None:
    import torch

    from unimm.presets import get_run_config
    from unimm.recipes.chameleon import ChameleonModel
    from unimm.recipes.parts import Parts
    from unimm.tokenizers.text import TextTokenizer
    from unimm.tokenizers.vq import VQTokenizer
    from unimm.train.trainer import train_model
    from unimm.world.tasks import world_samples

    torch.set_num_threads(1)
    torch.manual_seed(0)
    cfg = get_run_config(preset, [f"train.{x}" for x in kv])
    corpus = ["a red circle left of a blue square", "what color is the triangle?", "green"] * 50
    text = TextTokenizer.train(corpus, cfg.text_vocab_size)
    image = VQTokenizer(cfg.vq).eval().requires_grad_(False)
    cfg = replace(cfg, model=replace(cfg.model, vocab_size=text.vocab_size + image.codebook_size))
    model = ChameleonModel(Parts(cfg, text, image))
    train = replace(cfg.train, log_every=1, max_seconds=None, save_every=0)
    tasks = train.tasks
    train_model(model, train, lambda s: world_samples("train", 0, tasks, start=s), out,
                progress=False)  # fmt: skip


def rate(run: Path) -> float:
    rows = [json.loads(x) for x in (run / "train_log.jsonl").read_text().splitlines()]
    a, b = rows[2], rows[-1]  # skip steps 1-2: start-up and compilation
    tokens = b["tokens_per_s"] * b["seconds"] - a["tokens_per_s"] * a["seconds"]
    return tokens / (b["seconds"] - a["seconds"])


def launch(nproc: int, out: Path, preset: str, kv: list[str]) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    procs = []
    for rank in range(nproc):
        env = {**os.environ, "OMP_NUM_THREADS": "1"}
        if nproc > 1:
            env.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(nproc),
                       MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))  # fmt: skip
        cmd = [sys.executable, __file__, "--worker", str(out), "--preset", preset, *kv]
        procs.append(subprocess.Popen(cmd, env=env))
    if any(p.wait() != 0 for p in procs):
        raise SystemExit(f"a worker failed for {kv}")


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--preset", default="tiny")
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--batch", type=int, default=16, help="global batch")
    p.add_argument("--worker")
    args, rest = p.parse_known_args()
    if args.worker:
        return worker(args.worker, args.preset, rest)
    common = [f"steps={args.steps}", f"batch_size={args.batch}", "warmup_steps=1"]
    print(f"preset {args.preset}, global batch {args.batch}, {args.steps} steps, 1 thread/proc")
    base = None
    with tempfile.TemporaryDirectory() as tmp:
        for name, nproc, kv in CONFIGS:
            out = Path(tmp) / name.replace(" ", "_")
            launch(nproc, out, args.preset, common + kv)
            r = rate(out)
            base = base or r
            print(f"{name:22s} {r:9.0f} tokens/s  {r / base:5.2f}x", flush=True)


if __name__ == "__main__":
    main()
