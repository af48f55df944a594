"""`PrometheusObserver` against a real Prometheus scraping the session's real servekit server."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import TypeVar

import httpx
import pytest

from serving.metrics.prometheus import LATENCY_BUCKETS
from serving.observe.config import write_config
from serving.observe.server import PrometheusServer
from serving.rollout.observation import Observation
from serving.rollout.prometheus_observer import PrometheusObserver, promql_string, promql_window, version_queries
from tests.conftest import free_port

ROUTE = "smollm2-135m-instruct"
SCRAPE_INTERVAL = "1s"
POLL_S = 0.5
WAIT_TIMEOUT_S = 60.0
T = TypeVar("T")


def test_label_values_are_escaped():
    assert promql_string('a"b\\c\nd') == '"a\\"b\\\\c\\nd"'
    assert 'route="x\\"y"' in version_queries('x"y', "v", 30)["requests"]


def test_window_is_whole_seconds():
    assert promql_window(29.6) == "[30s]"
    assert promql_window(0.2) == "[1s]"
    assert version_queries("r", "v", 60)["ttft_p95_s"] == (
        "histogram_quantile(0.95, sum by (le) (rate(servekit_time_to_first_token_seconds_bucket"
        '{route="r", version="v"}[60s])))'
    )


@pytest.fixture(scope="module")
def prometheus(server, tmp_path_factory: pytest.TempPathFactory) -> Iterator[PrometheusServer]:
    data_dir: Path = tmp_path_factory.mktemp("prometheus")
    config = write_config(data_dir, server.base_url, SCRAPE_INTERVAL)
    with PrometheusServer("prometheus", config, data_dir, free_port(), "1d") as running:
        yield running


async def poll(check: Callable[[], Awaitable[T | None]], what: str) -> T:
    """Poll until `check` returns a value: Prometheus sees new samples one scrape (then one rule run) later."""
    deadline = time.monotonic() + WAIT_TIMEOUT_S
    while time.monotonic() < deadline:
        if (result := await check()) is not None:
            return result
        await asyncio.sleep(POLL_S)
    raise TimeoutError(f"{what} not seen within {WAIT_TIMEOUT_S:.0f}s")


async def instant(client: httpx.AsyncClient, prometheus: PrometheusServer, promql: str) -> list[dict]:
    response = await client.get(f"{prometheus.url}/api/v1/query", params={"query": promql})
    response.raise_for_status()
    return response.json()["data"]["result"]


async def chat(client: httpx.AsyncClient, base_url: str, stream: bool) -> httpx.Response:
    body = {
        "model": ROUTE, "messages": [{"role": "user", "content": "Count to five."}],
        "max_tokens": 6, "stream": stream,
    }  # fmt: skip
    async with client.stream("POST", f"{base_url}/v1/chat/completions", json=body) as response:
        await response.aread()
    return response


async def chat_too_long(client: httpx.AsyncClient, base_url: str) -> httpx.Response:
    body = {"model": ROUTE, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 100_000}
    return await client.post(f"{base_url}/v1/chat/completions", json=body)


async def test_observer_sees_real_traffic_by_version(server, prometheus):
    observer = PrometheusObserver(prometheus.url)
    started = time.perf_counter()
    async with httpx.AsyncClient(timeout=120) as client:
        first = await chat(client, server.base_url, stream=False)
        assert first.status_code == 200
        primary = first.headers["x-servekit-version"]
        ok_series = f'servekit_requests_total{{route="{ROUTE}", version="{primary}", status="200"}}'

        async def scraped_at_least(value: int) -> list[dict] | None:
            result = await instant(client, prometheus, ok_series)
            return result if result and float(result[0]["value"][1]) >= value else None

        # The counter's baseline must be in the TSDB first: increase() only counts growth after a sample.
        baseline = int(float((await poll(lambda: scraped_at_least(1), "the first scrape"))[0]["value"][1]))

        sent = [await chat(client, server.base_url, stream=stream) for stream in (True, True, False)]
        assert [response.status_code for response in sent] == [200, 200, 200]
        assert {response.headers["x-servekit-version"] for response in sent} == {primary}
        too_long = await chat_too_long(client, server.base_url)
        assert 400 <= too_long.status_code < 500
        slowest_s = time.perf_counter() - started  # an upper bound for every request's server-side time
        await poll(lambda: scraped_at_least(baseline + len(sent)), "the requests' scrape")

        async def settled() -> Observation | None:
            seen = await observer.observe(route=ROUTE, primary=primary, canary="nonexistent:v0", window_s=60)
            return seen if seen.primary.requests >= len(sent) and seen.primary.ttft_p95_s is not None else None

        observation = await poll(settled, "the observation")

        async def error_ratio() -> list[dict] | None:
            query = f'servekit:error_ratio:rate1m{{route="{ROUTE}", version="{primary}"}}'
            return await instant(client, prometheus, query) or None

        recorded = await poll(error_ratio, "servekit:error_ratio:rate1m")

    assert observation.window_s == 60
    assert observation.primary.server_errors == 0, "a 4xx never counts against the version"
    assert observation.primary.error_rate == 0
    # TTFT counts streamed requests only, latency every request: their p95s need not be ordered, but
    # histogram_quantile never goes past the upper bound of the bucket holding the slowest request.
    bound = next(le for le in LATENCY_BUCKETS if le >= slowest_s)
    assert 0 < observation.primary.ttft_p95_s <= bound
    assert 0 < observation.primary.latency_p95_s <= bound
    assert observation.canary.requests == 0
    assert observation.canary.server_errors == 0
    assert observation.canary.ttft_p95_s is None
    assert observation.canary.latency_p95_s is None
    assert float(recorded[0]["value"][1]) == 0.0


async def test_odd_label_values_are_valid_promql(prometheus):
    """Quotes, backslashes and newlines in a route or version reach Prometheus as data, not as syntax."""
    observation = await PrometheusObserver(prometheus.url).observe('a"b\\c\nd', "x'y", 'z"', window_s=30.4)
    assert observation.primary.requests == 0
    assert observation.canary.ttft_p95_s is None
