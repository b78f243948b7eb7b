"""The web page at `/`: routes (no browser needed) and a real headless-chromium run.

The browser test drives Debian's chromium (/usr/bin/chromium) with Playwright against the real
app under uvicorn on a loopback port; it never runs `playwright install`. Without chromium it
skips and says how to install it; `.ci/run` installs it, so CI runs it.
"""

from __future__ import annotations

import io
import os
import shutil
import socket
import threading
import time
from pathlib import Path
from urllib.parse import urlsplit

import numpy as np
import pytest
from PIL import Image as PILImage

pytest.importorskip("fastapi")
from fastapi.testclient import TestClient  # noqa: E402

API_KEY = "s3cret"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


@pytest.fixture(scope="module")
def model(tiny_run):
    from unimm.pipeline import load_checkpoint

    return load_checkpoint(tiny_run)[0]


@pytest.fixture(scope="module")
def app(model):
    from unimm.serve.app import create_app

    return create_app(model, api_key=API_KEY)


def _png(side: int, rgb=(200, 40, 40)) -> bytes:
    buf = io.BytesIO()
    PILImage.fromarray(np.full((side, side, 3), rgb, np.uint8)).save(buf, format="PNG")
    return buf.getvalue()


def test_page_and_static_files_are_served_without_a_key(app):
    c = TestClient(app)
    r = c.get("/")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
    assert "/static/app.js" in r.text and "/static/style.css" in r.text
    assert "http://" not in r.text and "https://" not in r.text  # nothing from a CDN
    js = c.get("/static/app.js")
    assert js.status_code == 200 and js.headers["content-type"].startswith("text/javascript")
    css = c.get("/static/style.css")
    assert css.status_code == 200 and css.headers["content-type"].startswith("text/css")
    assert "image-rendering: pixelated" in css.text
    for bad in ["index.html", "web.py", "..%2Fapp.py", "..%2F..%2Fserve%2Fapp.py", "nope.js"]:
        assert c.get(f"/static/{bad}").status_code == 404, bad
    assert c.get("/static/../app.py").status_code == 404
    paths = c.get("/openapi.json").json()["paths"]
    assert "/" not in paths and not any(p.startswith("/static") for p in paths)
    assert c.get("/v1/models").status_code == 401  # the key still guards the API


def _chromium() -> str | None:
    if Path("/usr/bin/chromium").is_file():
        return "/usr/bin/chromium"
    return shutil.which("chromium")


@pytest.fixture(scope="module")
def server_url(app):
    import uvicorn

    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="error"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert time.monotonic() < deadline and thread.is_alive(), "uvicorn did not start"
        time.sleep(0.02)
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(timeout=5)


