"""Graceful drain: SIGTERM to `bentoml serve` while streams are in flight. New connections are refused at once,
every stream already started runs to its end (`[DONE]`, all its tokens), then the process exits cleanly."""

from __future__ import annotations

import json
import os
import signal
import threading
import time

import httpx

from loadtest.stream_client import iter_sse_lines
from tests.conftest import GATEWAY_UP_TIMEOUT_S, start_bentoml, stop, wait_for

BASE = "smollm2-135m-instruct"
STREAMS, TOKENS = 3, 48


def stream(base_url: str, results: list[dict], started: threading.Event) -> None:
    body = {
        "model": BASE, "messages": [{"role": "user", "content": "Tell me a long story."}], "max_tokens": TOKENS,
        "stream": True, "stream_options": {"include_usage": True}, "ignore_eos": True,
    }  # fmt: skip
    outcome = {"done": False, "completion_tokens": 0, "error": None}
    try:
        with httpx.stream("POST", f"{base_url}/v1/chat/completions", json=body, timeout=120) as response:
            for line in iter_sse_lines(response):
                started.set()
                if line == "data: [DONE]":
                    outcome["done"] = True
                elif line.startswith("data: ") and (usage := json.loads(line[6:]).get("usage")):
                    outcome["completion_tokens"] = usage["completion_tokens"]
    except httpx.HTTPError as exc:
        outcome["error"] = repr(exc)
    results.append(outcome)


def test_sigterm_finishes_in_flight_streams_then_exits(server, artifacts_dir):
    env = {"SERVEKIT_ENGINE__URL": server.engine_url, "SERVEKIT_HOME": str(artifacts_dir / "drain")}
    process, base_url = start_bentoml("bentos.service:Servekit", env, artifacts_dir / "drain.log")
    results: list[dict] = []
    threads: list[threading.Thread] = []
    try:
        wait_for(f"{base_url}/ready", process, GATEWAY_UP_TIMEOUT_S)
        events = [threading.Event() for _ in range(STREAMS)]
        threads = [threading.Thread(target=stream, args=(base_url, results, e)) for e in events]
        for thread in threads:
            thread.start()
        for event in events:
            assert event.wait(60), "a stream never started"
        os.killpg(process.pid, signal.SIGTERM)
        refused = None
        for _ in range(50):  # the listener closes within moments of the signal
            try:
                httpx.get(f"{base_url}/health", timeout=1.0)
            except httpx.HTTPError as exc:
                refused = exc
                break
            time.sleep(0.1)
        assert refused is not None, "still accepting new connections after SIGTERM"
        for thread in threads:
            thread.join(120)
        assert process.wait(120) == 0
    finally:
        stop(process)  # a no-op once it exited; kills it when an assertion left it running
        for thread in threads:
            thread.join(120)
    assert len(results) == STREAMS
    assert all(r["done"] and r["completion_tokens"] == TOKENS and r["error"] is None for r in results), results
