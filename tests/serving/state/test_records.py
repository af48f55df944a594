"""The StateRecords contract, kept by the SQLite file and by Redis alike, and Redis's route change propagation."""

from __future__ import annotations

import asyncio
import time

import pytest

from serving.errors import ConflictError, LeaseLostError, StateUnavailableError
from serving.settings import StateSettings
from serving.state.records import DELETED, SqliteRecords
from serving.state.redis_records import RouteWatcher
from serving.state.shared import SharedState
from serving.state.sqlite import connect


@pytest.fixture
async def shared(redis_server):
    opened: list[SharedState] = []

    def open_state() -> SharedState:
        opened.append(SharedState.open(StateSettings(url=redis_server.url, retry_s=0.05, lease_ttl_s=5)))
        return opened[-1]

    yield open_state
    for state in opened:
        await state.close()


@pytest.fixture(params=["sqlite", "redis"])
async def records_and_token(request, tmp_path):
    if request.param == "sqlite":
        yield SqliteRecords(connect(tmp_path / "state.db")), 0
        return
    state = SharedState.open(StateSettings(url=request.getfixturevalue("redis_server").url))
    try:
        yield state.records(), await state.lease().acquire()
    finally:
        await state.close()


async def test_both_stores_keep_routes_rollouts_and_the_audit_log(records_and_token):
    records, token = records_and_token
    before = await records.routes_version()
    await records.set_route("chat", '{"a": 1}')
    await records.set_route("code", '{"b": 2}')
    await records.delete_route("code")
    assert await records.routes() == {"chat": '{"a": 1}', "code": DELETED}, "a deletion is stored as a tombstone"
    assert await records.routes_version() != before
    deleted = await records.routes_version()
    await records.set_route("code", '{"b": 3}', token)  # created again: the tombstone is replaced
    assert await records.routes() == {"chat": '{"a": 1}', "code": '{"b": 3}'}
    assert await records.routes_version() != deleted
    await records.audit("chat", "pre-rollout gate", {"passed": True}, None)
    await records.save_rollout("chat", '{"phase": "progressing"}', None, "started", {"canary": "v2"}, None)
    await records.save_rollout(
        "chat", '{"phase": "promoted"}', '{"phase": "progressing"}', "promote", {"step": 3}, token
    )
    with pytest.raises(ConflictError):  # decided on a state that is no longer the stored one: neither is written
        await records.save_rollout("chat", '{"phase": "paused"}', '{"phase": "progressing"}', "paused", {}, None)
    with pytest.raises(ConflictError):  # a start over an existing rollout state
        await records.save_rollout("chat", '{"phase": "progressing"}', None, "started", {}, None)
    assert await records.rollouts() == {"chat": '{"phase": "promoted"}'}
    history = await records.history("chat")
    assert [(entry["event"], entry.get("canary"), entry.get("step")) for entry in history] == [
        ("pre-rollout gate", None, None),
        ("started", "v2", None),
        ("promote", None, 3),
    ]
    assert await records.history("other") == []


async def test_a_route_changed_through_one_replica_is_applied_by_the_others_within_the_poll(shared):
    a, b, c = shared(), shared(), shared()
    tables: dict[str, dict[str, str]] = {"b": {}, "c": {}}

    def applier(name: str):
        async def apply(table: dict[str, str]) -> None:
            tables[name] = table

        return apply

    watchers = [RouteWatcher(state.records(), applier(name), poll_s=0.5) for name, state in (("b", b), ("c", c))]
    tasks = [asyncio.create_task(watcher.run()) for watcher in watchers]
    try:
        await a.records().set_route("chat", '{"v2": 10}')
        deadline = time.monotonic() + 1.0
        while time.monotonic() < deadline and any(table != {"chat": '{"v2": 10}'} for table in tables.values()):
            await asyncio.sleep(0.02)
        assert tables == {"b": {"chat": '{"v2": 10}'}, "c": {"chat": '{"v2": 10}'}}
    finally:
        for task in tasks:
            task.cancel()


async def test_an_outage_refuses_changes_keeps_the_last_table_and_catches_up_after(shared, redis_server):
    a, b = shared(), shared()
    applied: list[dict[str, str]] = []

    async def apply(table: dict[str, str]) -> None:
        applied.append(table)

    watcher = RouteWatcher(b.records(), apply, poll_s=0.5)
    await a.records().set_route("chat", "{}")
    assert await watcher.poll() and applied[-1] == {"chat": "{}"}

    redis_server.stop()
    with pytest.raises(StateUnavailableError):
        await a.records().set_route("chat", '{"v2": 50}')
    assert not await watcher.poll()  # keeps routing by what it has
    assert applied == [{"chat": "{}"}]

    redis_server.start()  # without persistence: empty; a production Redis keeps its data (AOF/RDB)
    async with asyncio.timeout(5):
        while True:  # refused at once until the back-off (`retry_s`) lets a call probe Redis again
            try:
                await a.records().set_route("chat", '{"v2": 50}')
                break
            except StateUnavailableError:
                await asyncio.sleep(0.01)
    assert await watcher.poll() and applied[-1] == {"chat": '{"v2": 50}'}


async def test_a_route_write_with_a_stale_lease_token_is_refused_and_changes_nothing(shared, redis_server):
    """A controller that stalled past its lease's expiry cannot set weights after its successor: the script
    refuses it before writing the route or moving the version. The successor's token and an admin's change
    (no token) are written."""
    stalled, successor = shared(), shared()
    stale_token = await stalled.lease().acquire()
    records = successor.records()
    await records.set_route("chat", '{"v2": 10}', stale_token)
    await successor.client.delete(records.lease)  # the stalled holder's lease expires
    current = await successor.lease().acquire()
    assert current is not None and stale_token is not None and current > stale_token
    version = await records.routes_version()
    with pytest.raises(LeaseLostError):
        await stalled.records().set_route("chat", '{"v2": 50}', stale_token)
    assert await records.routes() == {"chat": '{"v2": 10}'} and await records.routes_version() == version
    await records.set_route("chat", '{"v2": 20}', current)
    assert await records.routes() == {"chat": '{"v2": 20}'} and await records.routes_version() != version
    await stalled.records().set_route("chat", '{"v2": 0}')  # an operator's change carries no token
    assert await records.routes() == {"chat": '{"v2": 0}'}
