from __future__ import annotations

import pytest

from serving.state.limits import BucketLevel, duration, ratelimit_headers


@pytest.mark.parametrize(
    ("seconds", "text"), [(0.02, "20ms"), (0.99999, "1s"), (1.0, "1s"), (59.2, "1m0s"), (360, "6m0s")]
)
def test_reset_durations_use_openai_format(seconds, text):
    assert duration(seconds) == text


def test_headers_floor_the_remaining_units_and_never_go_below_zero_while_in_debt():
    headers = ratelimit_headers(BucketLevel(60, 41.7), BucketLevel(1000, -200))
    assert headers == {
        "x-ratelimit-limit-requests": "60",
        "x-ratelimit-remaining-requests": "41",
        "x-ratelimit-reset-requests": "19s",  # 18.3 units at one per second
        "x-ratelimit-limit-tokens": "1000",
        "x-ratelimit-remaining-tokens": "0",
        "x-ratelimit-reset-tokens": "1m12s",  # 1200 tokens at 1000 per minute
    }
