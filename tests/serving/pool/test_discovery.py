import asyncio
import logging
import socket

import pytest

from serving.pool.discovery import Change, DnsDiscovery, follow, replica_url, resolve_addresses
from serving.pool.policies.round_robin import RoundRobin
from serving.pool.pool import EnginePool
from serving.pool.replica import Replica
from serving.settings import DiscoverySettings
from tests.serving.pool.engine_page import engine_page

SETTINGS = DiscoverySettings(host="engines.default.svc", port=8000, interval_s=5)


class ScriptedResolver:
    """Answers each lookup with the next scripted result: a list of addresses, or an error to raise."""

    def __init__(self, *answers: list[str] | OSError) -> None:
        self.answers = list(answers)
        self.asked: list[tuple[str, int]] = []

    async def __call__(self, host: str, port: int) -> list[str]:
        self.asked.append((host, port))
        answer = self.answers.pop(0)
        if isinstance(answer, OSError):
            raise answer
        return answer


async def test_yields_replicas_joining_and_leaving() -> None:
    resolver = ScriptedResolver(["10.0.0.1"], ["10.0.0.1", "10.0.0.2"], ["10.0.0.1", "10.0.0.2"], ["10.0.0.2"])
    sleeps: list[float] = []

    async def sleep(seconds: float) -> None:
        sleeps.append(seconds)

    discovery = DnsDiscovery(SETTINGS, resolver, sleep)
    changes = discovery.changes()
    assert await anext(changes) == Change(["http://10.0.0.1:8000"], [])
    assert await anext(changes) == Change(["http://10.0.0.2:8000"], [])
    assert await anext(changes) == Change([], ["http://10.0.0.1:8000"])
    assert sleeps == [5, 5, 5]
    assert resolver.asked[0] == ("engines.default.svc", 8000)
    await changes.aclose()


async def test_an_unresolvable_name_warns_once_keeps_the_replicas_and_retries(caplog) -> None:
    failure = socket.gaierror(socket.EAI_NONAME, "Name or service not known")
    resolver = ScriptedResolver(["10.0.0.1"], failure, failure, ["10.0.0.1", "10.0.0.3"])
    discovery = DnsDiscovery(SETTINGS, resolver)
    await discovery.refresh()
    with caplog.at_level(logging.WARNING, logger="serving.pool.discovery"):
        assert await discovery.refresh() is None
        assert await discovery.refresh() is None
    assert [r.levelno for r in caplog.records] == [logging.WARNING]
    assert "engines.default.svc does not resolve" in caplog.records[0].getMessage()
    assert discovery.urls == {"http://10.0.0.1:8000"}
    assert await discovery.refresh() == Change(["http://10.0.0.3:8000"], [])


async def test_a_name_that_never_resolved_yields_nothing_until_it_does() -> None:
    failure = socket.gaierror(socket.EAI_NONAME, "Name or service not known")
    sleeps = 0

    async def sleep(seconds: float) -> None:
        nonlocal sleeps
        sleeps += 1

    discovery = DnsDiscovery(SETTINGS, ScriptedResolver(failure, failure, ["10.0.0.9"]), sleep)
    assert await anext(discovery.changes()) == Change(["http://10.0.0.9:8000"], [])
    assert sleeps == 2


def test_ipv6_addresses_are_bracketed() -> None:
    assert replica_url("http", "fd00::7", 8000) == "http://[fd00::7]:8000"
    assert replica_url("https", "10.0.0.7", 443) == "https://10.0.0.7:443"


async def test_the_system_resolver_finds_localhost() -> None:
    assert "127.0.0.1" in await resolve_addresses("localhost", 8000)
    discovery = DnsDiscovery(DiscoverySettings(host="localhost", port=8123))
    change = await discovery.refresh()
    assert change is not None and "http://127.0.0.1:8123" in change.added


async def test_the_system_resolver_raises_for_a_name_that_does_not_exist() -> None:
    with pytest.raises(OSError):
        await resolve_addresses("no-such-host.invalid", 8000)


async def test_a_replica_found_under_a_real_name_joins_a_pool_and_is_scraped() -> None:
    async with engine_page() as page:
        page.waiting = 3
        port = int(page.url.rsplit(":", 1)[1])
        discovery = DnsDiscovery(DiscoverySettings(host="localhost", port=port, interval_s=0.01))
        pool = EnginePool("m:v1", [], RoundRobin())
        try:
            change = await anext(discovery.changes())
            for url in change.added:
                pool.add(Replica(url, url=url))
            await pool.scrape()
            assert pool.replicas[page.url].waiting == 3
        finally:
            await pool.aclose()


async def test_a_hosts_file_is_read_again_at_every_lookup(tmp_path) -> None:
    hosts = tmp_path / "hosts"
    hosts.write_text("# fleet\n10.0.0.1 other.test\n")
    discovery = DnsDiscovery(DiscoverySettings(host="engines.test", port=8000, hosts_file=hosts))
    assert await discovery.refresh() is None, "not listed: does not resolve"
    hosts.write_text("10.0.0.1 other.test\n10.0.0.2 engines.test engines  # a replica\n10.0.0.3\tengines.test\n")
    assert await discovery.refresh() == Change(["http://10.0.0.2:8000", "http://10.0.0.3:8000"], [])
    hosts.unlink()
    assert await discovery.refresh() is None, "a missing file changes nothing"
    assert discovery.urls == {"http://10.0.0.2:8000", "http://10.0.0.3:8000"}


async def test_follow_lets_vanished_replicas_leave_before_found_ones_join() -> None:
    resolver = ScriptedResolver(["10.0.0.1"], ["10.0.0.2"])
    steps: list[str] = []

    async def sleep(seconds: float) -> None:
        if not resolver.answers:
            raise asyncio.CancelledError

    async def leave(url: str) -> None:
        steps.append(f"leave {url}")

    with pytest.raises(asyncio.CancelledError):
        await follow(DnsDiscovery(SETTINGS, resolver, sleep), lambda url: steps.append(f"join {url}"), leave)
    assert steps == ["join http://10.0.0.1:8000", "leave http://10.0.0.1:8000", "join http://10.0.0.2:8000"]
