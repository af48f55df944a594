"""Refuse oversized bodies from their Content-Length, before anything reads or parses them."""

from __future__ import annotations

from starlette.types import ASGIApp, Receive, Scope, Send

from serving.api.errors import error_response
from serving.errors import RequestTooLargeError


class BodyLimitMiddleware:
    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            declared = next((v for k, v in scope["headers"] if k == b"content-length"), b"")
            if declared.isdigit() and int(declared) > self.max_bytes:
                error = RequestTooLargeError(
                    f"Request body is {int(declared)} bytes; the limit is {self.max_bytes} bytes."
                )
                await error_response(error)(scope, receive, send)
                return
        await self.app(scope, receive, send)
