from __future__ import annotations

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route
from starlette.testclient import TestClient

from serving.api.body_limit import BodyLimitMiddleware

LIMIT = 64


async def echo_length(request: Request) -> PlainTextResponse:
    return PlainTextResponse(str(len(await request.body())))


def client() -> TestClient:
    app = Starlette(routes=[Route("/echo", echo_length, methods=["POST"])])
    return TestClient(BodyLimitMiddleware(app, max_bytes=LIMIT))


def test_a_body_over_the_limit_is_refused_from_its_content_length_in_openai_shape():
    refused = client().post("/echo", content=b"x" * (LIMIT + 1))
    assert refused.status_code == 413
    error = refused.json()["error"]
    assert error["code"] == "request_too_large" and error["type"] == "invalid_request_error"
    assert f"{LIMIT + 1} bytes" in error["message"] and f"{LIMIT} bytes" in error["message"]


def test_bodies_up_to_the_limit_and_chunked_ones_reach_the_app_whole():
    assert client().post("/echo", content=b"x" * LIMIT).text == str(LIMIT)
    chunked = client().post("/echo", content=iter([b"a" * 10, b"b" * 10]))  # no Content-Length to judge by
    assert chunked.status_code == 200 and chunked.text == "20"
