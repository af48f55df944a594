"""CompletionRoute on a bare FastAPI app: one-pass parsing, the usual error shape, auth, and OpenAPI."""

from __future__ import annotations

import pytest
from fastapi import APIRouter, Depends, FastAPI, Request
from fastapi.responses import JSONResponse
from fastapi.testclient import TestClient

from serving.api.auth import authenticate, key_digest
from serving.api.completion_route import CompletionRoute
from serving.api.errors import install_error_handlers
from serving.protocol import ChatCompletionRequest
from serving.settings import ApiKey

CHAT = {"model": "m", "messages": [{"role": "user", "content": "hi"}], "top_k": 5}


def app_with_route(keys: dict[str, ApiKey] | None = None) -> FastAPI:
    app = FastAPI()
    app.state.api_keys = keys or {}
    install_error_handlers(app)
    router = APIRouter(route_class=CompletionRoute)

    @router.post("/v1/chat/completions")
    async def chat(body: ChatCompletionRequest, request: Request) -> JSONResponse:
        return JSONResponse({"body": body.model_dump(exclude_unset=True), "key": request.state.principal.key_id})

    app.include_router(router)
    return app


def test_the_endpoint_gets_the_validated_model_with_unknown_fields_kept():
    response = TestClient(app_with_route()).post("/v1/chat/completions", json=CHAT)
    assert response.status_code == 200
    assert response.json() == {"body": CHAT, "key": "anonymous"}


@pytest.mark.parametrize(
    ("content", "param", "code"),
    [
        (b'{"model": "m", "messages": [', None, "invalid_json"),
        (b"", None, "invalid_json"),
        (b'{"model": "m", "messages": [{"role": "user", "content": "hi"}], "temperature": "hot"}', "temperature", None),
        (b'{"model": "m", "messages": []}', "messages", None),
        (b'{"model": "m", "messages": [{"role": "robot"}]}', "messages[0].role", None),
        (b"[1, 2]", None, None),
    ],
)
def test_invalid_bodies_are_400_in_the_openai_shape(content, param, code):
    response = TestClient(app_with_route()).post("/v1/chat/completions", content=content)
    assert response.status_code == 400
    error = response.json()["error"]
    assert (error["type"], error["param"], error["code"]) == ("invalid_request_error", param, code)


def test_the_caller_is_authenticated_before_the_body_is_read():
    app = app_with_route({key_digest("sk-good"): ApiKey(id="team", sha256=key_digest("sk-good"))})
    client = TestClient(app)
    assert client.post("/v1/chat/completions", content=b"not json").status_code == 401
    ok = client.post("/v1/chat/completions", json=CHAT, headers={"Authorization": "Bearer sk-good"})
    assert ok.json()["key"] == "team"


def test_openapi_documents_the_request_body():
    schema = app_with_route().openapi()["paths"]["/v1/chat/completions"]["post"]["requestBody"]
    assert schema["content"]["application/json"]["schema"]["$ref"].endswith("/ChatCompletionRequest")


def test_a_completion_route_refuses_dependencies_it_would_not_run():
    router = APIRouter(route_class=CompletionRoute, dependencies=[Depends(authenticate)])
    with pytest.raises(TypeError, match="runs no dependencies"):

        @router.post("/v1/chat/completions")
        async def chat(body: ChatCompletionRequest, request: Request) -> JSONResponse:
            raise AssertionError
