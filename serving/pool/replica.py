"""One engine replica as the pool sees it: where it is, how busy it is, whether traffic may go there."""

from __future__ import annotations

from dataclasses import dataclass, field

from serving.backends.supervisor import EngineSupervisor


@dataclass(eq=False)
class Replica:
    """A replica of one served version: a managed or remote engine under an `EngineSupervisor`, or a bare URL
    (e.g. found by DNS discovery before the caller wraps it in a supervisor).

    The load figures are the gateway's own view (`in_flight`, exact and current) plus the engine's queue as last
    scraped (`waiting`, a few seconds old but it sees other gateways' traffic too)."""

    id: str
    url: str | None = None
    supervisor: EngineSupervisor | None = None
    in_flight: int = 0
    """Requests this gateway has sent to the replica and not yet finished (kept by `EnginePool.acquire`)."""
    waiting: int = 0
    """`vllm:num_requests_waiting` at the last scrape: requests queued inside the engine, not yet scheduled."""
    healthy: bool = True
    """False from a failed request (`EnginePool.mark_failed`) until a probe passes again."""
    adapters: dict[str, int] = field(default_factory=dict)
    """Adapters loaded on the replica -> the pool's tick when one last served a request (for LRU unloading)."""

    def __post_init__(self) -> None:
        if (self.url is None) == (self.supervisor is None):
            raise ValueError(f"replica {self.id}: give exactly one of url and supervisor")

    @property
    def routable(self) -> bool:
        """May take a request now: not taken out by a failure, and its supervisor (if any) reports ready."""
        return self.healthy and (self.supervisor is None or self.supervisor.ready)

    @property
    def load(self) -> int:
        """What load-aware policies compare: in flight from here plus queued in the engine."""
        return self.in_flight + self.waiting
