"""Paths with control characters (e.g. `%0A` in a version name) get an OpenAI-shaped 400.

Installed on BentoML's own app, in front of its routing: BentoML mounts servekit at `/` with a pattern whose `.`
does not match a newline, so such a path would otherwise get BentoML's plain-text 404."""

from __future__ import annotations

from starlette.types import ASGIApp, Receive, Scope, Send

from serving.api.errors import error_response
from serving.errors import InvalidRequestError


class PathGuardMiddleware:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and any(ord(char) < 0x20 or ord(char) == 0x7F for char in scope["path"]):
            error = InvalidRequestError(f"The path {scope['path']!r} contains control characters.", code="invalid_path")
            await error_response(error)(scope, receive, send)
            return
        await self.app(scope, receive, send)
