import asyncio

import pytest

from serving.backends.supervisor import EngineSupervisor
from serving.errors import EngineUnavailableError
from serving.pool.policies.round_robin import RoundRobin
from serving.pool.policy import Reason, RequestContext
from serving.pool.pool import EnginePool
from serving.pool.replica import Replica
from serving.settings import WarmupSettings
from tests.serving.fake_engine import FAST, FakeEngine
from tests.serving.pool.engine_page import engine_page

CTX = RequestContext()


def pool_of(*ids: str) -> EnginePool:
    return EnginePool("m:v1", [Replica(i, url=f"http://{i}:8000") for i in ids], RoundRobin())


def test_choose_skips_failed_and_excluded_replicas() -> None:
    pool = pool_of("a", "b", "c")
    pool.mark_failed(pool.replicas["a"])
    chosen = {pool.choose(CTX, exclude={"b"}).replica.id for _ in range(4)}
    assert chosen == {"c"}


def test_no_routable_replica_is_a_503_with_retry_after() -> None:
    pool = pool_of("a")
    pool.mark_failed(pool.replicas["a"])
    assert not pool.ready
    with pytest.raises(EngineUnavailableError) as raised:
        pool.choose(CTX)
    assert raised.value.headers() == {"Retry-After": "5"}


def test_adapter_requests_go_to_carriers_and_stamp_their_use() -> None:
    pool = pool_of("a", "b", "c")
    pool.replicas["b"].adapters["pirate"] = 0
    choices = [pool.choose(RequestContext(adapter="pirate")) for _ in range(3)]
    assert {c.replica.id for c in choices} == {"b"}
    assert {c.reason for c in choices} == {Reason.adapter_affinity}
    assert pool.replicas["b"].adapters["pirate"] == 3


def test_an_adapter_no_ready_replica_carries_is_a_503_not_a_replica_without_it() -> None:
    pool = pool_of("a", "b")
    pool.replicas["a"].adapters["pirate"] = 1
    pool.mark_failed(pool.replicas["a"])
    with pytest.raises(EngineUnavailableError, match="adapter `pirate` is on no ready replica") as raised:
        pool.choose(RequestContext(adapter="pirate"))
    assert raised.value.headers() == {"Retry-After": "5"}


def test_duplicate_replica_ids_are_refused() -> None:
    with pytest.raises(ValueError, match="already"):
        pool_of("a", "a")


async def test_acquire_gives_the_slot_back_when_the_call_fails() -> None:
    pool = pool_of("a")
    replica = pool.replicas["a"]
    with pytest.raises(RuntimeError):
        async with pool.acquire(replica):
            assert replica.in_flight == 1
            raise RuntimeError("engine died")
    assert replica.in_flight == 0


async def test_acquire_gives_the_slot_back_when_the_request_is_cancelled() -> None:
    pool = pool_of("a")
    replica = pool.replicas["a"]
    entered = asyncio.Event()

    async def request() -> None:
        async with pool.acquire(replica):
            entered.set()
            await asyncio.Event().wait()

    task = asyncio.create_task(request())
    await entered.wait()
    assert replica.in_flight == 1
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert replica.in_flight == 0


async def test_scrape_reads_each_replicas_queue_and_keeps_the_last_value_when_unreachable() -> None:
    async with engine_page() as page:
        page.waiting = 4
        replicas = [Replica("up", url=page.url), Replica("gone", url="http://127.0.0.1:9")]
        pool = EnginePool("m:v1", replicas, RoundRobin())
        pool.replicas["gone"].waiting = 2
        try:
            await pool.scrape()
            assert pool.replicas["up"].waiting == 4
            assert pool.replicas["gone"].waiting == 2
        finally:
            await pool.aclose()


async def test_a_failed_replica_is_probed_back_in_once_healthy() -> None:
    async with engine_page() as page:
        pool = EnginePool("m:v1", [Replica("a", url=page.url)], RoundRobin())
        try:
            pool.mark_failed(pool.replicas["a"])
            page.healthy = False
            assert await pool.probe_failed() == []
            assert not pool.ready
            page.healthy = True
            assert [r.id for r in await pool.probe_failed()] == ["a"]
            assert pool.choose(CTX).replica.id == "a"
        finally:
            await pool.aclose()


async def test_a_supervised_replica_is_routable_only_while_its_supervisor_is_ready() -> None:
    healthy = asyncio.Event()
    supervisor = EngineSupervisor(FakeEngine("m", healthy), FAST, WarmupSettings())
    pool = EnginePool("m:v1", [Replica("a", supervisor=supervisor)], RoundRobin())
    supervisor.start()
    try:
        assert not pool.ready
        healthy.set()
        await supervisor.wait_ready(5)
        assert pool.choose(CTX).replica.id == "a"
        pool.mark_failed(pool.replicas["a"])
        assert [r.id for r in await pool.probe_failed()] == ["a"]
    finally:
        await supervisor.stop()


def test_snapshot_shows_each_replicas_state_and_adapters() -> None:
    pool = pool_of("a", "b")
    pool.replicas["b"].adapters.update({"pirate": 1, "chef": 2})
    pool.mark_failed(pool.replicas["a"])
    a, b = pool.snapshot()
    assert (a["id"], a["routable"], a["adapters"]) == ("a", False, [])
    assert (b["url"], b["routable"], b["adapters"]) == ("http://b:8000", True, ["chef", "pirate"])


def test_a_taken_slot_is_given_back_once_however_often_release_is_called() -> None:
    pool = pool_of("a")
    replica = pool.replicas["a"]
    first, second = pool.take(replica), pool.take(replica)
    assert replica.in_flight == 2
    first()
    first()
    assert replica.in_flight == 1
    second()
    assert replica.in_flight == 0
