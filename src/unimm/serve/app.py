"""FastAPI app: chat completions, image generation, models, health and metrics.

Requests run one at a time under a lock (no dynamic batching yet); every malformed
request gets an OpenAI-style error body with a 4xx status.
"""

from __future__ import annotations

import base64
import io
import json
import threading
import time
import uuid
from typing import Annotated, Any, Literal

import numpy as np
from fastapi import FastAPI, File, Form, Request, UploadFile
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse, StreamingResponse
from PIL import Image as PILImage
from pydantic import BaseModel, Field

from unimm.data.sample import Image, Text
from unimm.recipes.base import SamplingConfig, UnifiedModel
from unimm.serve.web import web_router

MAX_IMAGE_BYTES = 4 * 1024 * 1024
MAX_PROMPT_CHARS = 2000
MAX_N = 8


class APIError(Exception):
    def __init__(self, status: int, message: str, param: str | None = None):
        super().__init__(message)
        self.status, self.message, self.param = status, message, param


class ChatMessage(BaseModel):
    role: Literal["system", "user", "assistant"]
    content: str | list[dict[str, Any]]


MAX_SEED = 2**31 - 1  # seeds feed torch.Generator.manual_seed (plus a batch offset)


class ChatRequest(BaseModel):
    model: str
    messages: list[ChatMessage] = Field(min_length=1)
    stream: bool = False
    temperature: float = Field(default=0.0, ge=0.0, le=2.0)
    max_tokens: int = Field(default=48, ge=1, le=256)
    seed: int = Field(default=0, ge=0, le=MAX_SEED)


class ImageRequest(BaseModel):
    prompt: str = Field(min_length=1, max_length=MAX_PROMPT_CHARS)
    model: str | None = None
    n: int = Field(default=1, ge=1, le=MAX_N)
    size: str | None = None
    response_format: Literal["b64_json"] = "b64_json"
    seed: int = Field(default=0, ge=0, le=MAX_SEED)
    guidance: float = Field(default=SamplingConfig().cfg_scale, ge=1.0, le=20.0)


def decode_data_uri(url: str) -> np.ndarray:
    if not url.startswith("data:image/") or ";base64," not in url:
        raise APIError(400, "image_url must be a data:image/...;base64, URI", "image_url")
    raw_b64 = url.split(";base64,", 1)[1]
    if len(raw_b64) > MAX_IMAGE_BYTES * 4 // 3 + 4:
        raise APIError(413, f"image larger than {MAX_IMAGE_BYTES} bytes", "image_url")
    try:
        raw = base64.b64decode(raw_b64, validate=True)
    except ValueError as e:
        raise APIError(400, f"invalid base64 in image_url: {e}", "image_url") from e
    try:
        with PILImage.open(io.BytesIO(raw)) as im:
            return np.asarray(im.convert("RGB"), dtype=np.uint8)
    except Exception as e:  # PIL raises many types for non-image bytes
        raise APIError(400, "image_url bytes are not a readable image", "image_url") from e


def encode_png(pixels: np.ndarray) -> str:
    buf = io.BytesIO()
    PILImage.fromarray(pixels).save(buf, format="PNG")
    return base64.b64encode(buf.getvalue()).decode()


