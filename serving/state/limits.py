"""What every rate limiter (in-process or shared) answers with: the admission, the 429s and OpenAI's
`x-ratelimit-*` headers, so a client sees the same thing whichever store keeps the buckets."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from serving.errors import RateLimitError


def duration(seconds: float) -> str:
    """OpenAI's reset format: `1s`, `6m0s`, `20ms` (never `1000ms`)."""
    milliseconds = max(0, math.ceil(seconds * 1000))
    if milliseconds < 1000:
        return f"{milliseconds}ms"
    minutes, rest = divmod(math.ceil(milliseconds / 1000), 60)
    return f"{minutes}m{rest}s" if minutes else f"{rest}s"


@dataclass
class Admission:
    """A request let through: what it was charged, so `settle` can correct the token bucket afterwards."""

    key_id: str
    estimated_tokens: int
    headers: dict[str, str]


@dataclass(frozen=True)
class BucketLevel:
    """A bucket as seen right now: `capacity` per minute, `level` left (below zero while in debt)."""

    capacity: float
    level: float

    def remaining(self) -> int:
        return max(0, math.floor(self.level))

    def reset_s(self) -> float:
        """Seconds until the bucket is full again."""
        return (self.capacity - self.level) * 60.0 / self.capacity


def ratelimit_headers(requests: BucketLevel | None, tokens: BucketLevel | None) -> dict[str, str]:
    headers = {}
    for kind, bucket in (("requests", requests), ("tokens", tokens)):
        if bucket is not None:
            headers[f"x-ratelimit-limit-{kind}"] = str(int(bucket.capacity))
            headers[f"x-ratelimit-remaining-{kind}"] = str(bucket.remaining())
            headers[f"x-ratelimit-reset-{kind}"] = duration(bucket.reset_s())
    return headers


def requests_exhausted(key_id: str, per_minute: int, wait_s: float, headers: dict[str, str]) -> RateLimitError:
    return RateLimitError(
        f"Rate limit reached for key `{key_id}`: {per_minute} requests per minute. Retry in {duration(wait_s)}.",
        limit_type="requests", retry_after_s=wait_s, headers=headers,
    )  # fmt: skip


def request_too_large(key_id: str, estimated: int, per_minute: int, headers: dict[str, str]) -> RateLimitError:
    return RateLimitError(
        f"Request too large for key `{key_id}`: about {estimated} tokens (prompt + max_tokens), more "
        f"than its whole budget of {per_minute} tokens per minute. Lower max_tokens or the prompt.",
        limit_type="tokens", retry_after_s=60.0, headers=headers,
    )  # fmt: skip


def tokens_exhausted(
    key_id: str, per_minute: int, estimated: int, wait_s: float, headers: dict[str, str]
) -> RateLimitError:
    return RateLimitError(
        f"Rate limit reached for key `{key_id}`: {per_minute} tokens per minute; this request needs "
        f"about {estimated} (prompt + max_tokens). Retry in {duration(wait_s)}.",
        limit_type="tokens", retry_after_s=wait_s, headers=headers,
    )  # fmt: skip


Limits = Callable[[str], tuple[int, int]]
"""Key id -> (requests/min, tokens/min); 0 means unlimited."""


class AsyncRateLimiter(Protocol):
    """What the request pipeline awaits, whichever store keeps the buckets."""

    async def admit(self, key_id: str, estimate_tokens: Callable[[], int]) -> Admission | None:
        """Charge one request and its estimated tokens, or raise RateLimitError (429) charging nothing;
        None when the key has no limits (or the shared store is down and `on_unavailable` is `open`)."""
        ...

    def settle(self, admission: Admission | None, used_tokens: int) -> None:
        """Replace the estimate by what the request really used (refund or extra charge); never waits, so a
        request's answer never waits on it."""
        ...

    async def flush(self) -> None:
        """Settlements not yet in the store, written now (at shutdown)."""
        ...
