"""Free ports for engines started at run time (their ports cannot be configured in advance)."""

from __future__ import annotations

import socket


def free_port_block(size: int = 1, host: str = "127.0.0.1") -> int:
    """A first port whose `size` consecutive ports are free now (Triton takes HTTP, gRPC and metrics)."""
    for _ in range(50):
        with socket.socket() as probe:
            probe.bind((host, 0))
            first = probe.getsockname()[1]
        if first + size < 65535 and all(_free(host, first + i) for i in range(1, size)):
            return first
    raise RuntimeError(f"no block of {size} free ports on {host}")


def _free(host: str, port: int) -> bool:
    with socket.socket() as probe:
        try:
            probe.bind((host, port))
        except OSError:
            return False
    return True
