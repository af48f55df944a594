from __future__ import annotations

import asyncio
import random
import time

import pytest
from pydantic import ValidationError

from serving.errors import EngineError
from serving.faults import FaultProfile


def test_error_rate_answers_about_that_share_of_requests_with_an_engine_error():
    random.seed(0)
    profile = FaultProfile(error_rate=0.3)

    async def failures(count: int) -> int:
        failed = 0
        for _ in range(count):
            try:
                await profile.apply("v2")
            except EngineError as error:
                assert "v2" in str(error) and error.status_code >= 500
                failed += 1
        return failed

    assert 240 <= asyncio.run(failures(1000)) <= 360


def test_added_latency_delays_each_request():
    started = time.perf_counter()
    asyncio.run(FaultProfile(added_latency_ms=50).apply("v2"))
    assert time.perf_counter() - started >= 0.05


def test_an_empty_profile_does_nothing_and_bad_values_are_refused():
    asyncio.run(FaultProfile().apply("v2"))
    for bad in ({"error_rate": 1.5}, {"error_rate": -0.1}, {"added_latency_ms": -1}):
        with pytest.raises(ValidationError):
            FaultProfile(**bad)
