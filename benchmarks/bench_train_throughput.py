"""Training-step throughput of the backbone against the CPU's matmul rate and HF Llama.

Run (from the repo root; needs `.venv/bin/pip install transformers` for the HF column):

    PYTHONPATH=src .venv/bin/python benchmarks/bench_train_throughput.py
    PYTHONPATH=src .venv/bin/python benchmarks/bench_train_throughput.py --batch 64 --seq 96

Everything is measured in this one process, with torch.set_num_threads(--threads):
1. the GEMM rate: GFLOP/s of a square fp32 (and bf16) matmul of size --gemm (default 1024,
   comparable to the model's largest GEMMs of about B*T x 256 x 704);
2. one training step (forward, next-token cross-entropy, backward, AdamW step) of the "small"
   preset at batch --batch and length --seq, in fp32 and under bf16 autocast;
3. the same step for transformers' LlamaForCausalLM built from an equivalent LlamaConfig
   (random weights, SDPA attention, no download).
Rounds alternate between the models so background load hits all alike; times are medians.

Model FLOP utilisation (MFU) = model FLOPs per step / step time / GEMM rate, with
    FLOPs per step = tokens * (6 * N + 6 * D * V + 12 * L * D * T)
N = non-embedding parameters, 6 * D * V = the output head (forward + backward), 12 * L * D * T =
attention scores and values (PaLM, arXiv 2204.02311, appendix B; it counts the full T x T
square, though a causal kernel may skip half). bf16 MFU is against the bf16 GEMM rate.

Prints a table: step ms, tokens/s, MFU, and each model's speed relative to HF Llama fp32.
Targets: our fp32 MFU >= 60 %, ours / HF >= 1.0x.
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import time
from collections.abc import Callable

import torch

from unimm.model import MODEL_PRESETS, ModelConfig, Transformer
from unimm.paradigms.autoregressive import next_token_loss


def gemm_rate(n: int, dtype: torch.dtype, repeats: int = 10) -> float:
    a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
    for _ in range(3):
        a @ b
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        a @ b
        times.append(time.perf_counter() - t0)
    return 2 * n**3 / statistics.median(times)


def step_flops(config: ModelConfig, n_params: int, batch: int, seq: int) -> float:
    D, L, V = config.dim, config.n_layers, config.vocab_size
    return batch * seq * (6 * n_params + 6 * D * V + 12 * L * D * seq)


def make_ours(config: ModelConfig, compile_model: bool) -> tuple[torch.nn.Module, Callable]:
    model = Transformer(config)
    if compile_model:
        # Regional compilation (torchtitan's habit): every block has the same code, so one
        # compiled graph serves all layers and compile time does not grow with depth.
        for block in model.layers:
            block.compile()

    def loss_fn(tokens: torch.Tensor) -> torch.Tensor:
        logits = model(tokens[:, :-1])  # (B, T, V): inputs and shifted targets, like HF's labels
        return next_token_loss(logits, tokens[:, 1:])

    return model, loss_fn


def make_hf(config: ModelConfig) -> tuple[torch.nn.Module, Callable]:
    from transformers import LlamaConfig, LlamaForCausalLM

    hf_config = LlamaConfig(
        vocab_size=config.vocab_size,
        hidden_size=config.dim,
        intermediate_size=config.hidden_dim,
        num_hidden_layers=config.n_layers,
        num_attention_heads=config.n_heads,
        num_key_value_heads=config.n_kv_heads,
        max_position_embeddings=config.max_seq_len,
        rms_norm_eps=config.norm_eps,
        rope_theta=config.rope_theta,
        tie_word_embeddings=config.tie_embeddings,
        attn_implementation="sdpa",
    )
    model = LlamaForCausalLM(hf_config)

    def loss_fn(tokens: torch.Tensor) -> torch.Tensor:
        # HF shifts internally: logits of tokens[:, :T] against tokens[:, 1:T + 1].
        return model(input_ids=tokens[:, :-1], labels=tokens[:, :-1]).loss

    return model, loss_fn


def make_step(model: torch.nn.Module, loss_fn: Callable, bf16: bool) -> Callable:
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)

    def step(tokens: torch.Tensor) -> float:
        ctx = torch.autocast("cpu", dtype=torch.bfloat16) if bf16 else contextlib.nullcontext()
        with ctx:
            loss = loss_fn(tokens)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        return loss.item()

    return step


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--seq", type=int, default=128)
    p.add_argument("--vocab", type=int, default=4096)
    p.add_argument("--preset", default="small")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--gemm", type=int, default=1024)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--steps", type=int, default=3, help="timed steps per model per round")
    p.add_argument("--compile", action="store_true", help="also time torch.compile(ours)")
    p.add_argument("--no-hf", action="store_true")
    args = p.parse_args()

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    config = MODEL_PRESETS[args.preset](vocab_size=args.vocab, max_seq_len=args.seq + 1)
    tokens = torch.randint(0, args.vocab, (args.batch, args.seq + 1))

    runs: dict[str, Callable] = {}
    model, loss_fn = make_ours(config, compile_model=False)
    n_params = model.num_params()
    runs["ours fp32"] = make_step(model, loss_fn, bf16=False)
    runs["ours bf16"] = make_step(*make_ours(config, compile_model=False), bf16=True)
    if args.compile:
        runs["ours fp32 compiled"] = make_step(*make_ours(config, compile_model=True), bf16=False)
        runs["ours bf16 compiled"] = make_step(*make_ours(config, compile_model=True), bf16=True)
    if not args.no_hf:
        hf_model, hf_loss = make_hf(config)
        assert sum(p.numel() for p in hf_model.parameters()) == model.num_params(False)
        runs["HF Llama fp32"] = make_step(hf_model, hf_loss, bf16=False)
        runs["HF Llama bf16"] = make_step(*make_hf(config), bf16=True)

    for step in runs.values():
        for _ in range(args.warmup):
            step(tokens)
    times: dict[str, list[float]] = {name: [] for name in runs}
    rates = {"fp32": [], "bf16": []}
    for _ in range(args.rounds):
        rates["fp32"].append(gemm_rate(args.gemm, torch.float32))
        rates["bf16"].append(gemm_rate(args.gemm, torch.bfloat16))
        for name, step in runs.items():
            for _ in range(args.steps):
                t0 = time.perf_counter()
                step(tokens)
                times[name].append(time.perf_counter() - t0)
    gemm = {k: statistics.median(v) for k, v in rates.items()}

    flops = step_flops(config, n_params, args.batch, args.seq)
    n_tok = args.batch * args.seq
    print(
        f"preset {args.preset}: dim {config.dim}, {config.n_layers} layers, {config.n_heads} "
        f"heads / {config.n_kv_heads} kv, hidden {config.hidden_dim}, vocab {config.vocab_size}; "
        f"{n_params / 1e6:.2f}M non-embedding params; batch {args.batch} x seq {args.seq}; "
        f"{args.threads} threads"
    )
    print(
        f"GEMM {args.gemm}^3: fp32 {gemm['fp32'] / 1e9:.0f} GFLOP/s, "
        f"bf16 {gemm['bf16'] / 1e9:.0f} GFLOP/s; model {flops / 1e9:.1f} GFLOP per step"
    )
    ref = statistics.median(times["HF Llama fp32"]) if "HF Llama fp32" in times else None
    print(f"{'run':<22}{'step ms':>9}{'tokens/s':>10}{'MFU':>7}{'vs HF fp32':>12}")
    for name, ts in times.items():
        t = statistics.median(ts)
        rate = gemm["bf16" if "bf16" in name else "fp32"]
        vs = f"{ref / t:.2f}x" if ref else "-"
        print(f"{name:<22}{t * 1e3:>9.0f}{n_tok / t:>10.0f}{flops / t / rate:>7.0%}{vs:>12}")


if __name__ == "__main__":
    main()
