"""Which replica's rollout controller may act: a lease in Redis with an expiry and a fencing token.

Taking the lease hands out a token from a counter that only grows, even across a Redis restarted empty (it
starts from Redis's clock); the lease key holds the holder's token until it expires. Every rollout write
(`RedisRecords.save_rollout`, `.audit`, and `.set_route` for its weights) runs a script that compares its token
with the lease key's, so a holder that paused past its expiry (GC, a stalled host) and then wakes up cannot write
over its successor: its token no longer matches, the write is refused and it stops. Because the fence guards
every write, a holder whose renewal fails (a slow reply on a busy host, a Redis blip) keeps its token until the
lease it last renewed would expire, instead of handing the rollout over on one timeout."""

from __future__ import annotations

import math
import os
import socket
import time
from collections.abc import Callable
from typing import Protocol

import redis.asyncio as redis
from redis.exceptions import RedisError

from serving.settings import StateSettings
from serving.state.health import StateHealth

OPERATION = "lease"

# KEYS: lease, fence counter, holder; ARGV: the caller's token ('' when it holds none), ttl ms, the caller's name.
# Returns the token held. The holder key names who holds it (`host:pid`), for operators and tests.
ACQUIRE = """
local current = redis.call('GET', KEYS[1])
if current then
  if current ~= ARGV[1] then return false end
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  redis.call('SET', KEYS[3], ARGV[3], 'PX', ARGV[2])
  return tonumber(current)
end
if redis.call('EXISTS', KEYS[2]) == 0 then
  -- A new (or restarted empty) Redis: the counter starts at Redis's clock in ms, above every token handed out
  -- before, so a holder from before the restart can neither renew nor write with a token reissued to another.
  local clock = redis.call('TIME')
  redis.call('SET', KEYS[2], string.format('%.0f', tonumber(clock[1]) * 1000 + math.floor(tonumber(clock[2]) / 1000)))
end
local token = redis.call('INCR', KEYS[2])
redis.call('SET', KEYS[1], token, 'PX', ARGV[2])
redis.call('SET', KEYS[3], ARGV[3], 'PX', ARGV[2])
return token
"""

# KEYS: lease, holder; ARGV: token. Gives the lease up only if it is still this token's.
RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('DEL', KEYS[2])
  return redis.call('DEL', KEYS[1])
end
return 0
"""


class Lease(Protocol):
    token: int | None
    """The token to write with while held; None while another replica holds the lease."""

    async def acquire(self) -> int | None: ...

    async def release(self) -> None: ...


class EmbeddedLease:
    """One gateway, no Redis: it always holds the lease (the SQLite records do not check tokens)."""

    token: int | None = 0

    async def acquire(self) -> int | None:
        return self.token

    async def release(self) -> None:
        return None


def lease_key(settings: StateSettings, name: str) -> str:
    return f"{settings.prefix}:lease:{name}"


class RedisLease:
    """Call `acquire()` at least every ttl/3 (`RolloutController.hold_lease` does): it takes the lease when free,
    renews it when held, and answers None while another replica holds it."""

    def __init__(
        self, client: redis.Redis, settings: StateSettings, health: StateHealth, name: str = "rollouts"
    ) -> None:
        self.key = lease_key(settings, name)
        self.fence_key, self.holder_key = f"{self.key}:fence", f"{self.key}:holder"
        self.name = f"{socket.gethostname()}:{os.getpid()}"
        self.ttl_ms = math.ceil(settings.lease_ttl_s * 1000)
        self.health = health
        self.clock: Callable[[], float] = time.monotonic
        self.token: int | None = None
        self._expires_at = 0.0
        """When the lease last renewed expires at the latest (counted from before the renewal was sent)."""
        self._acquire = client.register_script(ACQUIRE)
        self._release = client.register_script(RELEASE)

    async def acquire(self) -> int | None:
        """The token to write with, or None. A failed renewal keeps the token until the lease would expire;
        after that an unreachable Redis answers None: another replica may be taking the lease."""
        sent = self.clock()
        try:
            held = await self._acquire(
                keys=[self.key, self.fence_key, self.holder_key], args=[self._mine(), self.ttl_ms, self.name]
            )
        except (RedisError, OSError) as error:
            self.health.failed(OPERATION, error)
            if self.clock() >= self._expires_at:
                self.token = None
            return self.token
        self.health.succeeded()
        self.token = None if held is None else int(held)
        self._expires_at = sent + self.ttl_ms / 1000
        return self.token

    async def release(self) -> None:
        """On a clean shutdown: the next replica need not wait for the expiry."""
        if self.token is not None:
            try:
                await self._release(keys=[self.key, self.holder_key], args=[self._mine()])
            except (RedisError, OSError) as error:
                self.health.failed(OPERATION, error)
            self.token = None

    def _mine(self) -> str:
        return "" if self.token is None else str(self.token)
