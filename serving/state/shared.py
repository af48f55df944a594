"""One gateway's (or one CLI command's) handle on the shared state: a Redis client, its health, and the parts
built on them. Built only when `state.url` is set; otherwise the state stays embedded."""

from __future__ import annotations

from dataclasses import dataclass

import redis.asyncio as redis
from prometheus_client import CollectorRegistry

from serving.settings import StateSettings
from serving.state.client import redis_client
from serving.state.health import StateHealth
from serving.state.lease import RedisLease
from serving.state.limits import Limits
from serving.state.redis_keys import KeyLookup, SharedKeyStore
from serving.state.redis_limits import SharedRateLimiter
from serving.state.redis_records import RedisRecords


@dataclass
class SharedState:
    settings: StateSettings
    client: redis.Redis
    health: StateHealth

    @classmethod
    def open(cls, settings: StateSettings, registry: CollectorRegistry | None = None) -> SharedState:
        """No I/O: the first call connects, so a gateway starts while Redis is still coming up."""
        client = redis_client(settings)
        return cls(settings, client, StateHealth(str(settings.url), settings.retry_s, registry))

    def rate_limiter(self, limits: Limits) -> SharedRateLimiter:
        return SharedRateLimiter(self.client, limits, self.settings, self.health)

    def key_store(self) -> SharedKeyStore:
        return SharedKeyStore(self.client, self.settings)

    def key_lookup(self) -> KeyLookup:
        return KeyLookup(self.key_store(), self.health, self.settings.keys_poll_s)

    def records(self) -> RedisRecords:
        return RedisRecords(self.client, self.settings, self.health)

    def lease(self, name: str = "rollouts") -> RedisLease:
        return RedisLease(self.client, self.settings, self.health, name)

    async def close(self) -> None:
        await self.client.aclose()
