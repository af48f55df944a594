"""One gateway's (or one CLI command's) handle on the shared state: a Redis client, its health, and the parts
built on them. Built only when `state.url` is set; otherwise the state stays embedded."""

from __future__ import annotations

from dataclasses import dataclass

import redis
import redis.asyncio as aioredis
from prometheus_client import CollectorRegistry

from serving.settings import StateSettings
from serving.state.client import redis_client
from serving.state.health import StateHealth
from serving.state.lease import RedisLease
from serving.state.limits import Limits
from serving.state.records import Definition
from serving.state.redis_keys import KeyLookup, SharedKeyStore
from serving.state.redis_limits import SharedRateLimiter
from serving.state.redis_records import RedisRecords


@dataclass
class SharedState:
    settings: StateSettings
    client: aioredis.Redis
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

    def stored_routes(self) -> dict[str, Definition]:
        """The shared route table for a gateway being built (before its event loop runs); empty while Redis is
        unreachable: its route watcher applies the table once Redis answers."""
        client = redis.Redis.from_url(
            str(self.settings.url), socket_timeout=self.settings.timeout_s, decode_responses=True
        )
        try:
            return client.hgetall(self.records().routes_key)
        except (redis.RedisError, OSError) as error:
            self.health.failed("routes", error)
            return {}
        finally:
            client.close()

    def lease(self, name: str = "rollouts") -> RedisLease:
        return RedisLease(self.client, self.settings, self.health, name)

    async def close(self) -> None:
        await self.client.aclose()
