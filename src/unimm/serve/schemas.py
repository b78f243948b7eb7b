"""Request bodies, built from the server's limits so that the OpenAPI document states exactly
what the server accepts (a request inside the schema is served, one outside it is a 4xx).
Fields OpenAI defines that unimm does not use are ignored, as pydantic ignores unknown keys."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field

from unimm.recipes.base import SamplingConfig
from unimm.serve.config import ServeConfig

MAX_SEED = 2**31 - 1  # seeds feed torch.Generator.manual_seed (plus the image index)


class ImageURL(BaseModel):
    url: str = Field(description="data:image/...;base64,... or a path inside --allow-image-dir")
    detail: str | None = None  # accepted for OpenAI compatibility, ignored


class TextPart(BaseModel):
    type: Literal["text"]
    text: str


class ImagePart(BaseModel):
    type: Literal["image_url"]
    image_url: ImageURL


def request_models(cfg: ServeConfig) -> tuple[type[BaseModel], type[BaseModel]]:
    """(ChatRequest, ImageRequest) with cfg's limits in their field constraints."""

    class ChatMessage(BaseModel):
        role: Literal["system", "user", "assistant"]
        content: str | list[TextPart | ImagePart]

    class ChatRequest(BaseModel):
        model: str
        messages: list[ChatMessage] = Field(min_length=1, max_length=cfg.max_messages)
        stream: bool = False
        temperature: float = Field(default=0.0, ge=0.0, le=2.0)
        top_p: float | None = Field(default=None, gt=0.0, le=1.0)
        max_tokens: int = Field(default=48, ge=1, le=cfg.max_tokens)
        seed: int = Field(default=0, ge=0, le=MAX_SEED)
        modalities: list[Literal["text", "image"]] = Field(
            default=["text"],
            min_length=1,
            description='["image"] (or ["text", "image"]) makes the reply an image: it comes '
            "back in choices[0].message.images as a data: URI",
        )
        guidance: float = Field(default=SamplingConfig().cfg_scale, ge=1.0, le=20.0)

    class ImageRequest(BaseModel):
        prompt: str = Field(min_length=1, max_length=cfg.max_prompt_chars)
        model: str | None = None
        n: int = Field(default=1, ge=1, le=cfg.max_n)
        size: str | None = None
        response_format: Literal["b64_json"] = "b64_json"
        seed: int = Field(default=0, ge=0, le=MAX_SEED)
        guidance: float = Field(default=SamplingConfig().cfg_scale, ge=1.0, le=20.0)
        steps: int | None = Field(default=None, ge=1, le=256)

    return ChatRequest, ImageRequest
