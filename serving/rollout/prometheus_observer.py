"""`PrometheusObserver`: a route's primary and canary measured with PromQL over Prometheus's HTTP API, so a
rollout sees every gateway replica that Prometheus scrapes, not only the process it runs in."""

from __future__ import annotations

import asyncio
import math

import httpx

from serving.rollout.observation import Observation, VersionStats

QUERY_TIMEOUT_S = 10.0


class PrometheusQueryError(RuntimeError):
    """Prometheus answered a query with an error (bad PromQL, timeout, unreachable server)."""


def promql_string(value: str) -> str:
    """`value` as a double-quoted PromQL string literal: backslashes, quotes and newlines escaped."""
    escaped = value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
    return f'"{escaped}"'


def promql_window(window_s: float) -> str:
    """A range selector in whole seconds (PromQL durations take no fractions), at least one second."""
    return f"[{max(1, round(window_s))}s]"


def version_queries(route: str, version: str, window_s: float) -> dict[str, str]:
    """The four PromQL queries behind one `VersionStats`."""
    labels = f"route={promql_string(route)}, version={promql_string(version)}"
    window = promql_window(window_s)

    def p95(histogram: str) -> str:
        return f"histogram_quantile(0.95, sum by (le) (rate({histogram}_bucket{{{labels}}}{window})))"

    return {
        "requests": f"sum(increase(servekit_requests_total{{{labels}}}{window}))",
        "server_errors": f'sum(increase(servekit_requests_total{{{labels}, status=~"5.."}}{window}))',
        "ttft_p95_s": p95("servekit_time_to_first_token_seconds"),
        "latency_p95_s": p95("servekit_request_duration_seconds"),
    }


def scalar(result: list[dict]) -> float | None:
    """The value of a one-element instant vector; None when empty or NaN (no data in the window)."""
    if not result:
        return None
    value = float(result[0]["value"][1])
    return None if math.isnan(value) else value


def count(value: float | None) -> int:
    """A counter increase as a whole count: `increase()` extrapolates to the window edges, so round."""
    return round(value) if value is not None and math.isfinite(value) else 0


class PrometheusObserver:
    """Implements `Observer` against the Prometheus at `url` (the one `servekit observe` starts, or any other
    scraping servekit's `/metrics`)."""

    def __init__(self, url: str, timeout_s: float = QUERY_TIMEOUT_S) -> None:
        self.url = url.rstrip("/")
        self.timeout_s = timeout_s

    async def query(self, client: httpx.AsyncClient, promql: str) -> float | None:
        try:
            response = await client.get(f"{self.url}/api/v1/query", params={"query": promql})
        except httpx.HTTPError as error:
            raise PrometheusQueryError(f"prometheus at {self.url} unreachable: {error}") from error
        body = response.json() if response.headers.get("content-type", "").startswith("application/json") else {}
        if response.status_code != 200 or body.get("status") != "success":
            raise PrometheusQueryError(f"query {promql!r} failed ({response.status_code}): {body or response.text}")
        return scalar(body["data"]["result"])

    async def version_stats(self, client: httpx.AsyncClient, route: str, version: str, window_s: float) -> VersionStats:
        queries = version_queries(route, version, window_s)
        values = await asyncio.gather(*(self.query(client, promql) for promql in queries.values()))
        got = dict(zip(queries, values, strict=True))
        return VersionStats(
            requests=count(got["requests"]),
            server_errors=count(got["server_errors"]),
            ttft_p95_s=got["ttft_p95_s"],
            latency_p95_s=got["latency_p95_s"],
        )

    async def observe(self, route: str, primary: str, canary: str, window_s: float) -> Observation:
        async with httpx.AsyncClient(timeout=self.timeout_s) as client:
            primary_stats, canary_stats = await asyncio.gather(
                self.version_stats(client, route, primary, window_s),
                self.version_stats(client, route, canary, window_s),
            )
        return Observation(primary=primary_stats, canary=canary_stats, window_s=window_s)
