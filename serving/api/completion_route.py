"""The completion routes' request handling, without FastAPI's per-request dependency machinery.

For every request FastAPI runs `solve_dependencies` (a throwaway `Response`, query, header and cookie parsing, a
dependency cache), parses the body with the standard library's `json` and then validates the dict. On the two hot
routes the body is parsed and validated in one pass by pydantic (`model_validate_json`) and the caller is
authenticated directly. The routes keep their body model, so OpenAPI documents them as before, and invalid bodies
raise the same `RequestValidationError` the one error layer renders.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from fastapi import Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.routing import APIRoute
from pydantic import BaseModel, ValidationError

from serving.api.auth import authenticate


class CompletionRoute(APIRoute):
    """An `APIRoute` whose endpoint is `endpoint(body, request)`, the body one pydantic model."""

    def __init__(self, path: str, endpoint: Callable[..., Any], **kwargs: Any) -> None:
        super().__init__(path, endpoint, **kwargs)
        if self.dependant.dependencies:
            raise TypeError(f"{path}: a CompletionRoute authenticates by itself and runs no dependencies")

    def get_route_handler(self) -> Callable[[Request], Awaitable[Response]]:
        body_model: type[BaseModel] = self.body_field.field_info.annotation  # type: ignore[union-attr]
        endpoint = self.endpoint

        async def handle(request: Request) -> Response:
            await authenticate(request)
            try:
                body = body_model.model_validate_json(await request.body())
            except ValidationError as exc:
                raise RequestValidationError(exc.errors(include_url=False)) from None
            return await endpoint(body, request)

        return handle
