"""`StateRecords` in Redis: every replica reads and writes the same routes, rollout states and audit log.

A route change sets a new version in the same transaction, so a replica that polls it every
`state.routes_poll_s` (`RouteWatcher`) routes by the new table within that delay. Rollout writes are fenced by
the controller's lease token. A write while Redis is unreachable is refused with 503
`state_unavailable`: a change that only one replica would see is worse than none."""

from __future__ import annotations

import asyncio
import json
import logging
import time
import uuid
from collections.abc import Callable
from typing import Any

import redis.asyncio as redis
from redis.exceptions import RedisError

from serving.errors import LeaseLostError, StateUnavailableError
from serving.settings import StateSettings
from serving.state.health import StateHealth
from serving.state.lease import lease_key
from serving.state.records import Definition, StateRecords

logger = logging.getLogger("servekit.state")

# KEYS: lease, target; ARGV: token, field ('' appends to a list), value. 0: the token is not the holder's.
FENCED_WRITE = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
if ARGV[2] == '' then redis.call('RPUSH', KEYS[2], ARGV[3]) else redis.call('HSET', KEYS[2], ARGV[2], ARGV[3]) end
return 1
"""


class RedisRecords:
    def __init__(self, client: redis.Redis, settings: StateSettings, health: StateHealth) -> None:
        self.client = client
        self.health = health
        prefix = settings.prefix
        self.routes_key, self.version_key = f"{prefix}:routes", f"{prefix}:routes:version"
        self.rollouts_key, self.audit_prefix = f"{prefix}:rollouts", f"{prefix}:audit:"
        self.lease = lease_key(settings, "rollouts")
        self._fenced = client.register_script(FENCED_WRITE)

    async def _call(self, operation: str, call: Callable[[], Any]) -> Any:
        try:
            result = await call()
        except (RedisError, OSError) as error:
            self.health.failed(operation, error)
            raise StateUnavailableError(f"The shared state (Redis) is unreachable: {operation} refused.") from error
        self.health.succeeded()
        return result

    async def routes(self) -> dict[str, Definition]:
        return await self._call("routes", lambda: self.client.hgetall(self.routes_key))

    async def routes_version(self) -> str:
        return await self._call("routes", lambda: self.client.get(self.version_key)) or ""

    async def _change_route(self, change: Callable[[redis.client.Pipeline], Any]) -> None:
        """A fresh random version rather than a counter: a Redis restarted without its data would count
        from zero again and repeat a version some replica holds, which would then miss the change."""
        version = uuid.uuid4().hex

        async def run() -> None:
            async with self.client.pipeline(transaction=True) as pipe:
                change(pipe)
                pipe.set(self.version_key, version)
                await pipe.execute()

        await self._call("routes", run)

    async def set_route(self, name: str, definition: Definition) -> None:
        await self._change_route(lambda pipe: pipe.hset(self.routes_key, name, definition))

    async def delete_route(self, name: str) -> None:
        await self._change_route(lambda pipe: pipe.hdel(self.routes_key, name))

    async def rollouts(self) -> dict[str, Definition]:
        return await self._call("rollouts", lambda: self.client.hgetall(self.rollouts_key))

    async def _write_fenced(self, target: str, field: str, value: str, token: int) -> None:
        written = await self._call(
            "rollouts", lambda: self._fenced(keys=[self.lease, target], args=[token, field, value])
        )
        if not written:
            raise LeaseLostError(f"Rollout lease token {token} is no longer the holder's: the write was refused.")

    async def save_rollout(self, route: str, state: Definition, token: int) -> None:
        await self._write_fenced(self.rollouts_key, route, state, token)

    async def audit(self, route: str, event: str, detail: dict[str, Any], token: int) -> None:
        entry = json.dumps({"at": time.time(), "event": event, **detail}, default=str)
        await self._write_fenced(self.audit_prefix + route, "", entry, token)

    async def history(self, route: str) -> list[dict[str, Any]]:
        entries = await self._call("rollouts", lambda: self.client.lrange(self.audit_prefix + route, 0, -1))
        return [json.loads(entry) for entry in entries]


class RouteWatcher:
    """Keeps one replica's route table in step with the shared one: `apply(table)` runs whenever the version
    moved. While Redis is unreachable the replica keeps routing by the last table it applied."""

    def __init__(self, records: StateRecords, apply: Callable[[dict[str, Definition]], None], poll_s: float) -> None:
        self.records = records
        self.apply = apply
        self.poll_s = poll_s
        self.version: str | None = None

    async def poll(self) -> bool:
        """One check; True when a new table was applied."""
        try:
            version = await self.records.routes_version()
            if version == self.version:
                return False
            table = await self.records.routes()
        except StateUnavailableError:
            return False
        self.apply(table)
        self.version = version
        return True

    async def run(self) -> None:
        """The replica's background task (cancel it on shutdown)."""
        while True:
            await self.poll()
            await asyncio.sleep(self.poll_s)
