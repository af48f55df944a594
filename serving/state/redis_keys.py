"""API keys shared by every gateway on one Redis: stored by SHA-256 (never the key), created and revoked by
`servekit keys`, looked up by each replica from a local copy that follows a version counter.

A replica checks the counter when requests arrive and reloads the whole table when it moved: one small GET per
interval instead of one per request, and no subscriber task per replica. The check starts in the background
once the copy is half `state.keys_poll_s` (≤ 1 s) old, so under traffic no request waits on Redis for its key;
a request finding the copy a whole interval old waits for the check. So a revoked key is refused everywhere
within that delay: unlike LiteLLM's per-key TTL caches, no key outlives its revocation by more than that."""

from __future__ import annotations

import asyncio
import json
import secrets
import time
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass

import redis.asyncio as redis
from redis.exceptions import RedisError

from serving.errors import ConflictError, NotFoundError, StateUnavailableError
from serving.settings import StateSettings
from serving.state.health import StateHealth

OPERATION = "keys"

# The version is a fresh random id per change, not a counter: a Redis restarted without its data would count
# from zero again and could repeat the version a replica holds, which would then keep a stale table.

# KEYS: table (sha256 -> record), ids (id -> sha256), version; ARGV: id, sha256, record, new version.
# 0: the id is taken.
CREATE = """
if redis.call('HSETNX', KEYS[2], ARGV[1], ARGV[2]) == 0 then return 0 end
redis.call('HSET', KEYS[1], ARGV[2], ARGV[3])
redis.call('SET', KEYS[3], ARGV[4])
return 1
"""

# KEYS: table, ids, version; ARGV: id, new version. 0: no such key.
REVOKE = """
local digest = redis.call('HGET', KEYS[2], ARGV[1])
if not digest then return 0 end
redis.call('HDEL', KEYS[2], ARGV[1])
redis.call('HDEL', KEYS[1], digest)
redis.call('SET', KEYS[3], ARGV[2])
return 1
"""


@dataclass(frozen=True)
class StoredKey:
    """A key as the shared table holds it (the fields of `settings.ApiKey`, plus when it was made)."""

    id: str
    sha256: str
    role: str = "user"
    models: tuple[str, ...] = ()
    requests_per_minute: int | None = None
    tokens_per_minute: int | None = None
    priority: int = 1
    created_at: float = 0.0

    @classmethod
    def from_json(cls, text: str) -> StoredKey:
        fields = json.loads(text)
        return cls(**{**fields, "models": tuple(fields["models"])})


def new_key() -> str:
    return "sk-" + secrets.token_urlsafe(32)


class SharedKeyStore:
    """The table in Redis: what `servekit keys` writes and what KeyLookup reads."""

    def __init__(self, client: redis.Redis, settings: StateSettings) -> None:
        self.client = client
        base = f"{settings.prefix}:keys"
        self.table, self.ids, self.version_key = base, f"{base}:ids", f"{base}:version"
        self._create = client.register_script(CREATE)
        self._revoke = client.register_script(REVOKE)

    async def create(self, key: StoredKey) -> None:
        record = json.dumps({**asdict(key), "created_at": key.created_at or time.time()})
        keys = [self.table, self.ids, self.version_key]
        if not await self._create(keys=keys, args=[key.id, key.sha256, record, uuid.uuid4().hex]):
            raise ConflictError(f"A key with id `{key.id}` exists already; revoke it first or pick another id.")

    async def revoke(self, key_id: str) -> None:
        if not await self._revoke(keys=[self.table, self.ids, self.version_key], args=[key_id, uuid.uuid4().hex]):
            raise NotFoundError(f"No key with id `{key_id}`.")

    async def version(self) -> str:
        return await self.client.get(self.version_key) or ""

    async def all(self) -> dict[str, StoredKey]:
        """sha256 -> key."""
        return {digest: StoredKey.from_json(text) for digest, text in (await self.client.hgetall(self.table)).items()}


class KeyLookup:
    """One replica's copy of the shared table; `get(sha256)` is what `authenticate` calls per request.

    While Redis is unreachable it answers from the last table it saw (counted and logged by StateHealth);
    before it has seen one it refuses with 503 rather than let anyone in or lock everyone out."""

    def __init__(
        self,
        store: SharedKeyStore,
        health: StateHealth,
        poll_s: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.store = store
        self.health = health
        self.poll_s = poll_s
        self.clock = clock
        self._by_digest: dict[str, StoredKey] | None = None
        self._by_id: dict[str, StoredKey] = {}
        self._version: str | None = None
        self._checked = -float("inf")
        self._loading: asyncio.Future[None] | None = None

    async def get(self, sha256: str) -> StoredKey | None:
        await self._refresh_when_due()
        if self._by_digest is None:
            raise StateUnavailableError("API keys cannot be checked: the shared state (Redis) is unreachable.")
        return self._by_digest.get(sha256)

    def limits(self, key_id: str) -> tuple[int | None, int | None]:
        """A shared key's own (requests/min, tokens/min), None where it has none (the defaults apply)."""
        key = self._by_id.get(key_id)
        return (key.requests_per_minute, key.tokens_per_minute) if key else (None, None)

    async def _refresh_when_due(self) -> None:
        """Single-flight: one check at a time, started early (half an interval) without waiting for it, and
        waited for only once the copy is a whole interval old, so none is let in on an older table, nor refused
        at start-up."""
        if self._loading is None:
            age = self.clock() - self._checked
            if age < self.poll_s / 2 or not self.health.available(OPERATION):
                return
            self._loading = asyncio.ensure_future(self._load())
            if age < self.poll_s:
                return
        if self.clock() - self._checked >= self.poll_s:
            await asyncio.shield(self._loading)

    async def _load(self) -> None:
        started = self.clock()  # the copy is as old as the version read, not as its arrival
        try:
            version = await self.store.version()
            if version != self._version:
                table = await self.store.all()
                self._by_digest, self._version = table, version
                self._by_id = {key.id: key for key in table.values()}
            self._checked = started
            self.health.succeeded()
        except (RedisError, OSError) as error:
            self.health.failed(OPERATION, error)
        finally:
            self._loading = None
