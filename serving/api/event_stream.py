"""A server-sent-events response relayed from the request's own task, stopped when the client goes away.

Starlette's `StreamingResponse` (under uvicorn, which declares ASGI spec 2.3) runs every stream in an anyio task
group: a second task per stream, a cancel scope, and a task switch for every chunk it sends. Here the chunks are
sent by the request's task itself, and one plain asyncio task waits for the client's `http.disconnect` and
cancels the relay, so the engine's stream is still closed (and the engine aborts the request) when a client
leaves mid-stream.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable

from fastapi.responses import StreamingResponse
from starlette.types import Receive, Scope, Send


class EventStreamResponse(StreamingResponse):
    media_type = "text/event-stream"

    def __init__(
        self,
        content: AsyncIterator[bytes],
        headers: dict[str, str] | None = None,
        on_close: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        """`on_close` runs once the response is over, also when the stream never started (a client that left
        before the first byte), so what the stream holds is always given back."""
        super().__init__(content, headers=headers)
        self.on_close = on_close

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        relay = asyncio.current_task()
        assert relay is not None, "an ASGI app runs inside a task"
        watcher = asyncio.create_task(_cancel_when_client_leaves(receive, relay))
        try:
            await self.stream_response(send)
        except asyncio.CancelledError:
            if not _cancelled_the_relay(watcher):
                raise  # cancelled from outside (server shutdown), not by the client leaving
            relay.uncancel()
        finally:
            watcher.cancel()
            if self.on_close is not None:
                await self.on_close()


async def _cancel_when_client_leaves(receive: Receive, relay: asyncio.Task[object]) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass
    relay.cancel()


def _cancelled_the_relay(watcher: asyncio.Task[None]) -> bool:
    """The watcher ran to its end, so the client left (a watcher that failed cancelled nothing)."""
    return watcher.done() and not watcher.cancelled() and watcher.exception() is None
