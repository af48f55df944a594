"""A trivial OpenAI-shaped server that answers instantly: the target for measuring the load generator's own
ceiling (if it cannot outrun this, it would be the bottleneck against a real model) and for offline tries.

    python -m loadtest.fake_server --port 8999 --tokens 8
    python -m loadtest run --url http://127.0.0.1:8999 --model fake --users 32 --duration 20s --max-tokens 8
"""

from __future__ import annotations

import json
import time

import typer
from aiohttp import web

VERSION = "fake:0"


def chunk(payload: dict) -> bytes:
    return f"data: {json.dumps(payload)}\n\n".encode()


def make_app(tokens: int, fail_every: int = 0, serves: str = VERSION) -> web.Application:
    """`fail_every` N > 0: every Nth generation answers 500, to check that errors are counted, not fatal.
    `serves`: the registry tag it claims to serve (its card's `root`, its name the card's `id`)."""
    served = 0

    async def health(_: web.Request) -> web.Response:
        return web.Response(text="ok")

    async def stats(_: web.Request) -> web.Response:
        """How many generations it received: the ground truth a load test's own count is checked against."""
        return web.json_response({"generations": served})

    async def models(_: web.Request) -> web.Response:
        card = {"id": serves.split(":")[0], "object": "model", "created": int(time.time()), "root": serves,
                "ready": True, "engine": "fake"}  # fmt: skip
        return web.json_response({"object": "list", "data": [card]}, headers={"x-servekit-version": serves})

    async def generate(request: web.Request) -> web.StreamResponse:
        nonlocal served
        served += 1
        if fail_every and served % fail_every == 0:
            error = {"error": {"message": "injected failure", "type": "server_error", "param": None, "code": None}}
            return web.json_response(error, status=500, headers={"x-servekit-version": serves})
        body = await request.json()
        count = min(tokens, int(body.get("max_tokens") or tokens))
        key = "text" if "prompt" in body else "delta"
        usage = {"prompt_tokens": 5, "completion_tokens": count, "total_tokens": 5 + count}
        if not body.get("stream"):
            choice = {"index": 0, "message": {"role": "assistant", "content": "x" * count}, "finish_reason": "length"}
            payload = {"object": "chat.completion", "choices": [choice], "usage": usage}
            return web.json_response(payload, headers={"x-servekit-version": serves})
        response = web.StreamResponse(headers={"content-type": "text/event-stream", "x-servekit-version": serves})
        await response.prepare(request)
        text = {"text": "x"} if key == "text" else {"delta": {"content": "x"}}
        pieces = [chunk({"choices": [{"index": 0, **text}]}) for _ in range(count)]
        pieces += [chunk({"choices": [], "usage": usage}), b"data: [DONE]\n\n"]
        await response.write(b"".join(pieces))
        await response.write_eof()
        return response

    app = web.Application()
    app.router.add_get("/health", health)  # lets servekit use it as an engine (`engine.url`)
    app.router.add_get("/v1/models", models)
    app.router.add_get("/stats", stats)
    app.router.add_post("/v1/chat/completions", generate)
    app.router.add_post("/v1/completions", generate)
    return app


def main(
    port: int = typer.Option(8999),
    tokens: int = typer.Option(8, help="Tokens per answer."),
    fail_every: int = typer.Option(0, help="Answer 500 to every Nth generation (0: never)."),
    serves: str = typer.Option(VERSION, help="The version (name:version) it claims to serve."),
) -> None:
    """Serve on 127.0.0.1:PORT until interrupted."""
    web.run_app(make_app(tokens, fail_every, serves), host="127.0.0.1", port=port, access_log=None, print=None)


if __name__ == "__main__":
    typer.run(main)
