"""Per-key rate limits shared by every gateway on one Redis: the same token buckets as the in-process limiter,
kept in Redis and changed by server-side Lua scripts, so N replicas enforce one limit instead of N.

Each admit is one round trip (refill both buckets, check, charge: atomic, so concurrent replicas can never
both take the last unit). Settling against the real `usage` (refund or extra charge, as Envoy's AI gateway
pre-debits and then settles) adds none to a request: the correction is owed locally, carried by the key's next
admission on this replica (in the same script, before its check) or flushed for every key in one pipelined
round trip within SETTLE_DELAY_S, after the answer has gone. Other replicas see it within that delay. The clock
is Redis's own (`TIME`), so replicas' clocks need not agree. A bucket key expires once it would be full again:
an absent key is a full bucket."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import redis.asyncio as redis
from redis.exceptions import RedisError

from serving.errors import StateUnavailableError
from serving.settings import StateSettings
from serving.state.health import StateHealth
from serving.state.limits import (
    Admission,
    BucketLevel,
    Limits,
    ratelimit_headers,
    request_too_large,
    requests_exhausted,
    tokens_exhausted,
)

_BUCKETS = """
local clock = redis.call('TIME')
local now = tonumber(clock[1]) + tonumber(clock[2]) / 1000000

local function level(key, capacity)
  if capacity <= 0 then return nil end
  local stored = redis.call('HMGET', key, 'level', 'at')
  if not stored[1] then return capacity end
  return math.min(capacity, tonumber(stored[1]) + (now - tonumber(stored[2])) * capacity / 60)
end

local function store(key, capacity, value)
  redis.call('HSET', key, 'level', value, 'at', now)
  redis.call('PEXPIRE', key, math.ceil((capacity - value) * 60000 / capacity) + 1000)
end
"""

ADMIT = (
    _BUCKETS
    + """
-- KEYS: requests bucket, tokens bucket; ARGV: requests/min, tokens/min, estimated tokens (0/min: no bucket),
-- tokens owed by settled requests (charged first, whatever the outcome; negative: a refund).
-- Returns {outcome, wait seconds, requests level, tokens level}: 0 admitted and charged, 1 out of requests,
-- 2 larger than the whole token budget, 3 out of tokens; nothing is charged unless admitted.
local per_minute, tokens_per_minute, estimate = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local requests, tokens = level(KEYS[1], per_minute), level(KEYS[2], tokens_per_minute)
local owed = tonumber(ARGV[4])
if tokens and owed ~= 0 then tokens = tokens - owed; store(KEYS[2], tokens_per_minute, tokens) end
local outcome, wait = 0, 0
if requests and requests < 1 then
  outcome, wait = 1, (1 - requests) * 60 / per_minute
elseif tokens and estimate > tokens_per_minute then
  outcome, wait = 2, 60
elseif tokens and tokens < estimate then
  outcome, wait = 3, (estimate - tokens) * 60 / tokens_per_minute
else
  if requests then requests = requests - 1; store(KEYS[1], per_minute, requests) end
  if tokens then tokens = tokens - estimate; store(KEYS[2], tokens_per_minute, tokens) end
end
return {outcome, tostring(wait), tostring(requests or ''), tostring(tokens or '')}
"""
)

SETTLE = (
    _BUCKETS
    + """
