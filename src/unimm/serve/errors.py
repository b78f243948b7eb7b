"""Errors in the OpenAI schema: `{"error": {"message", "type", "param", "code"}}`."""

from __future__ import annotations

from fastapi.responses import JSONResponse

# OpenAI's error types by status, so clients that switch on `type` behave as with OpenAI.
ERROR_TYPES = {
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    429: "rate_limit_error",
    500: "server_error",
    503: "server_error",
}


class APIError(Exception):
    def __init__(
        self,
        status: int,
        message: str,
        param: str | None = None,
        retry_after_s: int | None = None,
    ):
        super().__init__(message)
        self.status, self.message, self.param = status, message, param
        self.retry_after_s = retry_after_s


def error_response(e: APIError) -> JSONResponse:
    body = {
        "error": {
            "message": e.message,
            "type": ERROR_TYPES.get(e.status, "invalid_request_error"),
            "param": e.param,
            "code": None,
        }
    }
    headers = {"Retry-After": str(e.retry_after_s)} if e.retry_after_s is not None else None
    return JSONResponse(body, status_code=e.status, headers=headers)
