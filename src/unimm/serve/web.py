"""The browser page at `/`: plain HTML/JS/CSS from the package's `web/` folder, no CDN.

Only the files named in STATIC are served, so a request can never reach another path.
"""

from __future__ import annotations

from importlib.resources import files

from fastapi import APIRouter
from fastapi.responses import HTMLResponse, JSONResponse, Response

STATIC = {
    "app.js": "text/javascript; charset=utf-8",
    "style.css": "text/css; charset=utf-8",
}

web_router = APIRouter(include_in_schema=False)


def _read(name: str) -> bytes:
    return files("unimm.serve").joinpath("web", name).read_bytes()


@web_router.get("/")
def index() -> HTMLResponse:
    return HTMLResponse(_read("index.html"), headers={"Cache-Control": "no-cache"})


@web_router.get("/static/{name}")
def static(name: str) -> Response:
    media_type = STATIC.get(name)
    if media_type is None:
        body = {"error": {"message": "not found", "type": "invalid_request_error", "param": None}}
        return JSONResponse(body, status_code=404)
    return Response(_read(name), media_type=media_type, headers={"Cache-Control": "no-cache"})
