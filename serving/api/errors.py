"""The one place where errors become HTTP responses in OpenAI's shape; nothing leaks a traceback."""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException

from serving.errors import (
    InvalidRequestError,
    MethodNotAllowedError,
    NotFoundError,
    RequestTooLargeError,
    ServekitError,
)

logger = logging.getLogger(__name__)


def error_response(error: ServekitError, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse(error.body(), status_code=error.status_code, headers={**error.headers(), **(headers or {})})


def param_name(location: tuple[str | int, ...]) -> str | None:
    """`("body", "messages", 0, "role")` -> `messages[0].role`."""
    name = ""
    for part in location[1:] if location and location[0] == "body" else location:
        name += f"[{part}]" if isinstance(part, int) else (f".{part}" if name else str(part))
    return name or None


def validation_error(exc: RequestValidationError) -> InvalidRequestError:
    first = exc.errors()[0]
    if first.get("type") == "json_invalid":
        return InvalidRequestError(f"Request body is not valid JSON: {first.get('msg')}", code="invalid_json")
    param = param_name(tuple(first.get("loc", ())))
    if param is None:
        return InvalidRequestError(f"Request body is invalid: {first.get('msg')}")
    return InvalidRequestError(f"Invalid value for `{param}`: {first.get('msg')}", param=param)


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(ServekitError)
    async def servekit_error(_: Request, exc: ServekitError) -> JSONResponse:
        return error_response(exc)

    @app.exception_handler(RequestValidationError)
    async def invalid_request(_: Request, exc: RequestValidationError) -> JSONResponse:
        return error_response(validation_error(exc))

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException) -> JSONResponse:
        if exc.status_code == 404:
            error: ServekitError = NotFoundError(f"No route {request.method} {request.url.path}")
        elif exc.status_code == 405:
            error = MethodNotAllowedError(f"Method {request.method} not allowed on {request.url.path}")
        elif exc.status_code == 413:
            error = RequestTooLargeError(str(exc.detail))
        else:
            error = InvalidRequestError(str(exc.detail))
            error.status_code = exc.status_code
        return error_response(error, headers=dict(exc.headers or {}))

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception) -> JSONResponse:
        logger.exception("unhandled error on %s %s", request.method, request.url.path)
        request_id = getattr(request.state, "request_id", "unknown")
        return error_response(ServekitError(f"Internal server error (request id {request_id})."))
