"""Who a request sticks to, read from HTTP (the request's life itself: tests/serving/pipeline/test_dispatch.py;
whole requests through the real engine: test_openai_e2e.py)."""

from __future__ import annotations

from starlette.requests import Request

from serving.api.completions import sticky_key
from serving.pipeline.principal import ANONYMOUS, Principal
from serving.protocol import ChatCompletionRequest


def request(headers: dict[str, str] | None = None) -> Request:
    raw = [(name.encode(), value.encode()) for name, value in (headers or {}).items()]
    return Request({"type": "http", "method": "POST", "path": "/v1/chat/completions", "headers": raw})


def chat(**fields: object) -> ChatCompletionRequest:
    return ChatCompletionRequest(model="chat", messages=[{"role": "user", "content": "hi"}], **fields)


def test_a_request_sticks_to_its_user_then_the_header_then_the_api_key():
    keyed = Principal("team-a", "user")
    assert sticky_key(request({"x-servekit-user": "h"}), keyed, chat(user="u")) == "u"
    assert sticky_key(request({"x-servekit-user": "h"}), keyed, chat()) == "h"
    assert sticky_key(request(), keyed, chat()) == "team-a"
    assert sticky_key(request(), ANONYMOUS, chat()) is None
