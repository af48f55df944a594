from __future__ import annotations

import re

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, StreamingResponse
from starlette.routing import Route
from starlette.testclient import TestClient

from serving.api.request_id import HEADER, RequestIdMiddleware


async def seen_id(request: Request) -> PlainTextResponse:
    return PlainTextResponse(request.state.request_id)


async def stream(_: Request) -> StreamingResponse:
    async def chunks():
        yield b"data: 1\n\n"
        yield b"data: [DONE]\n\n"

    return StreamingResponse(chunks(), media_type="text/event-stream")


client = TestClient(RequestIdMiddleware(Starlette(routes=[Route("/id", seen_id), Route("/stream", stream)])))


def test_the_clients_request_id_is_echoed_and_seen_by_the_app():
    response = client.get("/id", headers={HEADER: "abc-123"})
    assert response.headers[HEADER] == "abc-123" and response.text == "abc-123"


def test_without_one_each_request_gets_a_fresh_id_that_the_app_sees_too():
    first, second = client.get("/id"), client.get("/id")
    assert re.fullmatch(r"[0-9a-f]{32}", first.headers[HEADER])
    assert first.headers[HEADER] == first.text and first.headers[HEADER] != second.headers[HEADER]


def test_streamed_responses_carry_the_id_and_their_body_untouched():
    response = client.get("/stream", headers={HEADER: "s-1"})
    assert response.headers[HEADER] == "s-1"
    assert response.text == "data: 1\n\ndata: [DONE]\n\n"
