"""Dynamic batching, back-pressure, local image paths, image replies in chat and metrics.

Most tests use a fake model that records its calls, so they check the server's own logic
exactly and fast; one runs a real tiny model to show batched replies equal lone ones."""

import base64
import io
import threading
import time

import numpy as np
import pytest
from PIL import Image as PILImage

pytest.importorskip("fastapi")
from fastapi.testclient import TestClient  # noqa: E402

from unimm.data.sample import Image, Text  # noqa: E402
from unimm.recipes.base import SamplingConfig  # noqa: E402
from unimm.serve.batcher import DynamicBatcher, QueueFull  # noqa: E402
from unimm.serve.config import ServeConfig  # noqa: E402


class FakeModel:
    """Records every generate call; `gate` (if set) holds each call until released."""

    image_resolution = 8

    def __init__(self, gate: threading.Event | None = None):
        self.calls: list[tuple[list, str, list]] = []
        self.gate = gate
        self.started = threading.Event()

    def generate(self, prompts, modality, sampling=None, seed=0):
        self.calls.append((prompts, modality, list(seed)))
        self.started.set()
        if self.gate is not None:
            assert self.gate.wait(10)
        if any(isinstance(s, Text) and "bad" in s.text for p in prompts for s in p):
            raise ValueError("prompt too long")
        if modality == "image":
            return [Image(np.full((8, 8, 3), s % 256, np.uint8)) for s in seed]
        return [Text(f"seed {s}") for s in seed]


def _submit_while_blocked(batcher, model, gate, jobs):
    """Occupy the model with a first job, queue `jobs` behind it, then release: the queued
    jobs are all waiting when the worker next looks, so what merges is deterministic."""
    first = batcher.submit([[Text("first")]], "text", SamplingConfig(), [0])
    assert model.started.wait(5)
    futures = [batcher.submit(*job) for job in jobs]
    gate.set()
    return first, futures


def test_waiting_jobs_with_equal_settings_run_as_one_call():
    gate = threading.Event()
    model = FakeModel(gate)
    batcher = DynamicBatcher(model, max_batch=4, window_s=0.0, max_queue=16)
    greedy, hot = SamplingConfig(temperature=0.0), SamplingConfig(temperature=1.0)
    jobs = [
        ([[Text("a")]], "text", greedy, [1]),
        ([[Text("b")]], "text", hot, [2]),  # other settings: its own call
        ([[Text("c")], [Text("c")]], "text", greedy, [3, 4]),
        ([[Text("d")]], "image", greedy, [5]),  # other modality: its own call
        ([[Text("e")], [Text("e")]], "text", greedy, [6, 7]),  # would exceed max_batch 4
    ]
    first, futures = _submit_while_blocked(batcher, model, gate, jobs)
    results = [f.result(5) for f in futures]
    batcher.close()
    assert first.result(5)[0].text == "seed 0"
    seeds_per_call = [seeds for _, _, seeds in model.calls]
    assert seeds_per_call == [[0], [1, 3, 4], [2], [5], [6, 7]]
    assert [[s.text for s in r] for r in results if isinstance(r[0], Text)] == [
        ["seed 1"],
        ["seed 2"],
        ["seed 3", "seed 4"],
        ["seed 6", "seed 7"],
    ]


def test_a_bad_request_fails_alone():
    gate = threading.Event()
    model = FakeModel(gate)
    batcher = DynamicBatcher(model, max_batch=8, window_s=0.0)
    s = SamplingConfig()
    jobs = [([[Text("good")]], "text", s, [1]), ([[Text("bad")]], "text", s, [2])]
    _, (good, bad) = _submit_while_blocked(batcher, model, gate, jobs)
    assert good.result(5)[0].text == "seed 1"
    with pytest.raises(ValueError, match="too long"):
        bad.result(5)
    batcher.close()


