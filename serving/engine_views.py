"""What the engines look like from outside: their states for /ready, a report per engine for /admin/engines,
and their own Prometheus series for /metrics (a pool's replicas told apart by a `replica` label)."""

from __future__ import annotations

import asyncio
import time

from serving.engines import Engines
from serving.protocol import EngineStatus


def engine_states(engines: Engines) -> dict[str, str]:
    return {name: str(replica.supervisor.state) for name, _, replica in engines.named_replicas() if replica.supervisor}


def engine_report(engines: Engines) -> list[EngineStatus]:
    now = time.monotonic()
    return [
        EngineStatus(
            name=name,
            version=base.version,
            state=str(supervisor.state),
            state_for_s=round(now - supervisor.state_since, 1),
            restarts=supervisor.restarts,
            on_demand=base.name not in engines.configured,
            last_error=supervisor.last_error,
            url=getattr(supervisor.backend, "base_url", None),
            adapters=sorted(replica.adapters),
            cores=getattr(supervisor.backend, "cores", None),
        )
        for name, base, replica in engines.named_replicas()
        if (supervisor := replica.supervisor) is not None
    ]


async def engine_metrics(engines: Engines) -> list[str]:
    named = [(name, base, r.supervisor) for name, base, r in engines.named_replicas() if r.supervisor is not None]
    texts = await asyncio.gather(*(supervisor.backend.metrics_text() for _, _, supervisor in named))
    return [
        text if name == base.name else with_label(text, "replica", name)
        for (name, base, _), text in zip(named, texts, strict=True)
    ]


def with_label(metrics_text: str, name: str, value: str) -> str:
    """Prometheus text with `name="value"` added to every sample (two replicas' identical series apart)."""
    label = f'{name}="{value}"'
    lines = []
    for line in metrics_text.splitlines():
        if not line or line.startswith("#"):
            lines.append(line)
        elif "{" in line:
            lines.append(line.replace("{", "{" + label + ",", 1))
        else:
            metric, _, rest = line.partition(" ")
            lines.append(f"{metric}{{{label}}} {rest}")
    return "\n".join(lines) + "\n"
