"""The server's limits and batching settings, in one place so the CLI, the request schemas and
the OpenAPI document all read the same numbers."""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from pathlib import Path


@dataclass(frozen=True)
class ServeConfig:
    model_name: str = "unimm"
    api_key: str | None = None
    # Request limits: anything past them is a 4xx naming the limit.
    max_image_bytes: int = 4 * 1024 * 1024
    max_prompt_chars: int = 2000
    max_messages: int = 32
    max_images_per_request: int = 8  # images in one chat request
    max_n: int = 8  # images per generation request
    max_tokens: int = 256  # text tokens per chat reply
    # Dynamic batching: requests with the same sampling settings that arrive within
    # batch_window_s of the first one run as one model call of at most max_batch rows.
    max_batch: int = 16
    batch_window_s: float = 0.01
    # Back-pressure: more than max_queue requests waiting -> 429; a request that waited
    # queue_timeout_s without starting -> 503. Both carry Retry-After.
    max_queue: int = 64
    queue_timeout_s: float = 120.0
    retry_after_s: int = 1
    # Folders whose files may be named in image_url (a path or file:// URL); empty = none.
    image_dirs: tuple[Path, ...] = field(default_factory=tuple)

    def __post_init__(self) -> None:
        for f in fields(self):
            v = getattr(self, f.name)
            if isinstance(v, int | float) and not isinstance(v, bool) and v < 0:
                raise ValueError(f"serve setting {f.name} must be >= 0, got {v}")
        for name in ("max_batch", "max_queue", "max_n", "max_tokens", "max_prompt_chars"):
            if getattr(self, name) < 1:
                raise ValueError(f"serve setting {name} must be >= 1, got {getattr(self, name)}")
        dirs = tuple(Path(d).resolve() for d in self.image_dirs)
        for d in dirs:
            if not d.is_dir():
                raise ValueError(f"--allow-image-dir {d}: not a directory")
        object.__setattr__(self, "image_dirs", dirs)