def test_queue_limit_and_cancelled_jobs():
    gate = threading.Event()
    model = FakeModel(gate)
    batcher = DynamicBatcher(model, max_batch=1, window_s=0.0, max_queue=2)
    s = SamplingConfig()
    batcher.submit([[Text("x")]], "text", s, [0])
    assert model.started.wait(5)  # on the model; the queue is empty again
    waiting = [batcher.submit([[Text("x")]], "text", s, [k]) for k in (1, 2)]
    with pytest.raises(QueueFull):
        batcher.submit([[Text("x")]], "text", s, [3])
    assert waiting[0].cancel()  # a caller that gave up: the worker must skip it
    gate.set()
    assert waiting[1].result(5)[0].text == "seed 2"
    batcher.close()
    assert [seeds for _, _, seeds in model.calls] == [[0], [2]]


def _app(model, **cfg):
    from unimm.serve.app import create_app

    return create_app(model, config=ServeConfig(**cfg))


def _gen(client, seed=0):
    return client.post("/v1/images/generations", json={"prompt": "a red circle", "seed": seed})


def test_overload_answers_429_then_503_with_retry_after():
    gate = threading.Event()
    model = FakeModel(gate)
    client = TestClient(_app(model, max_batch=1, max_queue=1, queue_timeout_s=0.5))
    answers: dict = {}
    busy = threading.Thread(target=lambda: answers.update(busy=_gen(client, 1)))
    busy.start()
    assert model.started.wait(5)
    # The model is busy: one request may wait (and gives up after 0.5 s), the next is refused.
    waiting = threading.Thread(target=lambda: answers.update(waiting=_gen(client, 2)))
    waiting.start()
    deadline = time.monotonic() + 5
    while client.app.state.batcher.depth < 1 and time.monotonic() < deadline:
        time.sleep(0.01)
    refused = _gen(client, 3)
    assert refused.status_code == 429 and refused.headers["Retry-After"] == "1"
    assert refused.json()["error"]["type"] == "rate_limit_error"
    waiting.join(5)
    timed_out = answers["waiting"]
    assert timed_out.status_code == 503 and timed_out.headers["Retry-After"] == "1"
    gate.set()
    busy.join(5)
    assert answers["busy"].status_code == 200
    text = client.get("/metrics").text
    assert 'unimm_rejected_total{reason="queue_full"} 1.0' in text
    assert 'unimm_rejected_total{reason="queue_timeout"} 1.0' in text


def _png(side: int, value: int = 90) -> bytes:
    buf = io.BytesIO()
    PILImage.fromarray(np.full((side, side, 3), value, np.uint8)).save(buf, format="PNG")
    return buf.getvalue()


def _chat(client, url, **extra):
    content = [{"type": "image_url", "image_url": {"url": url}}, {"type": "text", "text": "hi"}]
    body = {"model": "unimm", "messages": [{"role": "user", "content": content}], **extra}
    return client.post("/v1/chat/completions", json=body)


def test_local_image_paths_only_inside_allowed_folders(tmp_path):
    allowed, other = tmp_path / "allowed", tmp_path / "other"
    allowed.mkdir()
    other.mkdir()
    (allowed / "a.png").write_bytes(_png(8))
    (other / "b.png").write_bytes(_png(8))
    model = FakeModel()
    client = TestClient(_app(model, image_dirs=(allowed,)))
    assert _chat(client, str(allowed / "a.png")).status_code == 200
    assert _chat(client, f"file://{allowed / 'a.png'}").status_code == 200
    prompt = model.calls[-1][0][0]
    assert isinstance(prompt[0], Image) and int(prompt[0].pixels[0, 0, 0]) == 90
    assert _chat(client, str(other / "b.png")).status_code == 403
    assert _chat(client, str(allowed / ".." / "other" / "b.png")).status_code == 403
    assert _chat(client, str(allowed / "missing.png")).status_code == 404
    assert _chat(client, "https://example.com/x.png").status_code == 400
    closed = TestClient(_app(FakeModel()))
    r = _chat(closed, str(allowed / "a.png"))
    assert r.status_code == 403 and "--allow-image-dir" in r.json()["error"]["message"]


