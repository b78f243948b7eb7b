"""The training loop: one visible loop with "every N steps: log / save" blocks (nanoGPT habit).

Model code knows nothing of this loop; any UnifiedModel trains here on any stream of Samples.
"""

from __future__ import annotations

import json
import resource
import time
from collections.abc import Callable, Iterator
from itertools import islice
from pathlib import Path

import torch
from tqdm.auto import tqdm

from unimm.checkpoint import write_json
from unimm.config import to_dict
from unimm.data.sample import Sample
from unimm.recipes.base import UnifiedModel
from unimm.train.config import TrainConfig
from unimm.train.schedule import lr_at

LOG_FILE = "train_log.jsonl"
STATE_FILE = "trainer_state.json"


def peak_rss_mb() -> float:
    """Peak resident memory of this process so far (Linux reports ru_maxrss in KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def make_optimizer(model: torch.nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer:
    params = [p for p in model.parameters() if p.requires_grad]
    # Weight decay on matrices only; norms' gains and biases are left alone (GPT-2 habit).
    decay = [p for p in params if p.ndim >= 2]
    rest = [p for p in params if p.ndim < 2]
    groups = [
        {"params": decay, "weight_decay": cfg.weight_decay},
        {"params": rest, "weight_decay": 0.0},
    ]
    return torch.optim.AdamW(groups, lr=cfg.lr, betas=(cfg.beta1, cfg.beta2), fused=False)


def train_model(
    model: UnifiedModel,
    cfg: TrainConfig,
    samples: Iterator[Sample],
    out_dir: str | Path,
    *,
    progress: bool = True,
    on_save: Callable[[int], None] | None = None,
) -> list[dict]:
    """Train `model` on `samples` for cfg.steps (or until cfg.max_seconds); returns the log rows.

    Writes out_dir/train_log.jsonl as it goes; on_save(step) is called every cfg.save_every
    steps and at the end, so the caller decides where checkpoints go.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(cfg.seed)
    gen = torch.Generator().manual_seed(cfg.seed)
    opt = make_optimizer(model, cfg)
    autocast = torch.autocast("cpu", dtype=torch.bfloat16, enabled=cfg.precision == "bf16")
    model.train()
    rows: list[dict] = []
    log_path = out_dir / LOG_FILE
    log_path.write_text("")
    start = time.perf_counter()
    bar = tqdm(total=cfg.steps, desc="train", disable=not progress, dynamic_ncols=True)
    tokens_seen = 0.0
    done = 0
    for step in range(1, cfg.steps + 1):
        elapsed = time.perf_counter() - start
        if cfg.max_seconds is not None and elapsed >= cfg.max_seconds:
            break
        # With a time budget the schedule follows whichever budget runs out first, so the
        # learning rate has annealed when the clock stops.
        progress_step = step - 1
        if cfg.max_seconds:
            progress_step = max(progress_step, cfg.steps * elapsed / cfg.max_seconds)
        lr = lr_at(progress_step, cfg.steps, cfg.warmup_steps, cfg.lr, cfg.min_lr_ratio)
        for g in opt.param_groups:
            g["lr"] = lr
        batch = list(islice(samples, cfg.batch_size))
        with autocast:
            out = model.loss(batch, gen)
        loss = out["loss"]
        if not torch.isfinite(loss):
            raise FloatingPointError(f"loss became {loss.item()} at step {step}; lower train.lr")
        loss.backward()
        grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        opt.step()
        opt.zero_grad(set_to_none=True)
        tokens_seen += float(out.get("tokens", 0.0))
        if step % cfg.log_every == 0 or step == 1 or step == cfg.steps:
            row = {"step": step, "lr": lr, "grad_norm": float(grad_norm)}
            row.update({k: float(v.detach()) for k, v in out.items() if k != "tokens"})
            row["seconds"] = time.perf_counter() - start
            row["tokens_per_s"] = tokens_seen / max(row["seconds"], 1e-9)
            row["peak_rss_mb"] = peak_rss_mb()
            rows.append(row)
            with log_path.open("a") as f:
                f.write(json.dumps(row) + "\n")
            bar.set_postfix(loss=f"{row['loss']:.3f}", lr=f"{lr:.1e}")
        bar.update(1)
        done = step
        if on_save and cfg.save_every and step % cfg.save_every == 0:
            on_save(step)
    bar.close()
    model.eval()
    seconds = time.perf_counter() - start
    write_json(
        out_dir / STATE_FILE,
        {
            "step": done,
            "seconds": seconds,
            "tokens": tokens_seen,
            "peak_rss_mb": peak_rss_mb(),
            "config": to_dict(cfg),
        },
    )
    if on_save:
        on_save(done)
    return rows
