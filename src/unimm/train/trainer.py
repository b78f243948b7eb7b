"""The training loop: one visible loop with "every N steps: log / save" blocks (nanoGPT habit).

Model code knows nothing of this loop; any UnifiedModel trains here on any stream of Samples.
Scale comes from outside (train/distributed.py): under torchrun each process takes a fixed
slice of every global batch, gradients are weighted by loss tokens so N processes at global
batch B follow the 1-process curve at batch B. Faults: training-state checkpoints
(train/state.py) make `resume=True` continue step for step after a kill -9; non-finite losses
skip the update and abort after cfg.max_nonfinite in a row.
"""

from __future__ import annotations

import json
import os
import resource
import time
from collections.abc import Callable, Iterator
from itertools import islice
from pathlib import Path

import torch

from unimm.checkpoint import save_tensors, write_json
from unimm.config import to_dict
from unimm.data.sample import Sample
from unimm.progress import progress_bar
from unimm.recipes.base import UnifiedModel
from unimm.train import distributed as du
from unimm.train import state as st
from unimm.train.config import TrainConfig
from unimm.train.ema import EMA
from unimm.train.muon import MuonAdamW
from unimm.train.schedule import (
    budget_spent,
    expected_steps,
    flop_parameters,
    lr_at,
    token_budget,
)

LOG_FILE = "train_log.jsonl"
EMA_FILE = "ema.safetensors"  # the run's moving average of its weights (train.ema_decay > 0)
STATE_FILE = "trainer_state.json"
SampleSource = Iterator[Sample] | Callable[[int], Iterator[Sample]]


