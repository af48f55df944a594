"""A real overload walks a route's degradation ladder up and down: a gateway in front of the session's engine,
route `chat` on an adapter, more concurrent long streams on that engine than the ladder's levels. Requests
entering at each step get its treatment (capped answers, the cheaper base version, priority shedding), no
running stream fails, and once the load is gone the route is normal again."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator

import httpx
import pytest

from serving.api.auth import key_digest
from tests.conftest import GATEWAY_UP_TIMEOUT_S, start_bentoml, stop, throwaway_adapter, wait_for

BASE = "smollm2-135m-instruct"
VIP_KEY, LOW_KEY = "sk-degrade-vip", "sk-degrade-low"
CAP_TOKENS = 8
LONG_STREAM_TOKENS = 384
LEVEL_TIMEOUT_S = 120


@pytest.fixture(scope="module")
def adapter(settings, tmp_path_factory) -> Iterator[str]:
    with throwaway_adapter(settings, tmp_path_factory.mktemp("degrade"), "test-degrade-adapter", 7) as tag:
        yield tag


@pytest.fixture(scope="module")
def degrading(server, artifacts_dir, adapter) -> Iterator[str]:
    steps = [
        {"action": "cap_tokens", "signal": "in_flight", "over": 2, "enter_s": 1, "exit_s": 2, "max_tokens": CAP_TOKENS},
        {"action": "fallback", "signal": "in_flight", "over": 4, "enter_s": 1, "exit_s": 2, "to": BASE, "share": 1},
        {"action": "shed_priority", "signal": "in_flight", "over": 6, "enter_s": 1, "exit_s": 2, "below_priority": 5},
    ]
    keys = [
        {"id": "vip", "sha256": key_digest(VIP_KEY), "role": "admin", "priority": 5},
        {"id": "low", "sha256": key_digest(LOW_KEY), "priority": 1},
    ]
    env = {
        "SERVEKIT_ENGINE__URL": server.engine_url,
        "SERVEKIT_HOME": str(artifacts_dir / "degrading"),
        "SERVEKIT_AUTH__KEYS": json.dumps(keys),
        "SERVEKIT_ROUTES": json.dumps({"chat": {adapter: 100}}),
        "SERVEKIT_DEGRADE": json.dumps({"chat": steps}),
        "SERVEKIT_DEGRADE_INTERVAL_S": "0.25",
    }
    process, base_url = start_bentoml("bentos.service:Servekit", env, artifacts_dir / "degrading.log")
    try:
        wait_for(f"{base_url}/ready", process, GATEWAY_UP_TIMEOUT_S)
        yield base_url
    finally:
        httpx.delete(f"{base_url}/admin/routes/chat", headers=auth(VIP_KEY))
        httpx.post(f"{base_url}/admin/models/{adapter}/unload", headers=auth(VIP_KEY))  # the engine is shared
        stop(process)


def auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def chat(max_tokens: int, stream: bool = False, model: str = "chat") -> dict[str, object]:
    return {
        "model": model, "messages": [{"role": "user", "content": "Tell me a long story about the sea."}],
        "max_tokens": max_tokens, "stream": stream, "ignore_eos": True, "temperature": 0,
    }  # fmt: skip


class LongStreams:
    """Streams that keep the route's engine busy, sent to the base version by name (so the route's own steps
    do not shorten them); each remembers how it ended."""

    def __init__(self, base_url: str) -> None:
        self.base_url = base_url
        self.endings: list[str] = []
        self.threads: list[threading.Thread] = []

    def add(self, count: int) -> None:
        for _ in range(count):
            thread = threading.Thread(target=self._stream, daemon=True)
            thread.start()
            self.threads.append(thread)

    def _stream(self) -> None:
        ending = "no [DONE]"
        try:
            body = chat(LONG_STREAM_TOKENS, stream=True, model=BASE)
            with httpx.stream("POST", f"{self.base_url}/v1/chat/completions", json=body, headers=auth(VIP_KEY),
                              timeout=600) as response:  # fmt: skip
                if response.status_code != 200:
                    ending = f"status {response.status_code}"
                else:
                    for line in response.iter_lines():
                        if line.startswith('data: {"error"'):
                            ending = line
                            break
                        if line == "data: [DONE]":
                            ending = "done"
        except httpx.HTTPError as error:
            ending = repr(error)
        self.endings.append(ending)

    def join(self) -> None:
        for thread in self.threads:
            thread.join(600)


def level(base_url: str) -> int:
    return httpx.get(f"{base_url}/ready").json()["degradation"]["chat"]["step"]


def wait_level(base_url: str, wanted: int) -> None:
    deadline = time.monotonic() + LEVEL_TIMEOUT_S
    while level(base_url) != wanted:
        assert time.monotonic() < deadline, f"the ladder never reached step {wanted} (at {level(base_url)})"
        time.sleep(0.2)


def probe(base_url: str, key: str = VIP_KEY) -> httpx.Response:
    return httpx.post(f"{base_url}/v1/chat/completions", json=chat(64), headers=auth(key), timeout=300)


def test_a_real_overload_walks_the_ladder_up_and_down(degrading, adapter):
    normal = probe(degrading)
    assert normal.status_code == 200 and normal.headers["x-servekit-version"] == adapter
    assert "x-servekit-degraded" not in normal.headers and normal.json()["usage"]["completion_tokens"] == 64
    load = LongStreams(degrading)
    try:
        load.add(3)  # 3 in flight: over the cap step's 2
        wait_level(degrading, 1)
        capped = probe(degrading)
        assert capped.status_code == 200 and capped.headers["x-servekit-degraded"] == "cap_tokens"
        assert capped.json()["usage"]["completion_tokens"] == CAP_TOKENS, "the real usage of the capped answer"

        load.add(2)  # 5: over the fallback step's 4
        wait_level(degrading, 2)
        cheaper = probe(degrading)
        assert cheaper.status_code == 200 and cheaper.headers["x-servekit-version"].startswith(f"{BASE}:")
        assert cheaper.headers["x-servekit-degraded"] == "fallback,cap_tokens"

        load.add(2)  # 7: over the shedding step's 6
        wait_level(degrading, 3)
        shed = probe(degrading, LOW_KEY)
        assert shed.status_code == 503 and shed.json()["error"]["code"] == "overloaded"
        assert int(shed.headers["retry-after"]) >= 1
        assert probe(degrading).status_code == 200, "a caller of high enough priority is still served"
    finally:
        load.join()
    assert load.endings == ["done"] * 7, "no running stream failed while the ladder moved"
    wait_level(degrading, 0)
    after = probe(degrading)
    assert after.headers["x-servekit-version"] == adapter and "x-servekit-degraded" not in after.headers
    assert after.json()["usage"]["completion_tokens"] == 64
