"""Which CPU cores each managed CPU replica is bound to (vLLM's `VLLM_CPU_OMP_THREADS_BIND`).

Two engines binding the same cores each run their OpenMP threads there and halve each other's speed; a replica
per disjoint core set is what lets two replicas on a 2-core box serve twice one replica's single-core rate. The
child gets its set through `VllmBackend.environment()`, as `cpu_threads_bind` does for one engine today.
"""

from __future__ import annotations

import os
from collections.abc import Sequence


def parse_cpu_list(text: str) -> list[int]:
    """`0-3,6` -> [0, 1, 2, 3, 6] (Linux cpulist syntax, as vLLM takes it)."""
    cores: list[int] = []
    for part in text.split(","):
        first, _, last = part.strip().partition("-")
        start, end = int(first), int(last or first)
        if end < start:
            raise ValueError(f"`{part}` is not a core range")
        cores.extend(range(start, end + 1))
    return cores


def format_cpu_list(cores: Sequence[int]) -> str:
    """[0, 1, 2, 3, 6] -> `0-3,6`."""
    parts: list[str] = []
    ordered = sorted(cores)
    start = previous = ordered[0]
    for core in [*ordered[1:], None]:
        if core is not None and core == previous + 1:
            previous = core
            continue
        parts.append(str(start) if start == previous else f"{start}-{previous}")
        if core is not None:
            start = previous = core
    return ",".join(parts)


def core_sets(replicas: int, cores: Sequence[int]) -> list[str]:
    """`cores` split into `replicas` contiguous sets as even as possible (the first ones get the extra core):
    on cores [0, 1], two replicas get "0" and "1"."""
    if not 1 <= replicas <= len(cores):
        raise ValueError(f"{replicas} replicas cannot each have their own core out of {len(cores)}")
    ordered = sorted(cores)
    size, extra = divmod(len(ordered), replicas)
    sets, start = [], 0
    for replica in range(replicas):
        end = start + size + (replica < extra)
        sets.append(format_cpu_list(ordered[start:end]))
        start = end
    return sets


def replica_core_sets(key: str, replicas: int, explicit: Sequence[str], usable: Sequence[int]) -> list[str]:
    """The core set of each managed replica: `explicit` (checked) or `usable` split evenly. Errors are one line
    naming the settings `key` (e.g. `engine.cpu_core_sets`)."""
    if not explicit:
        try:
            return core_sets(replicas, usable)
        except ValueError as exc:
            raise ValueError(f"{key}: {exc}") from None
    if len(explicit) != replicas:
        raise ValueError(f"{key}: {len(explicit)} core sets for {replicas} replicas")
    claimed: dict[int, str] = {}
    for text in explicit:
        try:
            cores = parse_cpu_list(text)
        except ValueError:
            raise ValueError(f"{key}: `{text}` is not a core list such as `0-3` or `0,2`") from None
        missing = sorted(set(cores) - set(usable))
        if missing:
            raise ValueError(f"{key}: `{text}` names cores {format_cpu_list(missing)} this machine does not offer")
        for core in cores:
            if core in claimed:
                raise ValueError(f"{key}: `{text}` and `{claimed[core]}` overlap on core {core}")
            claimed[core] = text
    return list(explicit)


def usable_cores() -> list[int]:
    """The cores this process may run on (its affinity mask, which a container's cpuset narrows)."""
    return sorted(os.sched_getaffinity(0))