def peak_rss_mb() -> float:
    """Peak resident memory of this process so far (Linux reports ru_maxrss in KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def make_optimizer(model: torch.nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer:
    """AdamW or MuonAdamW over the trainable parameters. Each group carries an "lr_scale" that
    the schedule multiplies in (embedding tables: train.embed_lr_scale, the rest 1)."""
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    embed = {id(m.weight) for m in model.modules() if isinstance(m, torch.nn.Embedding)}
    # Weight decay on matrices only; norms' gains and biases are left alone (GPT-2 habit).
    decay = [p for _, p in named if p.ndim >= 2]
    rest = [p for _, p in named if p.ndim < 2]
    # Muon takes the hidden matrices of the transformer blocks; embeddings, output heads and
    # the recipes' own adapters stay on AdamW (arXiv 2502.16982).
    hidden = set()
    if cfg.optimizer == "muon":
        hidden = {id(p) for n, p in named if p.ndim == 2 and ".layers." in f".{n}"}
    groups = [
        {
            "params": [p for p in decay if id(p) in hidden],
            "weight_decay": cfg.weight_decay,
            "use_muon": True,
            "lr_scale": 1.0,
        },
        {
            "params": [p for p in decay if id(p) in embed and id(p) not in hidden],
            "weight_decay": cfg.weight_decay,
            "lr_scale": cfg.embed_lr_scale,
        },
        {
            "params": [p for p in decay if id(p) not in embed and id(p) not in hidden],
            "weight_decay": cfg.weight_decay,
            "lr_scale": 1.0,
        },
        {"params": rest, "weight_decay": 0.0, "lr_scale": 1.0},
    ]
    groups = [g for g in groups if g["params"]]  # AdamW's run has no Muon group
    if cfg.optimizer == "adamw":
        return torch.optim.AdamW(groups, lr=cfg.lr, betas=(cfg.beta1, cfg.beta2), fused=False)
    return MuonAdamW(groups, lr=cfg.lr, betas=(cfg.beta1, cfg.beta2))


def set_lr(opt: torch.optim.Optimizer, lr: float) -> None:
    """The schedule's learning rate, times each group's lr_scale (see make_optimizer)."""
    for g in opt.param_groups:
        g["lr"] = lr * g.get("lr_scale", 1.0)


def micro_batch_size(cfg: TrainConfig, world_size: int) -> int:
    parts = world_size * cfg.grad_accum
    if cfg.batch_size % parts:
        raise ValueError(
            f"train.batch_size={cfg.batch_size} must divide into {world_size} processes x "
            f"train.grad_accum={cfg.grad_accum} equal micro-batches"
        )
    return cfg.batch_size // parts


def read_log(path: Path) -> list[dict]:
    """The rows of a train_log.jsonl; a line a kill -9 tore mid-write (not JSON, or cut short)
    is dropped, since the run resumes from a checkpoint at or before it anyway."""
    if not path.exists():
        return []
    rows = []
    for line in path.read_text().splitlines():
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(row, dict) and isinstance(row.get("step"), int):
            rows.append(row)
    return rows


class _Cursor:
    """Reads `n` samples at a global index, continuing the previous stream when the index is
    where it stopped (one process: every step), so file sources are read once, not rescanned
    from the start each micro-batch; any other index restarts the source there."""

    def __init__(self, source: Callable[[int], Iterator[Sample]]):
        self.source, self.position, self.stream = source, -1, None

    def take(self, index: int, n: int) -> list[Sample]:
        if index != self.position or self.stream is None:
            self.stream = self.source(index)
        self.position = index + n
        return list(islice(self.stream, n))


def _full_weights(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    out = {}
    for name, p in model.named_parameters():
        if p.requires_grad:
            out[name] = p.full_tensor() if hasattr(p, "full_tensor") else p
    return out


def train_model(
    model: UnifiedModel,
    cfg: TrainConfig,
    samples: SampleSource,
    out_dir: str | Path,
    *,
    progress: bool = True,
    on_save: Callable[[int], None] | None = None,
    resume: bool = False,
) -> list[dict]:
    """Train `model` on `samples` for cfg.steps, or until cfg.max_seconds, cfg.max_tokens or
    cfg.max_flops runs out first; returns the log rows.

    `samples` is either an iterator or, for rank sharding and exact resume, a function
    start_index -> iterator (the stream must be a pure function of the index, as
    world_samples is). Writes out_dir/train_log.jsonl and, every cfg.save_every steps,
    out_dir/state/step-N (and at each 1/cfg.save_fractions of the budget); on_save(step) is
    called then and at the end, on rank 0 only.
    """
    d = du.init_from_env(cfg.device)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    micro = micro_batch_size(cfg, d.world_size)
    if not callable(samples):
        if d.enabled or resume:
            raise ValueError("rank sharding and resume need samples as a start_index -> stream")
        stream = samples
        samples = lambda start: stream  # noqa: E731 - consumed in order, never restarted
    cursor = _Cursor(samples)
    # Counted before any wrapper shards the weights: the FLOP budget's 6 x N x tokens, N the
    # active trained parameters (a token skips an idle expert's or tower's weights).
    n_trained = sum(p.numel() for p in model.parameters() if p.requires_grad)
    n_flop = flop_parameters(model)
    tokens_allowed = token_budget(cfg, n_flop)
    torch.manual_seed(cfg.seed)  # seeds every CUDA device too
    # Model code is single-device: the whole model (and, through UnifiedModel._apply, its
    # tokenizers) moves to the training device; recipes build batches on the weights' device.
    model.to(d.device)
    autocast = du.autocast(d.device, cfg.precision)
    step_module = du.parallelize(model, cfg, d)
    opt = make_optimizer(step_module, cfg)
    ema = EMA(_full_weights(model), cfg.ema_decay) if cfg.ema_decay > 0 else None
    model.train()

    log_path = out_dir / LOG_FILE
    rows: list[dict] = []
    first, tokens_seen, seconds_before, bad_in_row, bad_total = 1, 0.0, 0.0, 0, 0
    found = st.latest_good_state(out_dir) if resume else None
    if resume and found is None and d.is_main:
        print("[unimm] no training-state checkpoint to resume from: starting at step 1")
    if found is not None:
        path, meta = found
        model_sd, optim_sd, ema_sd = st.load_state(path, meta)
        st.set_full_state_dicts(step_module, opt, model_sd, optim_sd)
        if ema is not None and ema_sd is not None:
            ema.load_state_dict(ema_sd)
        st.set_rng_state(meta["rng"], d.device)
        first = meta["step"] + 1
        tokens_seen, seconds_before = meta["tokens"], meta["seconds"]
        bad_in_row, bad_total = meta["nonfinite_in_row"], meta["nonfinite_total"]
        rows = [r for r in read_log(log_path) if r["step"] <= meta["step"]]
        if d.is_main:
            print(f"[unimm] resumed from {path} (step {meta['step']})", flush=True)
    # The budget fractions already saved (a resumed run does not save them again).
    fractions_saved = 0
    if cfg.save_fractions:
        spent = budget_spent(cfg, first - 1, seconds_before, tokens_seen, tokens_allowed)
        fractions_saved = int(spent * cfg.save_fractions)
    if d.is_main:  # temporary + rename: a kill here leaves the old log, not half of it
        tmp = log_path.with_name(log_path.name + ".tmp")
        tmp.write_text("".join(json.dumps(r) + "\n" for r in rows))
        os.replace(tmp, log_path)
    tb = None
    if cfg.tensorboard and d.is_main:
        from torch.utils.tensorboard import SummaryWriter

        tb = SummaryWriter(str(out_dir / "tensorboard"))

    start = time.perf_counter() - seconds_before
    bar = progress_bar(
        total=cfg.steps, initial=first - 1, desc="train", disable=not progress or not d.is_main
    )
    done = first - 1
    for step in range(first, cfg.steps + 1):
        elapsed = time.perf_counter() - start
        if cfg.max_seconds is not None and elapsed >= cfg.max_seconds:
            break
        if tokens_allowed is not None and tokens_seen >= tokens_allowed:
            break
        # With a time or token budget the schedule follows whichever budget runs out first, so
        # the learning rate has annealed when training stops. Warm-up counts optimizer steps
        # whatever the budget: measured on a budget that dwarfs train.steps, it would be over
        # after a step or two.
        progress_step = step - 1
        if step > cfg.warmup_steps and (cfg.max_seconds or tokens_allowed):
            spent = budget_spent(cfg, step - 1, elapsed, tokens_seen, tokens_allowed)
            progress_step = max(progress_step, cfg.steps * spent)
        lr = lr_at(progress_step, cfg.steps, cfg.warmup_steps, cfg.lr, cfg.min_lr_ratio)
        set_lr(opt, lr)

        # The data position is explicit: step s reads global samples [(s-1)B, sB); micro-batch
        # m of rank r is a fixed slice of it, and its generator depends only on that slice.
        loss_sum, n_tok, n_tokens_in, extras = 0.0, 0.0, 0.0, {}
        for m in range(cfg.grad_accum):
            index = (step - 1) * cfg.batch_size + (m * d.world_size + d.rank) * micro
            batch = cursor.take(index, micro)
            gen = torch.Generator().manual_seed(cfg.seed * 1_000_003 + index)
            with du.no_sync(step_module, m == cfg.grad_accum - 1), autocast:
                out = step_module(batch, gen)
                # Summed token losses: divided by the global token count once all are in.
                weight = out["loss_tokens"] if "loss_tokens" in out else torch.tensor(len(batch))
                (out["loss"] * weight).backward()
            loss_sum += float(out["loss"].detach()) * float(weight)
            n_tok += float(weight)
            n_tokens_in += float(out.get("tokens", 0.0))
            for k, v in out.items():
                if k.startswith("loss_") and k != "loss_tokens":
                    extras[k] = extras.get(k, 0.0) + float(v.detach()) / cfg.grad_accum
        loss_sum, n_tok, n_tokens_in = du.all_sum([loss_sum, n_tok, n_tokens_in], d)
        loss = loss_sum / max(n_tok, 1.0)
        # DDP/FSDP averaged gradients over ranks; rescale so they are sum / global tokens.
        scale = d.world_size / max(n_tok, 1.0)
        for p in step_module.parameters():
            if p.grad is not None:
                p.grad.mul_(scale)
        grad_norm = torch.nn.utils.clip_grad_norm_(step_module.parameters(), cfg.grad_clip)
        finite = bool(torch.isfinite(torch.tensor(loss))) and bool(torch.isfinite(grad_norm))
        if finite:
            opt.step()
            bad_in_row = 0
            if ema is not None:
                ema.update(_full_weights(model))
        else:
            bad_in_row, bad_total = bad_in_row + 1, bad_total + 1
            if d.is_main:
                print(f"[unimm] step {step}: non-finite loss {loss}, update skipped", flush=True)
        opt.zero_grad(set_to_none=True)
        if bad_in_row >= cfg.max_nonfinite:
            raise FloatingPointError(
                f"{bad_in_row} non-finite losses in a row (last at step {step}); "
                "lower train.lr or raise train.max_nonfinite"
            )
        tokens_seen += n_tokens_in
        if d.is_main and (
            step % cfg.log_every == 0 or step == 1 or step == cfg.steps or not finite
        ):
            row = {"step": step, "lr": lr, "grad_norm": float(grad_norm), "loss": loss}
            row.update({k: v for k, v in extras.items()})
            row["seconds"] = time.perf_counter() - start
            row["tokens_per_s"] = tokens_seen / max(row["seconds"], 1e-9)
            row["peak_rss_mb"] = peak_rss_mb()
            row["nonfinite_total"] = bad_total
            rows.append(row)
            with log_path.open("a") as f:
                f.write(json.dumps(row) + "\n")
            if tb is not None:
                for k in ("loss", "lr", "grad_norm", "tokens_per_s"):
                    tb.add_scalar(f"train/{k}", row[k], step)
            bar.set_postfix(loss=f"{loss:.3f}", tok_s=f"{row['tokens_per_s']:.0f}", lr=f"{lr:.1e}")
            if cfg.max_seconds or tokens_allowed:
                spent = budget_spent(cfg, step, row["seconds"], tokens_seen, tokens_allowed)
                bar.total = expected_steps(cfg, step, spent)
        bar.update(1)
        done = step
        # A fraction of the budget is saved when it is crossed, not when the budget ends (the
        # model checkpoint is saved then anyway). Like train.max_seconds, a clock budget assumes
        # the ranks of a multi-process run agree on the time.
        due = False
        if cfg.save_fractions:
            elapsed = time.perf_counter() - start
            spent = budget_spent(cfg, step, elapsed, tokens_seen, tokens_allowed)
            reached = min(int(spent * cfg.save_fractions), cfg.save_fractions)
            due = fractions_saved < reached < cfg.save_fractions
            fractions_saved = max(fractions_saved, reached)
        if (cfg.save_every and step % cfg.save_every == 0) or due:
            _save(step_module, model, opt, ema, out_dir, cfg, d, step, tokens_seen,
                  time.perf_counter() - start, bad_in_row, bad_total, on_save)  # fmt: skip
    if done < cfg.steps:  # a budget ended the run: close the bar at 100 %
        bar.total = done
    bar.close()
    if tb is not None:
        tb.close()
    model.eval()
    du.uncompile(model)  # what follows training (evaluation, sampling) runs eager
    seconds = time.perf_counter() - start
    if d.is_main:
        write_json(
            out_dir / STATE_FILE,
            {
                "step": done,
                "seconds": seconds,
                "tokens": tokens_seen,
                "trained_parameters": n_trained,
                "flop_parameters": n_flop,
                "flops": 6 * n_flop * tokens_seen,
                "peak_rss_mb": peak_rss_mb(),
                "nonfinite_total": bad_total,
                "world_size": d.world_size,
                "config": to_dict(cfg),
            },
        )
    if ema is not None and d.is_main:
        save_tensors(ema.state_dict(), out_dir / EMA_FILE)
    if on_save:
        _gather_into_plain_tensors(step_module, model)
        if d.is_main:
            on_save(done)
    du.barrier(d)
    return rows


def _save(step_module, model, opt, ema, out_dir, cfg, d, step, tokens, seconds, bad, bad_total,
          on_save) -> None:  # fmt: skip
    model_sd, optim_sd = st.full_state_dicts(step_module, model, opt)  # collective under FSDP
    if d.is_main:
        meta = {
            "tokens": tokens,
            "seconds": seconds,
            "nonfinite_in_row": bad,
            "nonfinite_total": bad_total,
            "data_position": step * cfg.batch_size,
            "world_size": d.world_size,
            "rng": st.rng_state(d.device),
        }
        ema_sd = ema.state_dict() if ema is not None else None
        st.save_state(out_dir, step, model_sd, optim_sd, meta, cfg.keep_checkpoints, ema_sd)
        # The loadable model checkpoint needs plain tensors: under FSDP2 it is written at the end.
        if on_save and not any(hasattr(p, "full_tensor") for p in model.parameters()):
            on_save(step)
    du.barrier(d)


def _gather_into_plain_tensors(step_module, model) -> None:
    """Under FSDP2, replace the bare model's sharded parameters by full plain ones (a collective
    on every rank) so it saves and loads like a 1-process model; training is over by then."""
    if not any(hasattr(p, "full_tensor") for p in model.parameters()):
        return
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    full = get_model_state_dict(step_module, options=StateDictOptions(full_state_dict=True))
    full = {st._clean(k): v for k, v in full.items()}
    for name, p in list(model.named_parameters()):
        owner_name, _, leaf = name.rpartition(".")
        owner = model.get_submodule(owner_name) if owner_name else model
        value = full[st._clean(name)].detach().clone()
        owner._parameters[leaf] = torch.nn.Parameter(value, requires_grad=p.requires_grad)
