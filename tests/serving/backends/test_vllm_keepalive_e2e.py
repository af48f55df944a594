"""The gateway's pooled connections to its engine outlive a quiet spell longer than vLLM's default keep-alive
(5 s), so the next burst reuses them instead of opening one per request."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import psutil

from tests.conftest import listening_pid

VLLM_DEFAULT_KEEP_ALIVE_S = 5
BURST = 8


def engine_connections(pid: int, engine_port: int) -> int:
    """Open connections from process `pid` to the engine's port."""
    return sum(
        1
        for conn in psutil.Process(pid).net_connections(kind="tcp")
        if conn.raddr and conn.raddr.port == engine_port and conn.status == psutil.CONN_ESTABLISHED
    )


def test_engine_connections_survive_a_quiet_spell(server):
    body = {
        "model": "smollm2-135m-instruct", "messages": [{"role": "user", "content": "Count to ten."}],
        "max_tokens": 16, "ignore_eos": True,
    }  # fmt: skip
    with ThreadPoolExecutor(BURST) as pool:  # overlapping requests: one pooled connection each
        answers = list(
            pool.map(
                lambda _: httpx.post(f"{server.base_url}/v1/chat/completions", json=body, timeout=60), range(BURST)
            )
        )
    assert all(answer.status_code == 200 for answer in answers)
    pid = psutil.Process(listening_pid(server.engine_port)).ppid()  # the gateway started the engine
    opened = engine_connections(pid, server.engine_port)
    assert opened >= BURST
    time.sleep(VLLM_DEFAULT_KEEP_ALIVE_S + 2)  # the quiet spell is the thing under test, not a readiness wait
    assert engine_connections(pid, server.engine_port) >= opened