def create_app(
    model: UnifiedModel, model_name: str = "unimm", api_key: str | None = None
) -> FastAPI:
    app = FastAPI(title="unimm", version="0.1.0")
    app.include_router(web_router)
    lock = threading.Lock()
    counters = {"requests": 0, "errors": 0, "images": 0, "latency_sum": 0.0}

    def resize(pixels: np.ndarray) -> np.ndarray:
        r = model.image_resolution
        return np.asarray(PILImage.fromarray(pixels).resize((r, r)), dtype=np.uint8)

    def check_model(name: str | None) -> None:
        if name is not None and name != model_name:
            raise APIError(404, f"unknown model {name!r}; this server has {model_name!r}", "model")

    @app.exception_handler(APIError)
    async def _api_error(_: Request, e: APIError):
        counters["errors"] += 1
        body = {"error": {"message": e.message, "type": "invalid_request_error", "param": e.param}}
        return JSONResponse(body, status_code=e.status)

    @app.exception_handler(RequestValidationError)
    async def _validation(_: Request, e: RequestValidationError):
        counters["errors"] += 1
        msg = "; ".join(f"{'.'.join(map(str, x['loc']))}: {x['msg']}" for x in e.errors())
        body = {"error": {"message": msg, "type": "invalid_request_error", "param": None}}
        return JSONResponse(body, status_code=400)

    @app.middleware("http")
    async def _count(request: Request, call_next):
        t0 = time.perf_counter()
        if api_key is not None and request.url.path.startswith("/v1/"):
            if request.headers.get("authorization") != f"Bearer {api_key}":
                counters["errors"] += 1
                body = {
                    "error": {
                        "message": "missing or wrong API key (Authorization: Bearer KEY)",
                        "type": "invalid_request_error",
                        "param": None,
                    }
                }
                return JSONResponse(body, status_code=401)
        response = await call_next(request)
        counters["requests"] += 1
        counters["latency_sum"] += time.perf_counter() - t0
        return response

    @app.get("/health")
    def health() -> dict:
        return {"status": "ok"}

    @app.get("/v1/models")
    def models() -> dict:
        return {
            "object": "list",
            "data": [{"id": model_name, "object": "model", "owned_by": "unimm"}],
        }

    @app.get("/metrics", response_class=PlainTextResponse)
    def metrics() -> str:
        return "".join(
            f"unimm_{k}_total {v}\n" if k != "latency_sum" else f"unimm_latency_seconds_sum {v}\n"
            for k, v in counters.items()
        )

    @app.post("/v1/chat/completions")
    def chat(req: ChatRequest):
        check_model(req.model)
        segments: list = []
        for m in req.messages:
            parts = (
                [{"type": "text", "text": m.content}] if isinstance(m.content, str) else m.content
            )
            for p in parts:
                if p.get("type") == "text" and isinstance(p.get("text"), str):
                    if len(p["text"]) > MAX_PROMPT_CHARS:
                        raise APIError(
                            413, f"text longer than {MAX_PROMPT_CHARS} chars", "messages"
                        )
                    if m.role == "user":
                        segments.append(Text(p["text"]))
                elif p.get("type") == "image_url" and isinstance(p.get("image_url"), dict):
                    url = p["image_url"].get("url")
                    if not isinstance(url, str):
                        raise APIError(400, "image_url.url must be a string", "messages")
                    segments.append(Image(resize(decode_data_uri(url))))
                else:
                    raise APIError(400, f"unsupported content part {p.get('type')!r}", "messages")
        if not segments:
            raise APIError(400, "no user content in messages", "messages")
        sampling = SamplingConfig(temperature=req.temperature, max_new_tokens=req.max_tokens)
        with lock:
            out = model.generate([segments], "text", sampling, seed=req.seed)[0]
        text = out.text
        cid = f"chatcmpl-{uuid.uuid4().hex}"
        prompt_tokens = sum(len(s.text.split()) for s in segments if isinstance(s, Text))
        usage = {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": len(text.split()),
            "total_tokens": prompt_tokens + len(text.split()),
        }
        if req.stream:

            def events():
                base = {
                    "id": cid,
                    "object": "chat.completion.chunk",
                    "created": int(time.time()),
                    "model": model_name,
                }
                deltas = [({"role": "assistant", "content": text}, None), ({}, "stop")]
                for delta, finish in deltas:
                    choice = {"index": 0, "delta": delta, "finish_reason": finish}
                    yield f"data: {json.dumps({**base, 'choices': [choice]})}\n\n"
                yield "data: [DONE]\n\n"

            return StreamingResponse(events(), media_type="text/event-stream")
        return {
            "id": cid,
            "object": "chat.completion",
            "created": int(time.time()),
            "model": model_name,
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": text},
                    "finish_reason": "stop",
                }
            ],
            "usage": usage,
        }

    @app.post("/v1/images/generations")
    def generations(req: ImageRequest):
        check_model(req.model)
        r = model.image_resolution
        if req.size is not None and req.size != f"{r}x{r}":
            raise APIError(400, f"size must be {r}x{r} for this model", "size")
        sampling = SamplingConfig(cfg_scale=req.guidance)
        with lock:
            imgs = model.generate_images([req.prompt], req.n, seed=req.seed, sampling=sampling)[0]
        counters["images"] += len(imgs)
        return {"created": int(time.time()), "data": [{"b64_json": encode_png(p)} for p in imgs]}

    @app.post("/v1/images/edits")
    async def edits(
        image: Annotated[UploadFile, File()],
        prompt: Annotated[str, Form(min_length=1, max_length=MAX_PROMPT_CHARS)],
        seed: Annotated[int, Form(ge=0, le=MAX_SEED)] = 0,
    ):
        raw = await image.read()
        if len(raw) > MAX_IMAGE_BYTES:
            raise APIError(413, f"image larger than {MAX_IMAGE_BYTES} bytes", "image")
        try:
            with PILImage.open(io.BytesIO(raw)) as im:
                pixels = resize(np.asarray(im.convert("RGB"), dtype=np.uint8))
        except Exception as e:  # PIL raises many types for non-image bytes
            raise APIError(400, "image bytes are not a readable image", "image") from e
        # The chameleon recipe has no trained edit task: the prompt [Image, Text] is
        # accepted by generate(), but the output is not an edit of the input yet.
        with lock:
            out = model.generate([[Image(pixels), Text(prompt)]], "image", SamplingConfig(), seed)
        counters["images"] += 1
        return {"created": int(time.time()), "data": [{"b64_json": encode_png(out[0].pixels)}]}

    return app
