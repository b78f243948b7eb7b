import base64
import io

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
    assert c.get("/health").json() == {"status": "ok"}
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
    assert out["usage"]["prompt_tokens"] == 3
    s = c.post("/v1/chat/completions", json={**body, "stream": True})
    assert s.status_code == 200
    assert s.text.rstrip().endswith("data: [DONE]")
    assert (
        out["choices"][0]["message"]["content"] in s.text
        or out["choices"][0]["message"]["content"] == ""
    )


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
