"""Per-key rate limits: requests/min and tokens/min as token buckets, with OpenAI's `x-ratelimit-*` headers.

Tokens are charged up front from an estimate (prompt characters / 4 + `max_tokens`) so a burst of long requests
cannot overrun the budget before any finishes, then settled against the real `usage` when the request ends.
The buckets live in the gateway process: BentoML runs servekit with one worker (the engine does the batching),
so they are exact; several workers would each hold their own buckets (limits multiply by the worker count):
with `state.url` set, `serving.state.redis_limits.SharedRateLimiter` keeps them in Redis instead."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

from serving.pipeline.principal import ANONYMOUS_ID
from serving.settings import Settings
from serving.state.limits import (
    Admission,
    BucketLevel,
    ratelimit_headers,
    request_too_large,
    requests_exhausted,
    tokens_exhausted,
)

Clock = Callable[[], float]


@dataclass
class TokenBucket:
    """`capacity` units, refilled continuously at `capacity` per minute; the level may go below zero when a
    settlement charges more than was estimated (the debt delays the next admission)."""

    capacity: float
    clock: Clock = time.monotonic
    level: float = field(init=False)
    updated: float = field(init=False)

    def __post_init__(self) -> None:
        self.level = self.capacity
        self.updated = self.clock()

    @property
    def rate_per_s(self) -> float:
        return self.capacity / 60.0

    def _refill(self) -> None:
        now = self.clock()
        self.level = min(self.capacity, self.level + (now - self.updated) * self.rate_per_s)
        self.updated = now

    def wait_s(self, amount: float) -> float:
        """Seconds until `amount` (at most the capacity) could be taken; 0 when it can be now."""
        self._refill()
        return max(0.0, (amount - self.level) / self.rate_per_s)

    def take(self, amount: float) -> None:
        self._refill()
        self.level -= amount

    def snapshot(self) -> BucketLevel:
        self._refill()
        return BucketLevel(self.capacity, self.level)

    def remaining(self) -> int:
        return self.snapshot().remaining()


class RateLimiter:
    def __init__(self, limits: dict[str, tuple[int, int]], clock: Clock = time.monotonic) -> None:
        """`limits`: key id -> (requests/min, tokens/min); 0 means unlimited."""
        self.limits = limits
        self.clock = clock
        self._requests: dict[str, TokenBucket] = {}
        self._tokens: dict[str, TokenBucket] = {}

    def _bucket(self, store: dict[str, TokenBucket], key_id: str, capacity: int) -> TokenBucket | None:
        if capacity <= 0:
            return None
        if key_id not in store:
            store[key_id] = TokenBucket(capacity, self.clock)
        return store[key_id]

    def admit(self, key_id: str, estimate_tokens: Callable[[], int]) -> Admission | None:
        """Charge one request and its estimated tokens, or raise RateLimitError (429) charging nothing. Without
        limits for this key it costs a dict lookup (the estimate is not even computed)."""
        per_minute, tokens_per_minute = self.limits.get(key_id, (0, 0))
        requests = self._bucket(self._requests, key_id, per_minute)
        tokens = self._bucket(self._tokens, key_id, tokens_per_minute)
        if requests is None and tokens is None:
            return None
        estimated_tokens = estimate_tokens() if tokens is not None else 0
        if requests is not None and (wait := requests.wait_s(1)) > 0:
            raise requests_exhausted(key_id, per_minute, wait, self._headers(requests, tokens))
        if tokens is not None and estimated_tokens > tokens.capacity:
            raise request_too_large(key_id, estimated_tokens, tokens_per_minute, self._headers(requests, tokens))
        if tokens is not None and (wait := tokens.wait_s(estimated_tokens)) > 0:
            raise tokens_exhausted(key_id, tokens_per_minute, estimated_tokens, wait, self._headers(requests, tokens))
        if requests is not None:
            requests.take(1)
        if tokens is not None:
            tokens.take(estimated_tokens)
        return Admission(key_id, estimated_tokens, self._headers(requests, tokens))

    def settle(self, admission: Admission | None, used_tokens: int) -> None:
        """Replace the estimate by what the request really used (refund or extra charge)."""
        if admission is not None and (tokens := self._tokens.get(admission.key_id)) is not None:
            tokens.take(used_tokens - admission.estimated_tokens)

    @staticmethod
    def _headers(requests: TokenBucket | None, tokens: TokenBucket | None) -> dict[str, str]:
        return ratelimit_headers(
            requests.snapshot() if requests is not None else None, tokens.snapshot() if tokens is not None else None
        )


def rate_limits(settings: Settings) -> dict[str, tuple[int, int]]:
    """Key id -> (requests/min, tokens/min): a key's own limits, else the defaults in `limits` (which also bind
    the anonymous caller when auth is off)."""
    defaults = settings.limits.requests_per_minute, settings.limits.tokens_per_minute
    limits = {ANONYMOUS_ID: defaults}
    for key in settings.auth.keys:
        limits[key.id] = (
            defaults[0] if key.requests_per_minute is None else key.requests_per_minute,
            defaults[1] if key.tokens_per_minute is None else key.tokens_per_minute,
        )
    return limits
