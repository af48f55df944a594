"""Shared API keys against a real redis-server: one store and lookup per replica."""

from __future__ import annotations

import asyncio

import pytest
from prometheus_client import CollectorRegistry

from serving.api.auth import key_digest
from serving.errors import ConflictError, NotFoundError, StateUnavailableError
from serving.settings import StateSettings
from serving.state.redis_keys import StoredKey, new_key
from serving.state.shared import SharedState
from tests.conftest import ManualClock

POLL_S = 0.5


@pytest.fixture
async def states(redis_server):
    opened: list[SharedState] = []

    def open_state(registry: CollectorRegistry | None = None) -> SharedState:
        settings = StateSettings(url=redis_server.url, retry_s=0.05, keys_poll_s=POLL_S)
        opened.append(SharedState.open(settings, registry))
        return opened[-1]

    yield open_state
    for state in opened:
        await state.close()


def lookup_on(state: SharedState, clock: ManualClock):
    lookup = state.key_lookup()
    lookup.clock = clock
    return lookup


async def test_a_key_created_on_one_replica_works_on_another_and_revocation_reaches_it_within_the_poll(states):
    a, b = states(), states()
    clock = ManualClock()
    on_b = lookup_on(b, clock)
    key = new_key()
    digest = key_digest(key)
    assert await on_b.get(digest) is None  # B has loaded the table before the key exists

    await a.key_store().create(StoredKey("team-a", digest, "user", ("chat",), 60, None))
    clock.now += POLL_S
    found = await on_b.get(digest)
    assert (found.id, found.role, found.models) == ("team-a", "user", ("chat",))
    assert on_b.limits("team-a") == (60, None)

    await a.key_store().revoke("team-a")
    clock.now += POLL_S - 0.01
    assert await on_b.get(digest) is not None  # within the poll interval the copy may lag
    clock.now += 0.01
    assert await on_b.get(digest) is None  # one interval (≤ 1 s by configuration) later it never does
    assert on_b.limits("team-a") == (None, None)


async def test_half_an_interval_on_a_request_starts_the_check_without_waiting_for_it(states):
    a, b = states(), states()
    clock = ManualClock()
    on_b = lookup_on(b, clock)
    digest = key_digest(new_key())
    await a.key_store().create(StoredKey("team", digest))
    assert (await on_b.get(digest)).id == "team"

    await a.key_store().revoke("team")
    clock.now += POLL_S / 2
    assert (await on_b.get(digest)).id == "team"  # answered from the copy; the check runs behind it
    while on_b._loading is not None:
        await asyncio.sleep(0.01)
    assert await on_b.get(digest) is None  # the copy the check brought, with no more time passed


async def test_concurrent_first_requests_share_one_load_and_none_is_refused(states):
    state = states()
    digest = key_digest(new_key())
    await state.key_store().create(StoredKey("k", digest))
    lookup = state.key_lookup()
    found = await asyncio.gather(*(lookup.get(digest) for _ in range(20)))
    assert [key.id for key in found] == ["k"] * 20


async def test_only_the_digest_is_stored_and_ids_are_unique(states, redis_server):
    store = states().key_store()
    key = new_key()
    await store.create(StoredKey("ci", key_digest(key), "admin"))
    with pytest.raises(ConflictError):
        await store.create(StoredKey("ci", key_digest(new_key())))
    with pytest.raises(NotFoundError):
        await store.revoke("nobody")
    client = states().client
    values = [await client.hgetall(name) for name in await client.keys("servekit:keys*") if name != store.version_key]
    text = repr(values)
    assert key not in text and key_digest(key) in text


async def test_an_outage_answers_from_the_last_table_and_a_replica_that_never_saw_one_refuses(states, redis_server):
    registry = CollectorRegistry()
    writer, reader, late = states(), states(registry), states()
    clock = ManualClock()
    on_reader = lookup_on(reader, clock)
    digest = key_digest(new_key())
    await writer.key_store().create(StoredKey("k", digest))
    assert (await on_reader.get(digest)).id == "k"

    redis_server.stop()
    clock.now += POLL_S
    assert (await on_reader.get(digest)).id == "k"
    assert registry.get_sample_value("servekit_state_errors_total", {"operation": "keys"}) == 1
    with pytest.raises(StateUnavailableError):
        await lookup_on(late, clock).get(digest)

    redis_server.start()  # empty again: a restarted Redis without persistence has no keys
    clock.now += POLL_S
    while reader.health.down:  # backing off for retry_s, then the next lookup probes again
        await on_reader.get(digest)
        await asyncio.sleep(0.01)
    assert await on_reader.get(digest) is None
