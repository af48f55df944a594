"""Replicas from DNS: a name (e.g. a Kubernetes headless Service) resolved again every few seconds, each address a
replica. Yields what changed; the caller starts supervising added URLs (they take traffic once warmed up) and
removes the ones gone.

A failed lookup changes nothing: a DNS hiccup is no evidence that the engines went away, and a name that does not
resolve yet (the Service is created before its pods) is warned about once and retried, never fatal.

`follow` keeps a version's pool in step with the name: a found URL joins through the caller's `join` (under its
own supervisor, so it takes traffic only after its health check and warm-up), a vanished one leaves through
`leave`."""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

from serving.backends.supervisor import EngineSupervisor
from serving.settings import DiscoverySettings

logger = logging.getLogger(__name__)

Resolver = Callable[[str, int], Awaitable[list[str]]]
"""(host, port) -> the addresses it resolves to now; raises OSError when it does not resolve."""


async def resolve_addresses(host: str, port: int) -> list[str]:
    """The system resolver (`getaddrinfo`, off the event loop's thread), one entry per distinct address."""
    infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return sorted({str(info[4][0]) for info in infos})


def hosts_file_resolver(path: Path) -> Resolver:
    """A resolver reading `path` (/etc/hosts format: `address name [alias...]`, `#` comments) at every lookup,
    so a rewritten file is picked up at the next refresh."""

    async def resolve(host: str, port: int) -> list[str]:
        addresses = set()
        for line in path.read_text().splitlines():  # a missing file is an OSError: "does not resolve"
            address, *names = line.partition("#")[0].split() or [""]
            if host in names:
                addresses.add(address)
        if not addresses:
            raise socket.gaierror(socket.EAI_NONAME, f"not in {path}")
        return sorted(addresses)

    return resolve


def replica_url(scheme: str, address: str, port: int) -> str:
    """`http://10.0.0.7:8000`, `http://[fd00::7]:8000`."""
    host = f"[{address}]" if ipaddress.ip_address(address).version == 6 else address
    return f"{scheme}://{host}:{port}"


@dataclass(frozen=True)
class Change:
    added: list[str]
    removed: list[str]


class DnsDiscovery:
    def __init__(
        self,
        settings: DiscoverySettings,
        resolver: Resolver | None = None,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        key: str = "discovery",
    ) -> None:
        """`key` names the settings in log lines (`engine.discovery`); `resolver` defaults to the system's, or
        the settings' hosts file."""
        self.settings = settings
        self.key = key
        self.urls: set[str] = set()
        """The replicas as of the last successful lookup."""
        if resolver is None:
            resolver = resolve_addresses if settings.hosts_file is None else hosts_file_resolver(settings.hosts_file)
        self._resolve = resolver
        self._sleep = sleep
        self._failing = False

    async def refresh(self) -> Change | None:
        """Resolve once; the change since the last successful lookup, or None when this one failed."""
        host, port = self.settings.host, self.settings.port
        try:
            addresses = await self._resolve(host, port)
        except OSError as exc:
            if not self._failing:
                logger.warning(
                    "%s.host: %s does not resolve (%s); retrying every %gs", self.key, host, exc, self._interval
                )
            self._failing = True
            return None
        if self._failing:
            logger.info("%s.host: %s resolves", self.key, host)
        self._failing = False
        urls = {replica_url(self.settings.scheme, address, port) for address in addresses}
        change = Change(sorted(urls - self.urls), sorted(self.urls - urls))
        self.urls = urls
        return change

    async def changes(self) -> AsyncIterator[Change]:
        """Every non-empty change, the first lookup's replicas included, until cancelled."""
        while True:
            change = await self.refresh()
            if change is not None and (change.added or change.removed):
                yield change
            await self._sleep(self._interval)

    @property
    def _interval(self) -> float:
        return self.settings.interval_s


@dataclass(frozen=True)
class DiscoveredReplicas:
    """A version's replicas found by DNS: the lookup, the engine kind, and how an engine found at a URL is
    supervised (health checks, warm-up, adapters' reload, like any remote replica)."""

    dns: DnsDiscovery
    engine: str
    supervise: Callable[[str], EngineSupervisor]


async def follow(dns: DnsDiscovery, join: Callable[[str], None], leave: Callable[[str], Awaitable[None]]) -> None:
    """Apply every change of `dns` until cancelled: vanished URLs leave first, then found ones join."""
    async for change in dns.changes():
        for url in change.removed:
            await leave(url)
        for url in change.added:
            join(url)
