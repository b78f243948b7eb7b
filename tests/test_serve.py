import base64
import io
import json

import numpy as np
import pytest
from PIL import Image as PILImage

fastapi = pytest.importorskip("fastapi")
from fastapi.testclient import TestClient  # noqa: E402


@pytest.fixture(scope="module")
def client(tiny_run):
    from unimm.pipeline import load_checkpoint
    from unimm.serve.app import create_app

    model, _ = load_checkpoint(tiny_run)
    return TestClient(create_app(model)), model


def _data_uri(side: int) -> str:
    buf = io.BytesIO()
    PILImage.fromarray(np.full((side, side, 3), 200, np.uint8)).save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def test_health_models_metrics(client):
    c, _ = client
    assert c.get("/health").json()["status"] == "ok"
    assert c.get("/v1/models").json()["data"][0]["id"] == "unimm"
    assert "unimm_requests_total" in c.get("/metrics").text


def test_chat_with_image_and_stream(client):
    c, model = client
    content = [
        {"type": "image_url", "image_url": {"url": _data_uri(model.image_resolution)}},
        {"type": "text", "text": "what is this?"},
    ]
    body = {"model": "unimm", "messages": [{"role": "user", "content": content}]}
    r = c.post("/v1/chat/completions", json=body)
    assert r.status_code == 200, r.text
    out = r.json()
    assert out["choices"][0]["message"]["role"] == "assistant"
    assert out["usage"]["prompt_tokens"] == len(model.text_tok.encode("what is this?"))
    s = c.post("/v1/chat/completions", json={**body, "stream": True})
    assert s.status_code == 200
    assert s.text.rstrip().endswith("data: [DONE]")
    events = [line[len("data: ") :] for line in s.text.splitlines() if line.startswith("data: ")]
    chunks = [json.loads(e) for e in events[:-1]]
    streamed = "".join(ch["choices"][0]["delta"].get("content", "") for ch in chunks)
    assert streamed == out["choices"][0]["message"]["content"]


def test_image_generation_returns_pngs(client):
    c, model = client
    r = c.post("/v1/images/generations", json={"prompt": "a red circle", "n": 2, "seed": 1})
    assert r.status_code == 200, r.text
    data = r.json()["data"]
    assert len(data) == 2
    im = PILImage.open(io.BytesIO(base64.b64decode(data[0]["b64_json"])))
    assert im.size == (model.image_resolution, model.image_resolution)


@pytest.mark.parametrize(
    "path,body,status",
    [
        ("/v1/images/generations", {"prompt": "x", "n": 99}, 400),
        ("/v1/images/generations", {"prompt": 3}, 400),
        ("/v1/images/generations", {"prompt": "x", "size": "9x9"}, 400),
        ("/v1/images/generations", {"prompt": "x", "model": "gpt-4"}, 404),
        ("/v1/chat/completions", {"model": "unimm", "messages": []}, 400),
        (
            "/v1/chat/completions",
            {
                "model": "unimm",
                "messages": [
                    {
                        "role": "user",
                        "content": [
                            {"type": "image_url", "image_url": {"url": "data:image/png;base64,!!"}}
                        ],
                    }
                ],
            },
            400,
        ),
        (
            "/v1/chat/completions",
            {
                "model": "unimm",
                "messages": [
                    {
                        "role": "user",
                        "content": [
                            {
                                "type": "image_url",
                                "image_url": {"url": "data:image/png;base64,aGVsbG8="},
                            }
                        ],
                    }
                ],
            },
            400,
        ),
    ],
)
def test_malformed_requests_get_openai_errors(client, path, body, status):
    c, _ = client
    r = c.post(path, json=body)
    assert r.status_code == status, r.text
    assert r.json()["error"]["message"]


def test_bad_json_is_400(client):
    c, _ = client
    r = c.post(
        "/v1/chat/completions", content=b"{not json", headers={"content-type": "application/json"}
    )
    assert r.status_code == 400
    assert "error" in r.json()


def test_image_edit_and_non_image_upload(client):
    c, model = client
    buf = io.BytesIO()
    side = model.image_resolution
    PILImage.fromarray(np.zeros((side, side, 3), np.uint8)).save(buf, format="PNG")
    r = c.post("/v1/images/edits", files={"image": buf.getvalue()}, data={"prompt": "make it red"})
    assert r.status_code == 200, r.text
    assert len(r.json()["data"]) == 1
    bad = c.post("/v1/images/edits", files={"image": b"not an image"}, data={"prompt": "x"})
    assert bad.status_code == 400 and "image" in bad.json()["error"]["message"]


def test_official_openai_client(client):
    openai = pytest.importorskip("openai")
    import socket
    import threading
    import time

    import uvicorn

    c, model = client
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    server = uvicorn.Server(uvicorn.Config(c.app, host="127.0.0.1", port=port, log_level="error"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        while not server.started:
            time.sleep(0.02)
        oc = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="none")
        content = [
            {"type": "image_url", "image_url": {"url": _data_uri(model.image_resolution)}},
            {"type": "text", "text": "what is this?"},
        ]
        msgs = [{"role": "user", "content": content}]
        reply = oc.chat.completions.create(model="unimm", messages=msgs)
        assert reply.choices[0].message.role == "assistant"
        chunks = list(oc.chat.completions.create(model="unimm", messages=msgs, stream=True))
        assert chunks[-1].choices[0].finish_reason == "stop"
        assert "".join(ch.choices[0].delta.content or "" for ch in chunks) == (
            reply.choices[0].message.content
        )
        drawn = oc.chat.completions.create(
            model="unimm", messages=msgs, extra_body={"modalities": ["image"]}
        )
        url = drawn.choices[0].message.model_extra["images"][0]["image_url"]["url"]
        assert url.startswith("data:image/png;base64,")
        img = oc.images.generate(prompt="a blue square", n=1, response_format="b64_json")
        assert PILImage.open(io.BytesIO(base64.b64decode(img.data[0].b64_json))).size == (
            model.image_resolution,
            model.image_resolution,
        )
    finally:
        server.should_exit = True
        thread.join(timeout=5)


def test_api_key_required_when_set(client):
    from unimm.serve.app import create_app

    _, model = client
    c = TestClient(create_app(model, api_key="s3cret"))
    assert c.get("/v1/models").status_code == 401
    assert c.get("/v1/models", headers={"Authorization": "Bearer wrong"}).status_code == 401
    assert c.get("/v1/models", headers={"Authorization": "Bearer s3cret"}).status_code == 200
    assert c.get("/health").status_code == 200


def test_out_of_range_seed_is_a_4xx(client):
    client, _ = client
    r = client.post("/v1/images/generations", json={"prompt": "a red circle", "seed": 2**70})
    assert r.status_code == 400 and r.json()["error"]["message"]