def test_chat_keeps_both_roles_and_can_reply_with_an_image():
    model = FakeModel()
    client = TestClient(_app(model))
    uri = "data:image/png;base64," + base64.b64encode(_png(16)).decode()
    messages = [
        {"role": "system", "content": "be brief"},
        {"role": "user", "content": [{"type": "image_url", "image_url": {"url": uri}}]},
        {"role": "assistant", "content": "a grey square"},
        {"role": "user", "content": "draw it again"},
    ]
    r = client.post(
        "/v1/chat/completions",
        json={"model": "unimm", "messages": messages, "modalities": ["image"], "seed": 7},
    )
    assert r.status_code == 200, r.text
    message = r.json()["choices"][0]["message"]
    assert message["content"] == ""
    url = message["images"][0]["image_url"]["url"]
    assert url.startswith("data:image/png;base64,")
    reply = PILImage.open(io.BytesIO(base64.b64decode(url.split(",", 1)[1])))
    assert reply.size == (8, 8) and reply.getpixel((0, 0)) == (7, 7, 7)
    prompt, modality, _ = model.calls[-1]
    assert modality == "image"
    layout = [(type(s).__name__, getattr(s, "role", None)) for s in prompt[0]]
    assert layout == [("Image", None), ("Text", "assistant"), ("Text", "user")]
    assert prompt[0][0].pixels.shape == (8, 8, 3)  # resized to the model's side


def test_limits_come_from_the_config():
    client = TestClient(_app(FakeModel(), max_n=2, max_prompt_chars=5))
    assert client.post("/v1/images/generations", json={"prompt": "abc", "n": 2}).status_code == 200
    assert client.post("/v1/images/generations", json={"prompt": "abc", "n": 3}).status_code == 400
    too_long = client.post("/v1/images/generations", json={"prompt": "abcdef"})
    assert too_long.status_code == 400
    schema = client.get("/openapi.json").json()["components"]["schemas"]["ImageRequest"]
    assert schema["properties"]["n"]["maximum"] == 2
    assert schema["properties"]["prompt"]["maxLength"] == 5
    with pytest.raises(ValueError, match="max_batch"):
        ServeConfig(max_batch=0)


def _pixels(b64: str) -> np.ndarray:
    return np.asarray(PILImage.open(io.BytesIO(base64.b64decode(b64))), dtype=int)


def test_concurrent_requests_batch_and_equal_lone_replies(tiny_run):
    """Real tiny model: replies to requests that shared a batch equal their replies alone.
    The sampled codes are exactly equal (per-row seeds); the image decoder's float rounding
    depends on the batch size, so a rare pixel may differ by one level."""
    from unimm.pipeline import load_checkpoint

    model, _ = load_checkpoint(tiny_run)
    client = TestClient(_app(model, max_batch=8, batch_window_s=0.5))
    alone = [_pixels(_gen(client, seed).json()["data"][0]["b64_json"]) for seed in range(4)]
    replies: dict[int, np.ndarray] = {}

    def ask(seed):
        replies[seed] = _pixels(_gen(client, seed).json()["data"][0]["b64_json"])

    threads = [threading.Thread(target=ask, args=(s,)) for s in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    for seed in range(4):
        diff = np.abs(replies[seed] - alone[seed])
        assert diff.max() <= 1 and (diff > 0).mean() < 0.01, seed
    assert any(not np.array_equal(alone[0], a) for a in alone[1:])  # seeds matter
    text = client.get("/metrics").text
    # The four concurrent requests shared fewer than four model calls.
    calls = float(text.split("unimm_batch_requests_count ")[1].split()[0])
    assert calls < 8


def test_cli_rejects_bad_limits_before_loading(tmp_path, capsys):
    from unimm.cli import main

    assert main(["serve", str(tmp_path / "none"), "--batch-window", "-1"]) == 2
    assert "batch_window_s" in capsys.readouterr().err
    assert main(["serve", str(tmp_path), "--allow-image-dir", str(tmp_path / "no")]) == 2
    assert "not a directory" in capsys.readouterr().err
