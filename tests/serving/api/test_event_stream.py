from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from starlette.types import Message

from serving.api.event_stream import EventStreamResponse

SCOPE = {"type": "http", "asgi": {"version": "3.0", "spec_version": "2.3"}}


class Client:
    """An ASGI server's side of one request: records what is sent, and can leave mid-stream."""

    def __init__(self) -> None:
        self.sent: list[Message] = []
        self.gone = asyncio.Event()

    async def receive(self) -> Message:
        await self.gone.wait()
        return {"type": "http.disconnect"}

    async def send(self, message: Message) -> None:
        self.sent.append(message)
        await asyncio.sleep(0)

    @property
    def body(self) -> bytes:
        return b"".join(m.get("body", b"") for m in self.sent if m["type"] == "http.response.body")


async def ticking(started: asyncio.Event) -> AsyncIterator[bytes]:
    """A stream that never ends by itself; `started` is set once it runs."""
    while True:
        started.set()
        yield b"data: x\n\n"
        await asyncio.sleep(0.01)


async def test_chunks_are_sent_in_order_with_the_event_stream_type_and_headers():
    async def events() -> AsyncIterator[bytes]:
        for n in range(3):
            yield f"data: {n}\n\n".encode()

    client = Client()
    await EventStreamResponse(events(), headers={"x-servekit-version": "m:1"})(SCOPE, client.receive, client.send)
    start = client.sent[0]
    assert start["status"] == 200
    assert (b"content-type", b"text/event-stream; charset=utf-8") in start["headers"]
    assert (b"x-servekit-version", b"m:1") in start["headers"]
    assert client.body == b"data: 0\n\ndata: 1\n\ndata: 2\n\n"
    assert client.sent[-1] == {"type": "http.response.body", "body": b"", "more_body": False}


async def test_a_client_leaving_mid_stream_closes_the_stream_and_the_response_returns():
    closed = asyncio.Event()

    async def endless(client: Client) -> AsyncIterator[bytes]:
        try:
            for n in range(1_000_000):
                if n == 5:
                    client.gone.set()
                yield b"data: x\n\n"
                await asyncio.sleep(0.001)
        finally:
            closed.set()

    async def serve(client: Client) -> int:
        await EventStreamResponse(endless(client))(SCOPE, client.receive, client.send)
        await asyncio.sleep(0)  # the server's task goes on: no cancellation is left pending on it
        return asyncio.current_task().cancelling()

    client = Client()
    assert await asyncio.wait_for(asyncio.create_task(serve(client)), timeout=5) == 0
    assert closed.is_set()
    assert 5 <= client.body.count(b"data: x") < 20


async def test_a_cancellation_from_outside_still_propagates():
    started = asyncio.Event()
    client = Client()
    task = asyncio.create_task(EventStreamResponse(ticking(started))(SCOPE, client.receive, client.send))
    await started.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


async def test_a_failed_disconnect_watch_does_not_swallow_a_cancellation_from_outside():
    started = asyncio.Event()
    failed = asyncio.Event()

    async def broken_receive() -> Message:
        failed.set()
        raise RuntimeError("receive failed")

    client = Client()
    task = asyncio.create_task(EventStreamResponse(ticking(started))(SCOPE, broken_receive, client.send))
    await started.wait()
    await failed.wait()  # wakes after the watcher's failing step has ended
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


async def test_on_close_runs_also_when_the_stream_never_started():
    """The client left before the first byte: the stream's generator never ran, yet what it held comes back."""
    closed = asyncio.Event()

    async def never_read() -> AsyncIterator[bytes]:
        yield b"data: {}\n\n"

    async def on_close() -> None:
        closed.set()

    async def refuse(message: dict) -> None:
        raise OSError("the client is gone")

    with pytest.raises(OSError):
        await EventStreamResponse(never_read(), on_close=on_close)(SCOPE, asyncio.Event().wait, refuse)
    assert closed.is_set()
