"""Replicas from DNS: a name (e.g. a Kubernetes headless Service) resolved again every few seconds, each address a
replica. Yields what changed; the caller starts supervising added URLs (they take traffic once warmed up) and
removes the ones gone.

A failed lookup changes nothing: a DNS hiccup is no evidence that the engines went away, and a name that does not
resolve yet (the Service is created before its pods) is warned about once and retried, never fatal."""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass

from serving.settings import DiscoverySettings

logger = logging.getLogger(__name__)

Resolver = Callable[[str, int], Awaitable[list[str]]]
"""(host, port) -> the addresses it resolves to now; raises OSError when it does not resolve."""


async def resolve_addresses(host: str, port: int) -> list[str]:
    """The system resolver (`getaddrinfo`, off the event loop's thread), one entry per distinct address."""
    infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return sorted({str(info[4][0]) for info in infos})


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
        resolver: Resolver = resolve_addresses,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self.settings = settings
        self.urls: set[str] = set()
        """The replicas as of the last successful lookup."""
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
                logger.warning("discovery: %s does not resolve (%s); retrying every %gs", host, exc, self._interval)
            self._failing = True
            return None
        if self._failing:
            logger.info("discovery: %s resolves again", host)
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
