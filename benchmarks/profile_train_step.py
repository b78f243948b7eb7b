"""Where a training step's time goes: torch.profiler over the backbone's step, top operators.

Run (from the repo root):

    OMP_NUM_THREADS=1 PYTHONPATH=src .venv/bin/python benchmarks/profile_train_step.py --threads 1
    ... --precision fp32 --top 25

Two steps can be profiled, each after warm-up steps:
- `--what backbone` (default): bench_train_throughput.py's step (the "small" backbone, batch 32 x
  seq 128, vocabulary 4096, next-token cross-entropy, AdamW);
- `--what recipe`: the quickstart's own step: `--preset`'s recipe and optimizer (Muon) on its
  world batches (batch 48, text and codes in one 1024-id vocabulary), with an untrained image
  tokenizer (its weights change what the codes are, not how long a step takes).
Prints the operators by self CPU time, and the share of the step spent in matrix multiplies
(mm/bmm/addmm and SDPA's kernels) against everything else.
"""

from __future__ import annotations

import argparse
import itertools
import sys
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script from anywhere
from benchmarks.bench_train_throughput import make_ours, make_step  # noqa: E402

from unimm.model import MODEL_PRESETS  # noqa: E402

# Operators whose self time is matrix-multiply work (their kernels do the GEMMs).
MATMUL_OPS = ("aten::mm", "aten::bmm", "aten::addmm", "aten::_scaled_dot_product", "aten::baddbmm")


def recipe_step(preset: str, precision: str, compile_blocks: bool) -> Callable[[int], None]:
    """step(i): one optimizer step of `preset`'s recipe on world batch i, as the trainer runs
    it (loss, backward, clipping, the preset's optimizer)."""
    from unimm.data import streams
    from unimm.data.readers import BadSamples
    from unimm.presets import get_run_config
    from unimm.recipes.parts import Parts
    from unimm.recipes.registry import build_model
    from unimm.tokenizers.text import TextTokenizer
    from unimm.tokenizers.vq import VQTokenizer
    from unimm.train import distributed as du
    from unimm.train.run_data import RunData
    from unimm.train.trainer import make_optimizer

    cfg = get_run_config(preset, [f"train.precision={precision}"])
    res = cfg.vq.resolution
    text = TextTokenizer.train(streams.texts(cfg.train.data, 2000, 0, res), cfg.text_vocab_size)
    image = VQTokenizer(cfg.vq).eval().requires_grad_(False)
    vocab = text.vocab_size + image.codebook_size
    cfg = replace(cfg, model=replace(cfg.model, vocab_size=vocab))
    model = build_model(Parts(cfg, text, image)).train()
    step_module = du.parallelize(model, replace(cfg.train, compile=compile_blocks), du.Dist())
    opt = make_optimizer(step_module, cfg.train)
    source = RunData(cfg, BadSamples()).source(res)
    autocast = du.autocast(torch.device("cpu"), precision)
    B = cfg.train.batch_size

    def step(i: int) -> None:
        batch = list(itertools.islice(source(i * B), B))
        with autocast:
            out = step_module(batch, torch.Generator().manual_seed(i))
        out["loss"].backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.train.grad_clip)
        opt.step()
        opt.zero_grad(set_to_none=True)

    return step


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--what", choices=["backbone", "recipe"], default="backbone")
    p.add_argument("--preset", default="small", help="model preset (backbone) or run preset")
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--seq", type=int, default=128)
    p.add_argument("--vocab", type=int, default=4096)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--precision", choices=["fp32", "bf16"], default="bf16")
    p.add_argument("--compile", action="store_true")
    p.add_argument("--steps", type=int, default=3, help="profiled steps (after 2 warm-up)")
    p.add_argument("--top", type=int, default=20)
    args = p.parse_args()

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    if args.what == "backbone":
        config = MODEL_PRESETS[args.preset](vocab_size=args.vocab, max_seq_len=args.seq + 1)
        tokens = torch.randint(0, args.vocab, (args.batch, args.seq + 1))
        model_step = make_step(*make_ours(config, args.compile), bf16=args.precision == "bf16")
        step = lambda i: model_step(tokens)  # noqa: E731
    else:
        step = recipe_step(args.preset, args.precision, args.compile)
    for i in range(2):
        step(i)
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for i in range(args.steps):
            step(2 + i)
    events = prof.key_averages()
    total = sum(e.self_cpu_time_total for e in events)
    matmul = sum(e.self_cpu_time_total for e in events if e.key.startswith(MATMUL_OPS))
    print(
        f"{args.what} {args.preset}, {args.precision}{' compiled' if args.compile else ''}, "
        f"{args.threads} thread(s): {total / args.steps / 1e3:.0f} ms per step (profiled), "
        f"matrix multiplies {matmul / total:.0%}, everything else {1 - matmul / total:.0%}"
    )
    print(events.table(sort_by="self_cpu_time_total", row_limit=args.top))


if __name__ == "__main__":
    main()
