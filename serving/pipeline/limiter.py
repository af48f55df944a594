"""Which rate limiter a gateway uses: in this process (no `state.url`) or shared on Redis. The request pipeline
uses both through `serving.state.limits.AsyncRateLimiter`."""

from __future__ import annotations

from collections.abc import Callable

from serving.pipeline.ratelimit import RateLimiter, rate_limits
from serving.settings import Settings
from serving.state.limits import Admission, AsyncRateLimiter, Limits
from serving.state.redis_keys import KeyLookup
from serving.state.shared import SharedState


class InProcessRateLimiter:
    """The in-process RateLimiter behind the async interface; its work is a few float operations, never I/O."""

    def __init__(self, limiter: RateLimiter) -> None:
        self.limiter = limiter

    async def admit(self, key_id: str, estimate_tokens: Callable[[], int]) -> Admission | None:
        return self.limiter.admit(key_id, estimate_tokens)

    def settle(self, admission: Admission | None, used_tokens: int) -> None:
        self.limiter.settle(admission, used_tokens)

    async def flush(self) -> None:
        """Settlements here are applied at once: nothing is ever pending."""


def key_limits(settings: Settings, shared_keys: KeyLookup | None) -> Limits:
    """Limits of configured keys as today; a shared key's own limits where it has them; else the defaults."""
    table = rate_limits(settings)
    defaults = settings.limits.requests_per_minute, settings.limits.tokens_per_minute

    def limits(key_id: str) -> tuple[int, int]:
        if (configured := table.get(key_id)) is not None:
            return configured
        own = shared_keys.limits(key_id) if shared_keys is not None else (None, None)
        return (
            defaults[0] if own[0] is None else own[0],
            defaults[1] if own[1] is None else own[1],
        )

    return limits


def build_rate_limiter(
    settings: Settings, shared: SharedState | None = None, shared_keys: KeyLookup | None = None
) -> AsyncRateLimiter:
    if shared is None:
        return InProcessRateLimiter(RateLimiter(rate_limits(settings)))
    return shared.rate_limiter(key_limits(settings, shared_keys))
