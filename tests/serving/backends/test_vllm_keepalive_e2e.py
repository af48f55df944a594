"""The gateway's pooled connections to its engine outlive a quiet spell longer than vLLM's default keep-alive
(5 s), so the next burst reuses them instead of opening one per request."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import psutil

from tests.conftest import listening_pid

VLLM_DEFAULT_KEEP_ALIVE_S = 5
BURST = 8


def engine_connections(pid: int, engine_port: int) -> set[int]:
    """Local ports of the open connections from process `pid` to the engine's port: one per pooled connection."""
    return {
        conn.laddr.port
        for conn in psutil.Process(pid).net_connections(kind="tcp")
        if conn.raddr and conn.raddr.port == engine_port and conn.status == psutil.CONN_ESTABLISHED
    }


def test_engine_connections_survive_a_quiet_spell(server):
    body = {
        "model": "smollm2-135m-instruct", "messages": [{"role": "user", "content": "Count to ten."}],
        "max_tokens": 64, "ignore_eos": True,
    }  # fmt: skip
    start_together = threading.Barrier(BURST)

    def ask(_: int) -> httpx.Response:
        with httpx.Client(timeout=60) as client:
            start_together.wait()
            return client.post(f"{server.base_url}/v1/chat/completions", json=body)

    with ThreadPoolExecutor(BURST) as pool:  # overlapping requests: the gateway pools several connections
        answers = list(pool.map(ask, range(BURST)))
    assert all(answer.status_code == 200 for answer in answers)
    pid = psutil.Process(listening_pid(server.engine_port)).ppid()  # the gateway started the engine
    pooled = engine_connections(pid, server.engine_port)
    assert len(pooled) >= 2, pooled  # how many overlapped is up to the scheduler; one would test nothing
    time.sleep(VLLM_DEFAULT_KEEP_ALIVE_S + 2)  # the quiet spell is the thing under test, not a readiness wait
    survivors = engine_connections(pid, server.engine_port)
    assert pooled <= survivors, f"closed during the quiet spell: {sorted(pooled - survivors)}"
