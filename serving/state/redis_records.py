"""`StateRecords` in Redis: every replica reads and writes the same routes, rollout states and audit log.

A route change (a deletion too: its tombstone) sets a new version in the same script, so a replica that polls it
every `state.routes_poll_s` (`RouteWatcher`) routes by the new table within that delay; the controller's route
changes are fenced by its lease token in that script, so a stalled holder cannot set weights after its
successor. A rollout's state and its audit entry are written by one script: compared with what the writer read,
fenced by the lease token when the writer is the controller. A write while Redis is unreachable is refused with 503
`state_unavailable`: a change that only one replica would see is worse than none."""

from __future__ import annotations

import asyncio
import json
import logging
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import redis.asyncio as redis
from redis.exceptions import RedisError

from serving.errors import LeaseLostError, StateUnavailableError
from serving.settings import StateSettings
from serving.state.health import StateHealth
from serving.state.lease import lease_key
from serving.state.records import DELETED, Definition, StateRecords, stale

logger = logging.getLogger("servekit.state")

FENCE = """
if ARGV[1] ~= '' and redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
"""
"""Every fenced script's first line: KEYS[1] is the lease, ARGV[1] the writer's token ('' unfenced); 0 when the
token is not the holder's, before anything is written."""

# KEYS: lease, audit list; ARGV: token, entry.
AUDIT = (
    FENCE
    + """
redis.call('RPUSH', KEYS[2], ARGV[2])
return 1
"""
)

# KEYS: lease, routes hash, routes version; ARGV: token, route, definition, new version.
SET_ROUTE = (
    FENCE
    + """
redis.call('HSET', KEYS[2], ARGV[2], ARGV[3])
redis.call('SET', KEYS[3], ARGV[4])
return 1
"""
)

# KEYS: lease, rollouts hash, audit list; ARGV: token, route, '1' when a state is expected, the expected state,
# the new state, the audit entry. -1: the state changed.
SAVE_ROLLOUT = (
    FENCE
    + """
local current = redis.call('HGET', KEYS[2], ARGV[2])
if ARGV[3] == '1' then
  if current ~= ARGV[4] then return -1 end
elseif current then
  return -1
end
redis.call('HSET', KEYS[2], ARGV[2], ARGV[5])
redis.call('RPUSH', KEYS[3], ARGV[6])
return 1
"""
)


class RedisRecords:
    def __init__(self, client: redis.Redis, settings: StateSettings, health: StateHealth) -> None:
        self.client = client
        self.health = health
        prefix = settings.prefix
        self.routes_key, self.version_key = f"{prefix}:routes", f"{prefix}:routes:version"
        self.rollouts_key, self.audit_prefix = f"{prefix}:rollouts", f"{prefix}:audit:"
        self.lease = lease_key(settings, "rollouts")
        self._set_route = client.register_script(SET_ROUTE)
        self._audit = client.register_script(AUDIT)
        self._save_rollout = client.register_script(SAVE_ROLLOUT)

    async def _call(self, operation: str, call: Callable[[], Any]) -> Any:
        """Refused at once while backing off after a failure (StateHealth), so no admin call or route poll waits
        on a dead server's timeout more than once per `state.retry_s`."""
        if not self.health.available(operation):
            raise _unavailable()
        try:
            result = await call()
        except (RedisError, OSError) as error:
            self.health.failed(operation, error)
            raise _unavailable() from error
        self.health.succeeded()
        return result

    async def routes(self) -> dict[str, Definition]:
        return await self._call("routes", lambda: self.client.hgetall(self.routes_key))

    async def routes_version(self) -> str:
        return await self._call("routes", lambda: self.client.get(self.version_key)) or ""

    async def set_route(self, name: str, definition: Definition, token: int | None = None) -> None:
        """A fresh random version rather than a counter: a Redis restarted without its data would count
        from zero again and repeat a version some replica holds, which would then miss the change."""
        keys = [self.lease, self.routes_key, self.version_key]
        args = [_token(token), name, definition, uuid.uuid4().hex]
        _check_fence(await self._call("routes", lambda: self._set_route(keys=keys, args=args)), token)

    async def delete_route(self, name: str) -> None:
        await self.set_route(name, DELETED)

    async def rollouts(self) -> dict[str, Definition]:
        return await self._call("rollouts", lambda: self.client.hgetall(self.rollouts_key))

    async def save_rollout(
        self,
        route: str,
        state: Definition,
        expected: Definition | None,
        event: str,
        detail: dict[str, Any],
        token: int | None,
    ) -> None:
        args = [_token(token), route, "0" if expected is None else "1", expected or "", state, _entry(event, detail)]
        keys = [self.lease, self.rollouts_key, self.audit_prefix + route]
        written = await self._call("rollouts", lambda: self._save_rollout(keys=keys, args=args))
        if written == -1:
            raise stale(route)
        _check_fence(written, token)

    async def audit(self, route: str, event: str, detail: dict[str, Any], token: int | None) -> None:
        keys, args = [self.lease, self.audit_prefix + route], [_token(token), _entry(event, detail)]
        _check_fence(await self._call("rollouts", lambda: self._audit(keys=keys, args=args)), token)

    async def history(self, route: str) -> list[dict[str, Any]]:
        entries = await self._call("rollouts", lambda: self.client.lrange(self.audit_prefix + route, 0, -1))
        return [json.loads(entry) for entry in entries]


def _unavailable() -> StateUnavailableError:
    """Whichever record failed first (a route change reads the route's rollout before writing), the operator
    learns the same: nothing was changed, and serving goes on."""
    return StateUnavailableError(
        "The shared state (Redis) is unreachable: routes, rollouts and their history cannot be read or changed "
        "until it answers; nothing was changed. Requests are still served by the last route table. Retry shortly."
    )


def _token(token: int | None) -> str:
    return "" if token is None else str(token)


def _entry(event: str, detail: dict[str, Any]) -> str:
    return json.dumps({"at": time.time(), "event": event, **detail}, default=str)


def _check_fence(written: int, token: int | None) -> None:
    if not written:
        raise LeaseLostError(f"Rollout lease token {token} is no longer the holder's: the write was refused.")


class RouteWatcher:
    """Keeps one replica's route table in step with the shared one: `apply(table)` runs whenever the version
    moved. While Redis is unreachable the replica keeps routing by the last table it applied."""

    def __init__(
        self, records: StateRecords, apply: Callable[[dict[str, Definition]], Awaitable[None]], poll_s: float
    ) -> None:
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
        await self.apply(table)
        self.version = version
        return True

    async def run(self) -> None:
        """The replica's background task (cancel it on shutdown); a table that fails to apply is tried again."""
        while True:
            try:
                await self.poll()
            except Exception:
                logger.exception("applying the shared route table failed; retrying")
            await asyncio.sleep(self.poll_s)
