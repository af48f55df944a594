"""The circuit breaker on a real gateway in front of the session's engine: a version that keeps failing (an
injected fault) stops getting traffic, its route is served by the fallback, and a probe brings it back."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator

import httpx
import pytest

from tests.conftest import GATEWAY_UP_TIMEOUT_S, start_bentoml, stop, wait_for

BASE = "smollm2-135m-instruct"
OPEN_S = 4.0


@pytest.fixture(scope="module")
def breaker_gateway(server, artifacts_dir, random_adapters) -> Iterator[tuple[str, str]]:
    adapter = random_adapters["a"].tag
    env = {
        "SERVEKIT_ENGINE__URL": server.engine_url,
        "SERVEKIT_HOME": str(artifacts_dir / "breaker"),
        "SERVEKIT_FAULTS__ENABLED": "true",
        "SERVEKIT_ROUTES": json.dumps({"fb": {adapter: 100}}),
        "SERVEKIT_FALLBACKS": json.dumps({"fb": BASE}),
        "SERVEKIT_BREAKER__CONSECUTIVE_FAILURES": "3",
        "SERVEKIT_BREAKER__OPEN_S": str(OPEN_S),
    }
    process, base_url = start_bentoml("bentos.service:Servekit", env, artifacts_dir / "breaker.log")
    try:
        wait_for(f"{base_url}/ready", process, GATEWAY_UP_TIMEOUT_S)
        yield base_url, adapter
    finally:
        stop(process)


def ask(base_url: str) -> httpx.Response:
    body = {"model": "fb", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2}
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
