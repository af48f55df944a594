"""The rollout lease against a real redis-server: replicas competing, expiry, fencing of stale writes."""

from __future__ import annotations

import asyncio

import pytest

from serving.errors import LeaseLostError
from serving.settings import StateSettings
from serving.state.lease import EmbeddedLease, RedisLease
from serving.state.shared import SharedState
from tests.conftest import ManualClock

TTL_S = 0.3


@pytest.fixture
async def replicas(redis_server):
    opened = [SharedState.open(StateSettings(url=redis_server.url, lease_ttl_s=TTL_S, retry_s=0.05)) for _ in "ab"]
    yield opened
    for state in opened:
        await state.close()


async def test_one_holder_at_a_time_and_renewing_keeps_the_token(replicas):
    a, b = (state.lease() for state in replicas)
    token = await a.acquire()
    assert token is not None
    assert await replicas[0].client.get(a.holder_key) == a.name  # who holds it, for operators
    assert await b.acquire() is None
    assert await a.acquire() == token  # renewal
    await a.release()
    assert await b.acquire() == token + 1  # released: taken at once, with a newer token


async def test_a_holder_that_stops_renewing_is_replaced_after_the_expiry_and_its_writes_are_refused(replicas):
    (lease_a, lease_b), (records_a, records_b) = (s.lease() for s in replicas), (s.records() for s in replicas)
    old = await lease_a.acquire()
    await records_a.save_rollout("chat", '{"step": 1}', None, "promoted-step", {"step": 1}, old)
    assert await lease_b.acquire() is None

    while (new := await lease_b.acquire()) is None:  # A stopped renewing: B polls until the lease expired
        await asyncio.sleep(TTL_S / 10)
    assert new > old
    with pytest.raises(LeaseLostError):  # A wakes up and tries to write its stale decision
        await records_a.save_rollout("chat", '{"step": 99}', '{"step": 1}', "promoted-step", {"step": 99}, old)
    with pytest.raises(LeaseLostError):
        await records_a.audit("chat", "resumed", {"step": 99}, old)
    await records_b.save_rollout("chat", '{"step": 2}', '{"step": 1}', "promoted-step", {"step": 2}, new)

    assert await records_a.rollouts() == {"chat": '{"step": 2}'}
    assert [entry["step"] for entry in await records_a.history("chat")] == [1, 2]  # no gap, no stale duplicate
    assert await lease_a.acquire() is None  # and A cannot take it back while B renews


async def test_a_failed_renewal_keeps_the_lease_until_it_would_expire_then_lets_it_go(replicas, redis_server):
    lease = replicas[0].lease()
    clock = ManualClock()
    lease.clock = clock
    token = await lease.acquire()
    assert token is not None
    redis_server.stop()
    clock.now += TTL_S * 0.9
    assert await lease.acquire() == token  # one failed renewal (a slow reply) does not hand the rollout over
    clock.now += TTL_S * 0.1
    assert await lease.acquire() is None and lease.token is None  # by now another replica may hold it


async def keep(lease: RedisLease) -> None:
    """What `RolloutController.hold_lease` does with its lease: acquire every third of the expiry."""
    while True:
        await lease.acquire()
        await asyncio.sleep(lease.ttl_ms / 3000)


async def test_kept_leases_elect_one_holder_and_the_other_takes_over_when_it_dies(redis_server):
    # A longer expiry than the other tests': renewals every 0.5 s survive a busy CI box's scheduling stalls.
    ttl_s = 1.5
    states = [SharedState.open(StateSettings(url=redis_server.url, lease_ttl_s=ttl_s)) for _ in "ab"]
    a, b = (state.lease() for state in states)
    keepers = {lease: asyncio.create_task(keep(lease)) for lease in (a, b)}
    try:
        while a.token is None and b.token is None:
            await asyncio.sleep(0.05)
        holder, other = (a, b) if a.token is not None else (b, a)
        await asyncio.sleep(ttl_s)  # a whole expiry later the holder still holds it: renewed, not re-taken
        assert other.token is None and holder.token is not None
        first = holder.token
        keepers[holder].cancel()  # the holder's process dies (no release)
        while other.token is None:
            await asyncio.sleep(0.05)
        assert other.token > first
    finally:
        for task in keepers.values():
            task.cancel()
        for state in states:
            await state.close()


async def test_the_embedded_lease_always_holds():
    lease = EmbeddedLease()
    assert await lease.acquire() == 0 and lease.token == 0


async def test_a_redis_restarted_empty_never_reissues_a_token_its_old_holder_still_keeps(replicas, redis_server):
    a, b = (state.lease() for state in replicas)
    old = await a.acquire()
    redis_server.stop()
    redis_server.start()  # no persistence: the lease and its counter are gone
    new = await b.acquire()
    assert new is not None and new > old
    assert await a.acquire() is None  # A's renewal with its old token finds B's lease
    with pytest.raises(LeaseLostError):
        await replicas[0].records().audit("chat", "resumed", {}, old)
