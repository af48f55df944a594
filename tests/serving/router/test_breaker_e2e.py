"""The circuit breaker on a real gateway in front of the session's engine: a version that keeps failing (an
injected fault, or its engine really killed) stops getting traffic, its route is served by the fallback, and a
probe brings it back once it serves again."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.conftest import (
    ENGINE_READY_TIMEOUT_S,
    GATEWAY_UP_TIMEOUT_S,
    free_port,
    listening_pid,
    start_bentoml,
    stop,
    wait_for,
)

BASE = "smollm2-135m-instruct"
OPEN_S = 4.0
STANDBY = "standby"
STANDBY_OPEN_S = 60.0


@contextlib.contextmanager
def fallback_gateway(
    server, home: Path, route: str, version: str, open_s: float, ready_timeout_s: float, **env: str
) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """A gateway on the session's engine whose `route` sends everything to `version`, with the base as the
    fallback and a breaker that opens after 3 failures for `open_s`; stopped on exit."""
    env = {
        "SERVEKIT_ENGINE__URL": server.engine_url,
        "SERVEKIT_HOME": str(home),
        "SERVEKIT_ROUTES": json.dumps({route: {version: 100}}),
        "SERVEKIT_FALLBACKS": json.dumps({route: BASE}),
        "SERVEKIT_BREAKER__CONSECUTIVE_FAILURES": "3",
        "SERVEKIT_BREAKER__OPEN_S": str(open_s),
        **env,
    }
    process, base_url = start_bentoml("bentos.service:Servekit", env, home.with_suffix(".log"))
    try:
        wait_for(f"{base_url}/ready", process, ready_timeout_s)
        yield base_url, process
    finally:
        stop(process)


@pytest.fixture(scope="module")
def breaker_gateway(server, artifacts_dir, random_adapters) -> Iterator[tuple[str, str]]:
    adapter = random_adapters["a"].tag
    home, faults = artifacts_dir / "breaker", {"SERVEKIT_FAULTS__ENABLED": "true"}
    with fallback_gateway(server, home, "fb", adapter, OPEN_S, GATEWAY_UP_TIMEOUT_S, **faults) as (base_url, _):
        yield base_url, adapter


def ask(base_url: str, model: str = "fb") -> httpx.Response:
    body = {"model": model, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2}
    return httpx.post(f"{base_url}/v1/chat/completions", json=body, timeout=60)


def test_failing_version_trips_to_the_fallback_and_a_probe_restores_it(breaker_gateway):
    base_url, adapter = breaker_gateway
    assert ask(base_url).headers["x-servekit-version"] == adapter
    fault = httpx.put(f"{base_url}/admin/faults/{adapter}", json={"error_rate": 1.0})
    assert fault.status_code == 200
    failures = [ask(base_url) for _ in range(3)]
    assert [r.status_code for r in failures] == [502, 502, 502]
    assert all(r.json()["error"]["type"] == "server_error" for r in failures)
    tripped = [ask(base_url) for _ in range(5)]  # breaker open: the route's fallback answers, nothing fails
    assert all(r.status_code == 200 for r in tripped)
    assert {(r.headers["x-servekit-version"].split(":")[0], r.headers["x-servekit-fallback"]) for r in tripped} == {
        (BASE, "1")
    }
    ready = httpx.get(f"{base_url}/ready").json()
    assert ready["breakers"][adapter] == "open"
    assert f'servekit_breaker_open{{version="{adapter}"}} 1.0' in httpx.get(f"{base_url}/metrics").text
    httpx.delete(f"{base_url}/admin/faults/{adapter}")
    time.sleep(OPEN_S)  # the breaker's own open period: nothing to poll for
    probe = ask(base_url)
    assert probe.status_code == 200 and probe.headers["x-servekit-version"] == adapter
    assert "x-servekit-fallback" not in probe.headers
    assert httpx.get(f"{base_url}/ready").json()["breakers"][adapter] == "closed"


def test_without_a_fallback_an_open_breaker_answers_503_with_retry_after(breaker_gateway):
    base_url, adapter = breaker_gateway
    httpx.put(f"{base_url}/admin/faults/{adapter}", json={"error_rate": 1.0})
    try:
        body = {"model": adapter, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2}
        statuses = [httpx.post(f"{base_url}/v1/chat/completions", json=body, timeout=60).status_code for _ in range(3)]
        assert statuses == [502, 502, 502]
        refused = httpx.post(f"{base_url}/v1/chat/completions", json=body, timeout=60)
        assert refused.status_code == 503 and int(refused.headers["retry-after"]) >= 1
        assert "circuit breaker open" in refused.json()["error"]["message"]
    finally:
        httpx.delete(f"{base_url}/admin/faults/{adapter}")


@pytest.fixture(scope="module")
def standby_gateway(server, artifacts_dir) -> Iterator[tuple[str, int]]:
    """`standby-route` goes to a base version on an engine of this gateway's own (killing it disturbs no other
    test). Its breaker stays open for STANDBY_OPEN_S, longer than the fallback takes to answer a few requests
    even on a busy machine."""
    port = free_port()
    with fallback_gateway(
        server, artifacts_dir / "breaker-standby", "standby-route", STANDBY, STANDBY_OPEN_S,
        GATEWAY_UP_TIMEOUT_S + ENGINE_READY_TIMEOUT_S, SERVEKIT_ENGINE__KV_CACHE_SPACE_GIB="1",
        SERVEKIT_VERSIONS=json.dumps([{"name": STANDBY, "model": BASE, "port": port}]),
    ) as (base_url, _):  # fmt: skip
        yield base_url, port


@pytest.mark.timeout(GATEWAY_UP_TIMEOUT_S + 2 * ENGINE_READY_TIMEOUT_S)  # the standby engine starts twice
def test_a_killed_engine_trips_to_the_fallback_and_closes_once_it_is_back(standby_gateway):
    base_url, port = standby_gateway
    served = ask(base_url, "standby-route")
    assert served.status_code == 200 and "x-servekit-fallback" not in served.headers
    os.kill(listening_pid(port), signal.SIGKILL)
    for _ in range(3):  # engine failures (cut off, or 503 while it is down) until the breaker opens
        failed = ask(base_url, "standby-route")
        assert failed.status_code >= 500 and "x-servekit-fallback" not in failed.headers, failed.text
        assert set(failed.json()["error"]) == {"message", "type", "param", "code"}
    opened = time.monotonic()
    tripped = [ask(base_url, "standby-route") for _ in range(3)]
    assert all(r.status_code == 200 and r.headers["x-servekit-fallback"] == "1" for r in tripped)
    assert httpx.get(f"{base_url}/ready").json()["breakers"][STANDBY] == "open"
    restarted(base_url, STANDBY, ENGINE_READY_TIMEOUT_S)  # /ready alone could still be green from before the kill
    assert listening_pid(port)
    time.sleep(max(0.0, STANDBY_OPEN_S - (time.monotonic() - opened)))  # the breaker's own open period
    probe = ask(base_url, "standby-route")
    assert probe.status_code == 200 and "x-servekit-fallback" not in probe.headers
    assert httpx.get(f"{base_url}/ready").json()["breakers"][STANDBY] == "closed"


def restarted(base_url: str, engine: str, timeout_s: float) -> None:
    """Wait until the supervisor has brought `engine` back: restarted at least once and ready again."""
    deadline = time.monotonic() + timeout_s
    while True:
        state = next(e for e in httpx.get(f"{base_url}/admin/engines", timeout=10).json() if e["name"] == engine)
        if state["restarts"] >= 1 and state["state"] == "ready":
            return
        assert time.monotonic() < deadline, f"{engine} was not restarted: {state}"
        time.sleep(0.5)
