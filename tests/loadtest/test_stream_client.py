"""The SSE line splitter every load-test and benchmark client reads streams with."""

from __future__ import annotations

import json

from aiohttp import web

from loadtest.stream_client import run_concurrent, split_sse


def test_sse_lines_split_only_at_line_feeds():
    """A token may carry U+2028 or U+0085 inside the JSON string: those must not end a line (httpx's iter_lines
    splits there, which cut a chunk in two in CI)."""
    payload = 'data: {"content":"a\u2028b\x85c"}\r\n\r\ndata: [DONE]\n\n'.encode()
    lines, rest = [], b""
    for i in range(0, len(payload), 3):  # arbitrary chunk boundaries, some inside multi-byte characters
        more, rest = split_sse(rest, payload[i : i + 3])
        lines += more
    assert lines == ['data: {"content":"a\u2028b\x85c"}', "", "data: [DONE]", ""] and rest == b""


async def keyed_server() -> tuple[web.AppRunner, str]:
    """A streaming chat endpoint that refuses every request without `Authorization: Bearer sk-load`."""

    async def chat(request: web.Request) -> web.StreamResponse:
        if request.headers.get("Authorization") != "Bearer sk-load":
            return web.json_response({"error": {"message": "Invalid API key."}}, status=401)
        response = web.StreamResponse(headers={"content-type": "text/event-stream"})
        await response.prepare(request)
        for chunk in ({"choices": [{"delta": {"content": "hi"}}]}, {"choices": [], "usage": {"completion_tokens": 1}}):
            await response.write(f"data: {json.dumps(chunk)}\n\n".encode())
        await response.write(b"data: [DONE]\n\n")
        return response

    app = web.Application()
    app.router.add_post("/v1/chat/completions", chat)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    return runner, f"http://127.0.0.1:{port}"


async def test_benchmark_and_soak_requests_carry_openai_api_key(monkeypatch):
    runner, url = await keyed_server()
    try:
        refused, _ = await run_concurrent(url, "m", ["a"], 4, 1)
        monkeypatch.setenv("OPENAI_API_KEY", "sk-load")
        served, _ = await run_concurrent(url, "m", ["a", "b"], 4, 2)
    finally:
        await runner.cleanup()
    assert [(r.ok, (r.error or "")[:8]) for r in refused] == [(False, "HTTP 401")]
    assert [(r.ok, r.output_tokens) for r in served] == [(True, 1), (True, 1)]
