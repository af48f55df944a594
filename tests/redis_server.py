"""A real redis-server per test (`serving.state.server.LocalRedis`), on a free port, without persistence, so
tests can stop and restart it to play an outage."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from serving.bench.session import free_port
from serving.state.server import LocalRedis


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[LocalRedis]:
    server = LocalRedis(free_port(), tmp_path)
    server.start()
    try:
        yield server
    finally:
        server.stop()
