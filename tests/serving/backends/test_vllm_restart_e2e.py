"""A killed engine is noticed at once and restarted by its supervisor (runs last: it disrupts the server)."""

from __future__ import annotations

import json
import os
import signal
import threading
import time

import httpx
import pytest

from loadtest.stream_client import iter_sse_lines
from tests.conftest import ENGINE_READY_TIMEOUT_S, listening_pid, wait_for


def stream_outcome(base_url: str, outcomes: list[str], started: threading.Event) -> None:
    """How a stream that was running when the engine died ended, as the client saw it."""
    body = {
        "model": "smollm2-135m-instruct", "messages": [{"role": "user", "content": "Tell a long story."}],
        "max_tokens": 400, "ignore_eos": True, "stream": True,
    }  # fmt: skip
    last = ""
    try:
        with httpx.stream("POST", f"{base_url}/v1/chat/completions", json=body, timeout=60) as response:
            for line in iter_sse_lines(response):
                started.set()
                last = line or last
        if last == "data: [DONE]":
            outcomes.append("completed")
        elif last.startswith("data: ") and {"message", "type", "param", "code"} <= json.loads(last[6:])["error"].keys():
            outcomes.append("error event")
        else:
            outcomes.append(f"cut off after {last[:80]!r}")
    except httpx.HTTPError as exc:
        outcomes.append(f"connection error {exc!r}")


@pytest.mark.disruptive
@pytest.mark.timeout(ENGINE_READY_TIMEOUT_S + 300)  # it waits for the restarted engine's start
def test_killed_engine_turns_ready_red_then_is_restarted(server, random_adapters):
    adapter = random_adapters["b"].tag
    assert httpx.post(f"{server.base_url}/admin/models/{adapter}/load", timeout=120).status_code == 200
    outcomes: list[str] = []
    started = [threading.Event() for _ in range(3)]
    streams = [threading.Thread(target=stream_outcome, args=(server.base_url, outcomes, e)) for e in started]
    for thread in streams:
        thread.start()
    assert all(event.wait(60) for event in started)
    engine_pid = listening_pid(server.engine_port)
    os.kill(engine_pid, signal.SIGKILL)
    for thread in streams:
        thread.join(60)
    # Every accepted stream ends cleanly: finished, or told in an OpenAI-shaped error event (never cut off).
    assert len(outcomes) == 3 and set(outcomes) <= {"completed", "error event"}, outcomes
    while httpx.get(f"{server.base_url}/ready").status_code == 200:  # however long noticing takes here
        time.sleep(0.1)
    response = httpx.post(
        f"{server.base_url}/v1/chat/completions",
        json={"model": "smollm2-135m-instruct", "messages": [{"role": "user", "content": "hi"}]},
    )
    assert response.status_code == 503
    wait_for(f"{server.base_url}/ready", server.process, ENGINE_READY_TIMEOUT_S)
    assert listening_pid(server.engine_port) != engine_pid
    response = httpx.post(
        f"{server.base_url}/v1/chat/completions",
        json={
            "model": "smollm2-135m-instruct",
            "messages": [{"role": "user", "content": "hi"}],
            "max_tokens": 4,
        },
    )
    assert response.status_code == 200
    again = httpx.post(
        f"{server.base_url}/v1/chat/completions",
        json={"model": adapter, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4},
    )
    assert again.status_code == 200, "adapters loaded before the crash must be served again after the restart"
