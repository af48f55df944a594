"""The shared limiter against a real redis-server: several limiter instances stand for several gateway replicas."""

from __future__ import annotations

import asyncio
import logging
import math
import time

import pytest
from prometheus_client import CollectorRegistry

from serving.errors import RateLimitError, StateUnavailableError
from serving.pipeline.ratelimit import RateLimiter
from serving.settings import StateSettings
from serving.state.client import redis_client
from serving.state.health import StateHealth
from serving.state.redis_limits import SharedRateLimiter


class Replica:
    """One gateway's view: its own client, health and metrics registry, on the shared server."""

    def __init__(self, url: str, limits: dict[str, tuple[int, int]], on_unavailable: str = "open") -> None:
        # A generous timeout: on a busy CI box a burst must not be mistaken for an outage (and served open).
        self.settings = StateSettings(url=url, on_unavailable=on_unavailable, retry_s=0.05, timeout_s=5)
        self.registry = CollectorRegistry()
        self.client = redis_client(self.settings)
        self.health = StateHealth(url, self.settings.retry_s, self.registry)
        self.limiter = SharedRateLimiter(self.client, lambda key: limits.get(key, (0, 0)), self.settings, self.health)

    def errors(self) -> float:
        return self.registry.get_sample_value("servekit_state_errors_total", {"operation": "ratelimit"}) or 0.0


@pytest.fixture
async def replicas(redis_server):
    made: list[Replica] = []

    def make(limits: dict[str, tuple[int, int]], count: int = 3, on_unavailable: str = "open") -> list[Replica]:
        made.extend(Replica(redis_server.url, limits, on_unavailable) for _ in range(count))
        return made[-count:]

    yield make
    for replica in made:
        await replica.client.aclose()


async def admitted(replicas: list[Replica], key: str, attempts: int, estimate: int = 0) -> int:
    """Send `attempts` admissions spread round-robin over the replicas, all at once; count those let through
    (charged, or served without limits while the state is unreachable)."""

    async def one(replica: Replica) -> bool:
        try:
            await replica.limiter.admit(key, lambda: estimate)
            return True
        except RateLimitError as refused:
            assert refused.error_type == "requests"
            return False

    outcomes = await asyncio.gather(*(one(replicas[i % len(replicas)]) for i in range(attempts)))
    return sum(outcomes)


async def test_three_replicas_share_one_requests_bucket(replicas):
    per_minute = 100
    three = replicas({"k": (per_minute, 0)})
    started = time.monotonic()
    accepted = await admitted(three, "k", 3 * per_minute)
    refilled = math.ceil((time.monotonic() - started) * per_minute / 60)
    # Each replica alone would have let 100 through (300 in all); the bucket refills while the burst runs.
    assert per_minute <= accepted <= per_minute + refilled
    assert abs(accepted - per_minute) <= 0.02 * per_minute
    assert [replica.errors() for replica in three] == [0, 0, 0]  # all charged in Redis, none served open


async def test_tokens_are_charged_up_front_then_settled_with_real_usage_on_any_replica(replicas):
    a, b = replicas({"k": (0, 1000)}, count=2)
    first = await a.limiter.admit("k", lambda: 600)
    assert first.headers["x-ratelimit-remaining-tokens"] == "400"
    with pytest.raises(RateLimitError):  # 400 left: the estimate is held until the request settles
        await b.limiter.admit("k", lambda: 850)
    a.limiter.settle(first, used_tokens=100)  # refund of 500: ~900 left once it reaches the shared bucket
    await a.limiter.flush()
    second = await b.limiter.admit("k", lambda: 850)
    b.limiter.settle(second, used_tokens=850 + 950)  # 950 more than estimated: ~900 in debt
    await b.limiter.flush()
    with pytest.raises(RateLimitError) as refused:
        await a.limiter.admit("k", lambda: 100)
    assert refused.value.error_type == "tokens"
    assert refused.value.retry_after_s > 50  # (debt + 100) at 1000/min; without the extra charge: ~3 s
    with pytest.raises(RateLimitError) as too_large:
        await a.limiter.admit("k", lambda: 1001)
    assert "whole budget" in too_large.value.message


