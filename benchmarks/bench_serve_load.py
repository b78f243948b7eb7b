"""Load on `unimm serve`: N concurrent clients on loopback, with and without dynamic batching.

Run (from the repo root):

    PYTHONPATH=src .venv/bin/python benchmarks/bench_serve_load.py
    PYTHONPATH=src .venv/bin/python benchmarks/bench_serve_load.py --checkpoint runs/quickstart \
        --clients 16 --requests 4 --endpoint chat

Starts the real server (`python -m unimm serve`, one torch thread, in its own process) twice
in the same run: once with --max-batch 1 (one request at a time: the baseline) and once with
dynamic batching (--max-batch 16 --batch-window 0.02). Each of --clients threads sends
--requests requests back to back (images: one 64x64 image each; chat: a caption of an image).
Prints throughput, p50/p99 latency and the error count for each, and the batched / one-at-a-time
throughput ratio. Then an overload phase: a server with --max-queue 4 receives 32 requests at
once; every answer must be 200 or 429 (with Retry-After), never another error or a hang.
Without --checkpoint a "small"-preset run with random weights is built (speed does not depend
on the weights).
"""

from __future__ import annotations

import argparse
import base64
import io
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
from PIL import Image as PILImage


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    def __init__(self, checkpoint: Path, *flags: str):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        env = {**os.environ, "OMP_NUM_THREADS": "1"}
        cmd = [sys.executable, "-m", "unimm", "serve", str(checkpoint), "--port", str(self.port)]
        self.proc = subprocess.Popen(
            [*cmd, *flags], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{self.url}/health", timeout=1).status_code == 200:
                    return
            except httpx.TransportError:
                time.sleep(0.2)
        self.close()
        raise RuntimeError("the server did not start within 120 s")

    def close(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=10)


def request_body(endpoint: str, k: int) -> tuple[str, dict]:
    if endpoint == "images":
        return "/v1/images/generations", {"prompt": "a red circle left of a blue square", "seed": k}
    buf = io.BytesIO()
    PILImage.fromarray(np.full((64, 64, 3), 255, np.uint8)).save(buf, format="PNG")
    uri = "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()
    content = [{"type": "image_url", "image_url": {"url": uri}}, {"type": "text", "text": "?"}]
    return "/v1/chat/completions", {
        "model": "unimm",
        "messages": [{"role": "user", "content": content}],
        "max_tokens": 16,
        "seed": k,
    }


def load(url: str, endpoint: str, clients: int, requests: int) -> dict:
    def client(c: int) -> list[tuple[int, float]]:
        out = []
        with httpx.Client(base_url=url, timeout=600) as http:
            for r in range(requests):
                path, body = request_body(endpoint, c * requests + r)
                t0 = time.perf_counter()
                status = http.post(path, json=body).status_code
                out.append((status, time.perf_counter() - t0))
        return out

    t0 = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        results = [x for part in pool.map(client, range(clients)) for x in part]
    wall = time.perf_counter() - t0
    lat = sorted(t for s, t in results if s == 200)
    return {
        "requests_per_s": len(lat) / wall,
        "p50_s": statistics.median(lat) if lat else float("nan"),
        "p99_s": lat[min(len(lat) - 1, int(0.99 * len(lat)))] if lat else float("nan"),
        "errors": sum(s != 200 for s, _ in results),
    }


def overload(checkpoint: Path, endpoint: str) -> dict:
    server = Server(checkpoint, "--max-batch", "4", "--max-queue", "4")
    try:
        path, body = request_body(endpoint, 0)

        def one(_):
            r = httpx.post(server.url + path, json=body, timeout=600)
            return r.status_code, r.headers.get("retry-after")

        with ThreadPoolExecutor(32) as pool:
            answers = list(pool.map(one, range(32)))
    finally:
        server.close()
    return {
        "ok": sum(s == 200 for s, _ in answers),
        "refused_429": sum(s == 429 and ra is not None for s, ra in answers),
        "other": sum(s not in (200, 429) for s, _ in answers),
    }


def build_checkpoint(directory: Path) -> Path:
    from unimm.pipeline import train_run

    print("building a small-preset run with random weights ...", flush=True)
    train_run(directory, "small", ["vq_train.seconds=5", "train.steps=1"], progress=False)
    return directory


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--checkpoint", type=Path)
    p.add_argument("--endpoint", choices=["images", "chat"], default="images")
    p.add_argument("--clients", type=int, default=16)
    p.add_argument("--requests", type=int, default=4, help="requests per client")
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        checkpoint = args.checkpoint or build_checkpoint(Path(tmp) / "run")
        rows = {}
        for name, flags in [
            ("one at a time", ["--max-batch", "1"]),
            ("dynamic batching", ["--max-batch", "16", "--batch-window", "0.02"]),
        ]:
            server = Server(checkpoint, *flags, "--max-queue", "256")
            try:
                load(server.url, args.endpoint, 2, 1)  # warm up
                rows[name] = load(server.url, args.endpoint, args.clients, args.requests)
            finally:
                server.close()
        print(f"\n{args.endpoint}: {args.clients} clients x {args.requests} requests")
        print(f"{'server':<18} {'req/s':>8} {'p50 s':>8} {'p99 s':>8} {'errors':>7}")
        for name, r in rows.items():
            print(
                f"{name:<18} {r['requests_per_s']:8.2f} {r['p50_s']:8.2f} {r['p99_s']:8.2f}"
                f" {r['errors']:7d}"
            )
        ratio = rows["dynamic batching"]["requests_per_s"] / rows["one at a time"]["requests_per_s"]
        print(f"batching speed-up (throughput): {ratio:.2f}x")
        o = overload(checkpoint, args.endpoint)
        print(
            f"overload (32 at once, --max-queue 4): {o['ok']} served, "
            f"{o['refused_429']} refused with 429 + Retry-After, {o['other']} other answers"
        )


if __name__ == "__main__":
    main()