@pytest.mark.browser
@pytest.mark.timeout(180)
def test_web_page_in_headless_chromium(server_url, model, tmp_path):
    chromium = _chromium()
    if chromium is None:
        pytest.skip("chromium not installed: `apt-get install chromium` (Debian) to run this test")
    sync_api = pytest.importorskip(
        "playwright.sync_api", reason="playwright missing: pip install -e '.[dev]'"
    )
    shots = Path(os.environ.get("UNIMM_WEB_SCREENSHOTS", tmp_path))
    shots.mkdir(parents=True, exist_ok=True)
    side = model.image_resolution
    png = {"name": "red.png", "mimeType": "image/png", "buffer": _png(side)}

    with sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=chromium, headless=True, args=CHROMIUM_ARGS)
        try:
            context = browser.new_context(viewport={"width": 1000, "height": 820})
            # The key as a returning user has it: saved in localStorage by an earlier visit.
            context.add_init_script(f"localStorage.setItem('unimm.apiKey', '{API_KEY}')")
            requests: list[str] = []
            context.on("request", lambda r: requests.append(r.url))
            page = context.new_page()
            console_errors: list[str] = []

            def on_console(msg):
                if msg.type == "error":
                    console_errors.append(msg.text)

            page.on("console", on_console)
            page.on("pageerror", lambda e: console_errors.append(f"pageerror: {e}"))
            page.set_default_timeout(60_000)

            page.goto(server_url + "/")
            page.wait_for_function("document.getElementById('model-name').textContent === 'unimm'")
            assert page.input_value("#api-key") == API_KEY
            assert page.is_hidden("#error")

            # Generate: N inline PNGs; the button is disabled while the request runs.
            page.click("#tab-generate")
            page.evaluate(
                """() => { window.sawDisabled = false; const b = document.getElementById(
                'gen-submit'); new MutationObserver(() => { if (b.disabled) window.sawDisabled =
                true; }).observe(b, {attributes: true}); }"""
            )
            page.fill("#gen-prompt", "a red circle")
            page.fill("#gen-n", "3")
            page.fill("#gen-seed", "7")
            page.fill("#gen-guidance", "2")
            page.click("#gen-submit")
            page.wait_for_function("document.querySelectorAll('#gen-results img').length === 3")
            srcs = page.eval_on_selector_all("#gen-results img", "els => els.map(e => e.src)")
            assert all(s.startswith("data:image/png;base64,") for s in srcs)
            sizes = page.eval_on_selector_all(
                "#gen-results img", "els => els.map(e => [e.naturalWidth, e.complete])"
            )
            assert sizes == [[side, True]] * 3
            assert page.evaluate("window.sawDisabled")
            assert page.is_enabled("#gen-submit")
            page.screenshot(path=str(shots / "generate.png"), full_page=True)

            # Chat: upload a PNG, two turns, the whole history goes out each turn.
            page.click("#tab-chat")
            page.set_input_files("#chat-image", files=[png])
            page.wait_for_selector("#chat-preview:not([hidden])")
            page.fill("#chat-max-tokens", "4")  # the tiny model's context is short
            page.fill("#chat-text", "what is this?")
            with page.expect_request("**/v1/chat/completions") as first:
                page.click("#chat-send")
            page.wait_for_selector(".bubble.assistant")
            assert first.value.headers["authorization"] == f"Bearer {API_KEY}"
            user_img = page.get_attribute(".bubble.user img", "src")
            assert user_img.startswith("data:image/png;base64,")
            page.fill("#chat-text", "and the colour?")
            with page.expect_request("**/v1/chat/completions") as second:
                page.press("#chat-text", "Enter")
            page.wait_for_function("document.querySelectorAll('.bubble.assistant').length === 2")
            msgs = second.value.post_data_json["messages"]
            assert [m["role"] for m in msgs] == ["user", "assistant", "user"]
            assert msgs[0]["content"][0]["type"] == "image_url"
            # An image reply (modalities: ["image"]) shows inline and joins the history.
            page.click("#chat-reset")
            page.check("#chat-draw")
            page.fill("#chat-text", "draw a red circle")
            with page.expect_request("**/v1/chat/completions") as third:
                page.click("#chat-send")
            page.wait_for_function("document.querySelectorAll('.bubble.assistant').length === 1")
            assert third.value.post_data_json["modalities"] == ["image"]
            reply_img = page.get_attribute(".bubble.assistant:last-child img", "src")
            assert reply_img.startswith("data:image/png;base64,")
            assert (
                page.evaluate(
                    "document.querySelector('.bubble.assistant:last-child img').naturalWidth"
                )
                == side
            )
            page.uncheck("#chat-draw")
            page.screenshot(path=str(shots / "chat.png"), full_page=True)

            # Edit: multipart upload, input and output side by side.
            page.click("#tab-edit")
            page.set_input_files("#edit-image", files=[png])
            page.fill("#edit-prompt", "make it blue")
            page.click("#edit-submit")
            page.wait_for_selector("#edit-output:not([hidden])")
            assert page.get_attribute("#edit-input", "src").startswith("data:image/png;base64,")
            assert page.get_attribute("#edit-output", "src").startswith("data:image/png;base64,")
            page.screenshot(path=str(shots / "edit.png"), full_page=True)

            assert console_errors == []
            fetched = [urlsplit(u) for u in requests]
            hosts = {u.hostname for u in fetched if u.scheme not in ("data", "blob")}
            assert hosts == {"127.0.0.1"}, requests

            # API errors land in the visible error box: too-long prompt (400), wrong key (401).
            page.click("#tab-generate")
            page.fill("#gen-prompt", "x" * 2001)
            page.click("#gen-submit")
            page.wait_for_selector("#error:not([hidden])")
            assert "400" in page.text_content("#error") and "prompt" in page.text_content("#error")
            assert page.is_enabled("#gen-submit")
            page.screenshot(path=str(shots / "error.png"), full_page=True)
            page.fill("#api-key", "wrong")
            page.fill("#gen-prompt", "a red circle")
            page.click("#gen-submit")
            page.wait_for_function(
                "document.getElementById('error').textContent.includes('API key')"
            )
            assert page.text_content("#error").startswith("401")
            assert page.evaluate("localStorage.getItem('unimm.apiKey')") == "wrong"
            # Reset clears the conversation.
            page.click("#tab-chat")
            page.click("#chat-reset")
            assert page.locator(".bubble").count() == 0
        finally:
            browser.close()