async def tokens_level(replica: Replica, key: str) -> float:
    """The shared token bucket's stored level (a full bucket once the key is absent)."""
    return float(await replica.client.hget(replica.limiter._keys(key)[1], "level"))


async def test_a_settlement_rides_on_the_keys_next_admission_without_a_round_trip_of_its_own(replicas):
    (a,) = replicas({"k": (0, 1000)}, count=1)
    first = await a.limiter.admit("k", lambda: 600)
    a.limiter.settle(first, used_tokens=100)  # 500 back, owed locally
    assert await tokens_level(a, "k") == pytest.approx(400, abs=1)  # nothing written by the settle itself
    second = await a.limiter.admit("k", lambda: 800)  # 900 available only once the refund is counted first
    assert second.headers["x-ratelimit-remaining-tokens"] == "100"
    await a.limiter.flush()
    assert await tokens_level(a, "k") == pytest.approx(100, abs=1)  # carried once, not again by the flush


async def test_an_owed_settlement_reaches_other_replicas_without_further_traffic(replicas):
    a, b = replicas({"k": (0, 1000), "j": (0, 1000)}, count=2)
    for key in ("k", "j"):
        a.limiter.settle(await a.limiter.admit(key, lambda: 600), used_tokens=100)
    while await tokens_level(b, "k") < 800 or await tokens_level(b, "j") < 800:  # flushed within SETTLE_DELAY_S
        await asyncio.sleep(0.01)
    assert (await b.limiter.admit("k", lambda: 850)).headers["x-ratelimit-remaining-tokens"] == "50"
    assert a.errors() == 0


async def test_headers_match_the_in_process_limiter(replicas):
    limits = {"k": (60, 1000)}
    (shared,) = replicas(limits, count=1)
    local = RateLimiter(limits)
    from_redis = await shared.limiter.admit("k", lambda: 300)
    assert from_redis.headers == local.admit("k", lambda: 300).headers
    assert from_redis.headers["x-ratelimit-remaining-requests"] == "59"


async def test_a_key_without_limits_is_not_charged_and_costs_no_estimate(replicas):
    (replica,) = replicas({}, count=1)

    def estimate() -> int:
        raise AssertionError("no token bucket: the estimate is not computed")

    assert await replica.limiter.admit("free", estimate) is None
    assert await replica.client.keys("servekit:ratelimit:*") == []


async def test_an_outage_serves_open_or_refuses_closed_then_limits_are_shared_again(replicas, redis_server, caplog):
    limits = {"k": (5, 0), "probe": (10_000, 0)}
    open_a, open_b = replicas(limits, count=2)
    (closed,) = replicas(limits, count=1, on_unavailable="closed")
    assert await admitted([open_a, open_b], "k", 10) == 5

    redis_server.stop()
    with caplog.at_level(logging.WARNING, logger="servekit.state"):
        assert await admitted([open_a], "k", 20) == 20  # open: served without limits
        with pytest.raises(StateUnavailableError) as refused:
            await closed.limiter.admit("k", lambda: 0)
    assert refused.value.status_code == 503
    assert refused.value.body()["error"]["code"] == "state_unavailable"
    assert refused.value.body()["error"]["type"] == "service_unavailable"
    assert open_a.errors() == 20  # counted per request, logged once per outage
    assert sum("unreachable" in record.message for record in caplog.records) == 2  # open_a and closed

    redis_server.start()  # empty: without persistence the buckets start full again
    for replica in (open_a, open_b, closed):
        while await replica.limiter.admit("probe", lambda: 0) is None:  # backing off, then probing again
            await asyncio.sleep(0.01)
    assert await admitted([open_a, open_b, closed], "k", 15) == 5
