"""The GPU path of `unimm train`, checked on a real GPU in one call (docs/TRAINING.md, GPU).

Run from the repo root on a machine with at least one CUDA GPU:

    PYTHONPATH=src:. OMP_NUM_THREADS=4 .venv/bin/python benchmarks/gpu_check.py

Prints one PASS / FAIL / SKIP line per check and exits 1 if any failed. Expected: every line
PASS (the 2-GPU torchrun line SKIPs on one GPU); about 1-2 minutes on one H200, most of it the
CPU 2-process equality test and CUDA start-up. Checks, all on tiny random models:

- train:     a few bf16 steps on cuda; weights and tokenizers on the GPU, finite falling loss
- fp32:      the cuda fp32 loss curve equals the CPU one to 1e-3 (TF32 off)
- resume:    6 steps vs the same run resumed from step 3 on cuda: same curve (deterministic);
             the training-state checkpoint holds the CUDA RNG states
- nccl:      one process in a cpu:gloo,cuda:nccl group through the real trainer, DDP and FSDP2
             wrappers on, equals the unwrapped cuda curve; with >= 2 GPUs also torchrun-style
             2 processes (DDP, FSDP2) against the 1-process cuda curve
- cpu-2proc: tests/test_distributed.py (2 gloo processes reproduce 1 process) on the CPU
- generate:  every recipe generates text and images with its weights on cuda
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path

os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")  # deterministic cuBLAS (resume)
# GPU_CHECK_DEVICE=cpu runs the checks on the CPU (not cpu-2proc): a dry run of the script itself.
DEV = os.environ.get("GPU_CHECK_DEVICE", "cuda")

import torch  # noqa: E402

DEVICE = torch.device(DEV, 0) if DEV == "cuda" else torch.device(DEV)

ROOT = Path(__file__).resolve().parents[1]
RESULTS: list[tuple[str, str, str]] = []


def report(name: str, ok: bool | None, detail: str = "") -> None:
    status = "SKIP" if ok is None else "PASS" if ok else "FAIL"
    RESULTS.append((status, name, detail))
    print(f"{status} {name}: {detail}", flush=True)


def check(name: str):
    def wrap(fn):
        def run(*a, **kw):
            t0 = time.perf_counter()
            try:
                fn(*a, **kw)
            except Exception as e:  # a failed check must not hide the others
                traceback.print_exc()
                report(name, False, f"{type(e).__name__}: {e}")
            print(f"     ({name} took {time.perf_counter() - t0:.1f} s)", flush=True)

        return run

    return wrap


def losses(out: Path) -> list[float]:
    return [json.loads(x)["loss"] for x in (out / "train_log.jsonl").read_text().splitlines()]


def train(out: Path, steps: int, **kw) -> list[float]:
    from tests.train_helpers import stream, tiny_model, tiny_train_config

    from unimm.train.trainer import train_model

    resume = kw.pop("_resume", False)
    cfg = tiny_train_config(steps=steps, **kw)
    train_model(tiny_model(), cfg, stream, out, progress=False, resume=resume)
    return losses(out)


@check("train")
def check_train(tmp: Path) -> None:
    from tests.train_helpers import stream, tiny_model, tiny_train_config

    from unimm.train import distributed as du
    from unimm.train.trainer import train_model

    model = tiny_model()
    rows = train_model(model, tiny_train_config(steps=8, precision="bf16", device=DEV),
                       stream, tmp / "bf16", progress=False)  # fmt: skip
    on_gpu = {p.device.type for p in model.parameters()} == {DEV}
    tok_gpu = {p.device.type for p in model.parts.image.parameters()} == {DEV}
    with du.autocast(torch.device(DEV), "bf16"):
        x = torch.randn(4, 4, device=DEV)
        bf16 = (x @ x).dtype == torch.bfloat16
    ls = [r["loss"] for r in rows]
    finite = all(torch.isfinite(torch.tensor(ls)))
    ok = on_gpu and tok_gpu and bf16 and finite and ls[-1] < ls[0]
    report("train", ok, f"weights cuda={on_gpu} tokenizer cuda={tok_gpu} autocast bf16={bf16} "
                        f"loss {ls[0]:.3f} -> {ls[-1]:.3f}")  # fmt: skip


@check("fp32")
def check_fp32(tmp: Path) -> None:
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    cpu = train(tmp / "cpu", 4, device="cpu")
    gpu = train(tmp / "gpu", 4, device=DEV)
    diff = max(abs(a - b) / max(abs(a), 1e-6) for a, b in zip(cpu, gpu, strict=True))
    report("fp32", diff < 1e-3, f"cuda vs cpu loss curve, max relative difference {diff:.2e}")


@check("resume")
def check_resume(tmp: Path) -> None:
    torch.use_deterministic_algorithms(True, warn_only=True)
    try:
        straight = train(tmp / "a", 6, device=DEV, save_every=3)
        # Same run, its last checkpoint lost: resuming redoes steps 4-6 from step 3's state.
        shutil.copytree(tmp / "a", tmp / "b")
        shutil.rmtree(tmp / "b/state/step-0000006")
        resumed = train(tmp / "b", 6, device=DEV, save_every=3, _resume=True)
    finally:
        torch.use_deterministic_algorithms(False)
    meta = json.loads((tmp / "b/state/step-0000003/state.json").read_text())
    n_cuda = len(meta["rng"].get("cuda", []))
    diff = max(abs(a - b) for a, b in zip(straight, resumed, strict=True))
    gpus = torch.cuda.device_count() if DEV == "cuda" else 0
    ok = len(resumed) == 6 and diff <= 1e-6 and n_cuda == gpus
    report("resume", ok, f"max |straight - resumed| {diff:.2e} over 6 steps; "
                         f"{n_cuda} CUDA RNG state(s) in state.json")  # fmt: skip


@check("nccl")
def check_nccl(tmp: Path) -> None:
    import torch.distributed as dist

    from unimm.train import distributed as du

    class OneRank(du.Dist):  # a 1-process group, wrapped as if it were many
        @property
        def enabled(self) -> bool:
            return True

    ref = train(tmp / "plain", 4, device=DEV)
    store = dist.TCPStore("127.0.0.1", 0, 1, is_master=True)
    backend = du.process_group_backend(torch.device(DEV))
    dist.init_process_group(backend, store=store, rank=0, world_size=1)
    real = du.init_from_env
    try:
        du.init_from_env = lambda device="auto": OneRank(device=DEVICE)
        curves = {p: train(tmp / p, 4, device=DEV, parallel=p) for p in ("ddp", "fsdp2")}
    finally:
        du.init_from_env = real
        dist.destroy_process_group()
    diffs = {p: max(abs(a - b) for a, b in zip(ref, c, strict=True)) for p, c in curves.items()}
    ok = all(d < 1e-4 for d in diffs.values())
    report("nccl", ok, "1-process nccl group vs unwrapped: "
                       + ", ".join(f"{p} max diff {d:.1e}" for p, d in diffs.items()))  # fmt: skip
    if DEV != "cuda" or torch.cuda.device_count() < 2:
        report("nccl-2gpu", None, "one GPU: 2-process nccl needs two (CPU 2-process below)")
        return
    from tests.test_distributed import launch_two

    ok2, detail = True, []
    for p in ("ddp", "fsdp2"):
        launch_two(tmp / f"two-{p}", "steps=4", f"parallel={p}", "device=cuda")
        d = max(abs(a - b) for a, b in zip(ref, losses(tmp / f"two-{p}"), strict=True))
        ok2 &= d < 1e-3
        detail.append(f"{p} max diff {d:.1e}")
    report("nccl-2gpu", ok2, "2 processes vs 1 on cuda: " + ", ".join(detail))


@check("cpu-2proc")
def check_cpu_two_processes(tmp: Path) -> None:
    if DEV != "cuda":
        report("cpu-2proc", None, "dry run: tests/test_distributed.py covers it")
        return
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
           str(ROOT / "tests/test_distributed.py")]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": f"{ROOT / 'src'}:{ROOT}"}
    res = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=240)
    tail = res.stdout.strip().splitlines()[-1] if res.stdout.strip() else res.stderr[-300:]
    report("cpu-2proc", res.returncode == 0, tail)


@check("generate")
def check_generate(tmp: Path) -> None:
    import numpy as np
    from tests.test_device import MAKERS

    from unimm.data.sample import Image, Text
    from unimm.recipes.base import SamplingConfig

    img = np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    sampling = SamplingConfig(max_new_tokens=4, steps=2)
    failed, same_text = [], 0
    for name, make in sorted(MAKERS.items()):
        try:
            model = make().eval()
            cpu_text = model.generate([[Image(img), Text("what color?")]], "text", sampling, 1)
            model.to(DEV)
            images = model.generate([[Text("a red circle")]] * 2, "image", sampling, seed=1)
            texts = model.generate([[Image(img), Text("what color?")]], "text", sampling, 1)
            assert all(im.pixels.shape == (64, 64, 3) for im in images)
            same_text += texts[0].text == cpu_text[0].text
        except Exception as e:
            traceback.print_exc()
            failed.append(f"{name} ({type(e).__name__}: {e})")
    detail = f"{len(MAKERS) - len(failed)}/{len(MAKERS)} recipes generate on cuda; "
    detail += f"{same_text} sampled answers equal the CPU's (info: kernels differ)"
    report("generate", not failed, detail + ("; failed: " + "; ".join(failed) if failed else ""))


def main() -> int:
    if DEV == "cuda" and not torch.cuda.is_available():
        print(f"FAIL cuda: torch {torch.__version__} sees no GPU (CUDA {torch.version.cuda})")
        return 1
    gpu = torch.cuda.get_device_name(0) if DEV == "cuda" else "none (dry run on the CPU)"
    print(f"torch {torch.__version__}, {torch.cuda.device_count()} GPU(s): {gpu}", flush=True)
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        for i, fn in enumerate((check_train, check_fp32, check_resume, check_nccl, check_generate,
                                check_cpu_two_processes)):  # fmt: skip
            (tmp / str(i)).mkdir()
            fn(tmp / str(i))
    bad = [r for r in RESULTS if r[0] == "FAIL"]
    print(f"{'FAIL' if bad else 'PASS'} all: {len(RESULTS) - len(bad)}/{len(RESULTS)} checks "
          f"not failed in {time.perf_counter() - t0:.0f} s")  # fmt: skip
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
