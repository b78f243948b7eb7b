"""FastAPI app: OpenAI-compatible chat completions, image generation and edits, models, health
and Prometheus metrics, over one dynamically batched model (unimm.serve.batcher).

Every malformed request gets an OpenAI-style error body with a 4xx status; overload gets 429
(queue full) or 503 (waited too long) with Retry-After. docs/SERVING.md is the user's guide.
"""

import asyncio
import contextlib
import json
import time
import uuid
from typing import Annotated, Any

from fastapi import FastAPI, File, Form, Request, UploadFile
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response, StreamingResponse
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException

from unimm.conversation import Turn, conversation_prompt
from unimm.data.sample import Image, Segment, Text
from unimm.recipes.base import Modality, SamplingConfig, UnifiedModel
from unimm.serve.batcher import DynamicBatcher, QueueFull
from unimm.serve.config import ServeConfig
from unimm.serve.errors import APIError, error_response
from unimm.serve.images import encode_png, png_data_uri, read_image_bytes, read_image_url, resize
from unimm.serve.metrics import ServerMetrics
from unimm.serve.schemas import MAX_SEED, request_models
from unimm.serve.web import web_router


def create_app(
    model: UnifiedModel,
    model_name: str | None = None,
    api_key: str | None = None,
    config: ServeConfig | None = None,
) -> FastAPI:
    cfg = config or ServeConfig()
    model_name = model_name or cfg.model_name
    api_key = api_key if api_key is not None else cfg.api_key
    ChatRequest, ImageRequest = request_models(cfg)
    metrics = ServerMetrics()
    batcher = DynamicBatcher(
        model, cfg.max_batch, cfg.batch_window_s, cfg.max_queue, on_batch=metrics.on_batch
    )
    text_tok = getattr(model, "text_tok", None)

    @contextlib.asynccontextmanager
    async def lifespan(_: FastAPI):
        yield
        batcher.close()

    app = FastAPI(title="unimm", version="0.1.0", lifespan=lifespan)
    app.state.batcher, app.state.metrics, app.state.config = batcher, metrics, cfg
    app.include_router(web_router)

    def count_tokens(text: str) -> int:
        return len(text_tok.encode(text)) if text_tok is not None else len(text.split())

    def check_model(name: str | None) -> None:
        if name is not None and name != model_name:
            raise APIError(404, f"unknown model {name!r}; this server has {model_name!r}", "model")

    async def run(
        prompts: list[list[Segment]], modality: Modality, sampling: SamplingConfig, seeds: list
    ) -> list[Segment]:
        """Queue the rows on the batcher and wait for them, with back-pressure."""
        try:
            future = batcher.submit(prompts, modality, sampling, seeds)
        except QueueFull as e:
            metrics.rejected.labels("queue_full").inc()
            raise APIError(429, f"server busy: {e}; retry later", None, cfg.retry_after_s) from e
        metrics.queue_depth.set(batcher.depth)
        waiting = asyncio.wrap_future(future)
        try:
            return await asyncio.wait_for(asyncio.shield(waiting), cfg.queue_timeout_s)
        except TimeoutError:
            if future.cancel():  # only succeeds while the job still waits in the queue
                metrics.rejected.labels("queue_timeout").inc()
                raise APIError(
                    503,
                    f"no model time within {cfg.queue_timeout_s:g} s; retry later",
                    None,
                    cfg.retry_after_s,
                ) from None
            return await waiting  # already on the model: let it finish
        except ValueError as e:  # the recipe refused the prompt (too long, unsupported task...)
            raise APIError(400, str(e), "messages" if modality == "text" else "prompt") from e
        finally:
            metrics.queue_depth.set(batcher.depth)

    @app.exception_handler(APIError)
    async def _api_error(_: Request, e: APIError):
        return error_response(e)

    @app.exception_handler(RequestValidationError)
    async def _validation(_: Request, e: RequestValidationError):
        msg = "; ".join(f"{'.'.join(map(str, x['loc']))}: {x['msg']}" for x in e.errors())
        return error_response(APIError(400, msg))

    @app.exception_handler(StarletteHTTPException)
    async def _http(_: Request, e: StarletteHTTPException):
        # Starlette's own refusals (malformed multipart, wrong method, unknown route) in the
        # same schema as ours.
        return error_response(APIError(e.status_code, str(e.detail)))

    @app.exception_handler(Exception)
    async def _unexpected(_: Request, e: Exception):
        return error_response(APIError(500, f"internal error: {type(e).__name__}: {e}"))

    @app.middleware("http")
    async def _auth_and_count(request: Request, call_next):
        t0 = time.perf_counter()
        if api_key is not None and request.url.path.startswith("/v1/"):
            if request.headers.get("authorization") != f"Bearer {api_key}":
                response = error_response(
                    APIError(401, "missing or wrong API key (Authorization: Bearer KEY)")
                )
            else:
                response = await call_next(request)
        else:
            response = await call_next(request)
        route = request.scope.get("route")
        endpoint = getattr(route, "path", "other")  # the route template, never a raw URL
        metrics.requests.labels(endpoint, str(response.status_code)).inc()
        metrics.latency.labels(endpoint).observe(time.perf_counter() - t0)
        if response.status_code >= 400:
            metrics.errors.inc()
        return response

    @app.get("/health")
    def health() -> dict:
        return {"status": "ok", "model": model_name, "queue_depth": batcher.depth}

    @app.get("/v1/models")
    def models() -> dict:
        return {
            "object": "list",
            "data": [{"id": model_name, "object": "model", "owned_by": "unimm"}],
        }

    @app.get("/metrics")
    def prometheus() -> Response:
        metrics.queue_depth.set(batcher.depth)
        return Response(metrics.render(), media_type="text/plain; version=0.0.4")

    def chat_prompt(req: Any) -> list[Segment]:
        """Messages -> one prompt. System messages are dropped (the recipes have no system
        role); user and assistant turns keep their text and images in order."""
        turns: list[Turn] = []
        n_images = 0
        for k, m in enumerate(req.messages):
            if m.role == "system":
                continue
            parts = [m.content] if isinstance(m.content, str) else m.content
            content: list = []
            for p in parts:
                text = p if isinstance(p, str) else getattr(p, "text", None)
                if text is not None:
                    if len(text) > cfg.max_prompt_chars:
                        raise APIError(
                            413, f"messages[{k}]: text longer than {cfg.max_prompt_chars} chars"
                        )
                    content.append(text)
                else:
                    n_images += 1
                    if n_images > cfg.max_images_per_request:
                        raise APIError(
                            413, f"more than {cfg.max_images_per_request} images", "messages"
                        )
                    pixels = read_image_url(p.image_url.url, cfg)
                    content.append(Image(resize(pixels, model.image_resolution)))
            turns.append(Turn(m.role, content))
        try:
            return conversation_prompt(turns)
        except ValueError as e:
            raise APIError(400, str(e), "messages") from e

    @app.post("/v1/chat/completions")
    async def chat(req: ChatRequest):
        check_model(req.model)
        prompt = await run_in_threadpool(chat_prompt, req)
        modality: Modality = "image" if "image" in req.modalities else "text"
        if modality == "image":
            sampling = SamplingConfig(cfg_scale=req.guidance)
        else:
            sampling = SamplingConfig(
                temperature=req.temperature, top_p=req.top_p, max_new_tokens=req.max_tokens
            )
        out = (await run([prompt], modality, sampling, [req.seed]))[0]
        message: dict[str, Any] = {"role": "assistant", "content": ""}
        if isinstance(out, Image):
            metrics.images.inc()
            url = await run_in_threadpool(png_data_uri, out.pixels)
            message["images"] = [{"type": "image_url", "image_url": {"url": url}}]
        else:
            message["content"] = out.text
        prompt_tokens = sum(count_tokens(s.text) for s in prompt if isinstance(s, Text))
        completion_tokens = count_tokens(message["content"])
        usage = {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens,
        }
        cid, created = f"chatcmpl-{uuid.uuid4().hex}", int(time.time())
        if req.stream:
            # The samplers produce a whole reply per batch, so the stream carries it as one
            # delta; clients that read deltas work unchanged.
            def events():
                base = {
                    "id": cid,
                    "object": "chat.completion.chunk",
                    "created": created,
                    "model": model_name,
                }
                for delta, finish in [(message, None), ({}, "stop")]:
                    choice = {"index": 0, "delta": delta, "finish_reason": finish}
                    yield f"data: {json.dumps({**base, 'choices': [choice]})}\n\n"
                yield "data: [DONE]\n\n"

            return StreamingResponse(events(), media_type="text/event-stream")
        return {
            "id": cid,
            "object": "chat.completion",
            "created": created,
            "model": model_name,
            "choices": [{"index": 0, "message": message, "finish_reason": "stop"}],
            "usage": usage,
        }

    async def image_reply(prompts: list[list[Segment]], sampling: SamplingConfig, seed: int):
        # Image i of a request with seed s is drawn from seed s + i, whoever shares the batch.
        seeds = [seed + i for i in range(len(prompts))]
        out = await run(prompts, "image", sampling, seeds)
        metrics.images.inc(len(out))
        data = [{"b64_json": await run_in_threadpool(encode_png, s.pixels)} for s in out]
        return {"created": int(time.time()), "data": data}

    @app.post("/v1/images/generations")
    async def generations(req: ImageRequest):
        check_model(req.model)
        r = model.image_resolution
        if req.size is not None and req.size != f"{r}x{r}":
            raise APIError(400, f"size must be {r}x{r} for this model", "size")
        sampling = SamplingConfig(cfg_scale=req.guidance, steps=req.steps)
        return await image_reply([[Text(req.prompt)]] * req.n, sampling, req.seed)

    @app.post("/v1/images/edits")
    async def edits(
        image: Annotated[UploadFile, File()],
        prompt: Annotated[str, Form(min_length=1, max_length=cfg.max_prompt_chars)],
        n: Annotated[int, Form(ge=1, le=cfg.max_n)] = 1,
        seed: Annotated[int, Form(ge=0, le=MAX_SEED)] = 0,
        model_field: Annotated[str | None, Form(alias="model")] = None,
    ):
        check_model(model_field)
        raw = await image.read(cfg.max_image_bytes + 1)
        pixels = await run_in_threadpool(read_image_bytes, raw, "image", cfg)
        source = Image(resize(pixels, model.image_resolution))
        return await image_reply([[source, Text(prompt)]] * n, SamplingConfig(), seed)

    return app