-- KEYS: tokens bucket; ARGV: tokens/min, tokens to add to the charge (negative: a refund).
local tokens_per_minute = tonumber(ARGV[1])
store(KEYS[1], tokens_per_minute, level(KEYS[1], tokens_per_minute) - tonumber(ARGV[2]))
return 1
"""
)

ADMITTED, OUT_OF_REQUESTS, TOO_LARGE, OUT_OF_TOKENS = range(4)
OPERATION = "ratelimit"
SETTLE_DELAY_S = 0.05
"""The longest a settled correction stays owed on this replica before it is flushed to the shared bucket."""


class SharedRateLimiter:
    """`serving.state.limits.AsyncRateLimiter` on Redis; `limits(key_id)` gives (requests/min, tokens/min)."""

    def __init__(self, client: redis.Redis, limits: Limits, settings: StateSettings, health: StateHealth) -> None:
        self.client = client
        self.limits = limits
        self.settings = settings
        self.health = health
        self._admit = client.register_script(ADMIT)
        self._settle = client.register_script(SETTLE)
        self._owed: dict[str, int] = {}
        """Key id -> tokens settled here and not yet in the shared bucket."""
        self._flush_timer: asyncio.TimerHandle | None = None
        self._flushing: set[asyncio.Task[None]] = set()

    def _keys(self, key_id: str) -> list[str]:
        # One hash tag per API key: both buckets land on the same Redis Cluster slot, as a script needs.
        base = f"{self.settings.prefix}:ratelimit:{{{key_id}}}"
        return [f"{base}:requests", f"{base}:tokens"]

    async def admit(self, key_id: str, estimate_tokens: Callable[[], int]) -> Admission | None:
        per_minute, tokens_per_minute = self.limits(key_id)
        if per_minute <= 0 and tokens_per_minute <= 0:
            return None
        estimated = estimate_tokens() if tokens_per_minute > 0 else 0
        if not self.health.available(OPERATION):
            return self._unavailable()
        owed = self._owed.pop(key_id, 0)
        try:
            outcome, wait, requests, tokens = await self._admit(
                keys=self._keys(key_id), args=[per_minute, tokens_per_minute, estimated, owed]
            )
        except (RedisError, OSError) as error:
            self.health.failed(OPERATION, error)
            return self._unavailable()
        self.health.succeeded()
        headers = ratelimit_headers(
            BucketLevel(per_minute, float(requests)) if requests else None,
            BucketLevel(tokens_per_minute, float(tokens)) if tokens else None,
        )
        wait_s = float(wait)
        if outcome == OUT_OF_REQUESTS:
            raise requests_exhausted(key_id, per_minute, wait_s, headers)
        if outcome == TOO_LARGE:
            raise request_too_large(key_id, estimated, tokens_per_minute, headers)
        if outcome == OUT_OF_TOKENS:
            raise tokens_exhausted(key_id, tokens_per_minute, estimated, wait_s, headers)
        return Admission(key_id, estimated, headers)

    def settle(self, admission: Admission | None, used_tokens: int) -> None:
        """Owes the difference between the estimate and the real usage; no I/O here (see the module's docstring).
        A correction lost to an outage is dropped (counted): the request was served, the client is not charged
        again later."""
        if admission is None or self.limits(admission.key_id)[1] <= 0:
            return
        if correction := used_tokens - admission.estimated_tokens:
            self._owed[admission.key_id] = self._owed.get(admission.key_id, 0) + correction
            if self._flush_timer is None:
                self._flush_timer = asyncio.get_running_loop().call_later(SETTLE_DELAY_S, self._flush_later)

    def _flush_later(self) -> None:
        self._flush_timer = None
        task = asyncio.get_running_loop().create_task(self._flush_owed(), name="ratelimit-settle")
        self._flushing.add(task)
        task.add_done_callback(self._flushing.discard)

    async def flush(self) -> None:
        """Every correction still owed into the shared buckets now, and those under way landed (at shutdown)."""
        if self._flush_timer is not None:
            self._flush_timer.cancel()
            self._flush_timer = None
        await asyncio.gather(self._flush_owed(), *self._flushing)

    async def _flush_owed(self) -> None:
        """One pipelined round trip for every key owed."""
        owed, self._owed = self._owed, {}
        if not owed or not self.health.available(OPERATION):
            return
        try:
            async with self.client.pipeline(transaction=False) as pipe:
                for key_id, correction in owed.items():
                    if (tokens_per_minute := self.limits(key_id)[1]) > 0:  # the key's limit may have gone since
                        await self._settle(self._keys(key_id)[1:], [tokens_per_minute, correction], client=pipe)
                await pipe.execute()
        except (RedisError, OSError) as error:
            self.health.failed(OPERATION, error)
            return
        self.health.succeeded()

    def _unavailable(self) -> None:
        if self.settings.on_unavailable == "closed":
            raise StateUnavailableError(
                "Rate limits cannot be checked: the shared state (Redis) is unreachable and "
                "`state.on_unavailable` is `closed`. Retry shortly."
            )
        return None
