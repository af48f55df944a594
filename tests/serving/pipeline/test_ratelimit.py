"""Token buckets with a hand-driven clock: burst, refill, settlement, OpenAI's headers and 429 shape."""

from __future__ import annotations

import pytest

from serving.errors import RateLimitError
from serving.pipeline.ratelimit import RateLimiter, rate_limits
from serving.settings import Settings
from tests.conftest import ManualClock


def test_requests_per_minute_allow_the_burst_then_refill_at_the_rate():
    clock = ManualClock()
    limiter = RateLimiter({"k": (60, 0)}, clock)
    for _ in range(60):
        assert limiter.admit("k", lambda: 0) is not None
    with pytest.raises(RateLimitError) as refused:
        limiter.admit("k", lambda: 0)
    assert refused.value.status_code == 429 and refused.value.error_type == "requests"
    assert refused.value.headers()["Retry-After"] == "1"
    assert refused.value.body()["error"]["code"] == "rate_limit_exceeded"
    clock.now = 1.0  # 60/min = one per second
    admission = limiter.admit("k", lambda: 0)
    assert admission.headers["x-ratelimit-limit-requests"] == "60"
    assert admission.headers["x-ratelimit-remaining-requests"] == "0"
    with pytest.raises(RateLimitError):
        limiter.admit("k", lambda: 0)


def test_tokens_are_charged_up_front_and_settled_against_usage():
    clock = ManualClock()
    limiter = RateLimiter({"k": (0, 1000)}, clock)
    first = limiter.admit("k", lambda: 600)
    assert first.headers["x-ratelimit-remaining-tokens"] == "400"
    with pytest.raises(RateLimitError) as refused:
        limiter.admit("k", lambda: 600)
    assert refused.value.error_type == "tokens"
    limiter.settle(first, 100)  # it used 100, not 600: 500 come back
    second = limiter.admit("k", lambda: 600)
    assert second.headers["x-ratelimit-remaining-tokens"] == "300"
    limiter.settle(second, 900)  # used more than estimated: the debt delays the next one
    with pytest.raises(RateLimitError):
        limiter.admit("k", lambda: 1)


def test_a_request_larger_than_the_whole_budget_is_refused_outright():
    limiter = RateLimiter({"k": (0, 100)}, ManualClock())
    with pytest.raises(RateLimitError, match="Request too large"):
        limiter.admit("k", lambda: 101)


def test_keys_without_limits_are_not_metered_and_not_estimated():
    limiter = RateLimiter({"k": (0, 0)}, ManualClock())

    def never() -> int:
        raise AssertionError("estimated although unlimited")

    assert limiter.admit("k", never) is None
    assert limiter.admit("unknown", never) is None
    limiter.settle(None, 10)


def test_limits_per_key_fall_back_to_the_defaults():
    settings = Settings(
        limits={"requests_per_minute": 10, "tokens_per_minute": 500},
        auth={"keys": [
            {"id": "a", "sha256": "0" * 64},
            {"id": "b", "sha256": "1" * 64, "requests_per_minute": 0, "tokens_per_minute": 99},
        ]},
    )  # fmt: skip
    assert rate_limits(settings) == {"anonymous": (10, 500), "a": (10, 500), "b": (0, 99)}
