"""Multi-LoRA on the real engine: hot load/unload through the admin API, served under their own names."""

from __future__ import annotations

import concurrent.futures
import json
import threading
import time
from collections.abc import Callable

import httpx
import openai
import pytest

BASE = "smollm2-135m-instruct"
QUESTION = [{"role": "user", "content": "Tell me about the sea."}]


def load(server, tag: str) -> httpx.Response:
    return httpx.post(f"{server.base_url}/admin/models/{tag}/load", timeout=120)


def unload(server, tag: str) -> httpx.Response:
    return httpx.post(f"{server.base_url}/admin/models/{tag}/unload", timeout=120)


@pytest.fixture
def client(server) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{server.base_url}/v1", api_key="unused", max_retries=0)


def test_adapter_hot_load_serve_and_unload(server, client, random_adapters):
    tag = random_adapters["a"].tag
    loaded = load(server, tag)
    assert loaded.status_code == 200, loaded.text
    assert loaded.json()["parent"] == BASE
    cards = {m.id: m for m in client.models.list().data}
    assert cards[tag].parent == BASE and cards[tag].root == tag

    args = {"messages": QUESTION, "max_tokens": 24, "temperature": 0}
    base_answer = client.chat.completions.create(model=BASE, **args).choices[0].message.content
    raw = client.chat.completions.with_raw_response.create(model=tag, **args)
    assert raw.headers["x-servekit-version"] == tag
    assert raw.parse().choices[0].message.content != base_answer

    metrics = httpx.get(f"{server.base_url}/metrics").text
    assert f'servekit_requests_total{{model="test-adapter-a",route="{tag}",status="200",version="{tag}"}}' in metrics

    assert unload(server, tag).status_code == 200
    with pytest.raises(openai.NotFoundError):
        client.chat.completions.create(model=tag, **args)
    assert tag not in {m.id for m in client.models.list().data}


@pytest.mark.parametrize(
    ("key", "status", "code"),
    [
        ("foreign", 400, "adapter_base_mismatch"),
        ("wide", 400, "adapter_rank_too_large"),
        ("mlp", 400, "adapter_modules_not_served"),
    ],
)
def test_unservable_adapters_are_refused_with_reasons(server, random_adapters, key, status, code):
    response = load(server, random_adapters[key].tag)
    assert response.status_code == status
    error = response.json()["error"]
    assert error["code"] == code
    if key == "foreign":
        assert "other-base:v1" in error["message"] and random_adapters["a"].labels["base"] in error["message"]
    if key == "mlp":
        assert "`gate_proj`, `up_proj`" in error["message"] and "engine.lora_target_modules" in error["message"]


def test_unknown_versions_and_the_base_cannot_be_loaded_or_unloaded(server):
    assert load(server, "ghost:0000").json()["error"]["code"] == "model_not_found"
    assert load(server, "ghost:0000").status_code == 404
    assert unload(server, "ghost:0000").status_code == 404
    assert unload(server, BASE).status_code == 400


def test_loading_and_unloading_under_streaming_load_fails_no_request(server, random_adapters):
    stop = threading.Event()

    def stream_until_stopped() -> list[int]:
        statuses = []
        with httpx.Client(base_url=server.base_url, timeout=120) as http:
            while not stop.is_set():
                body = {"model": BASE, "messages": QUESTION, "max_tokens": 16, "stream": True}
                with http.stream("POST", "/v1/chat/completions", json=body) as response:
                    text = "".join(response.iter_text())
                    statuses.append(response.status_code if text.rstrip().endswith("[DONE]") else -1)
        return statuses

    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        streams = [pool.submit(stream_until_stopped) for _ in range(4)]
        try:
            for _ in range(3):
                for key in ("a", "b"):
                    assert load(server, random_adapters[key].tag).status_code == 200
                for key in ("a", "b"):
                    assert unload(server, random_adapters[key].tag).status_code == 200
        finally:
            stop.set()  # a failed assert must not leave the pool waiting on endless streams
        statuses = [status for future in streams for status in future.result()]
    assert statuses and all(status == 200 for status in statuses)


class AdapterTraffic:
    """Clients streaming to one adapter until stopped; each outcome kept with the moment it was sent."""

    def __init__(self, base_url: str, tag: str, clients: int = 2) -> None:
        self.base_url, self.tag = base_url, tag
        self.stop = threading.Event()
        self.outcomes: list[tuple[float, float, int, str]] = []  # (sent, answered, status, done/cut off/error code)
        self.threads = [threading.Thread(target=self._run) for _ in range(clients)]

    def _run(self) -> None:
        body = {"model": self.tag, "messages": QUESTION, "max_tokens": 8, "stream": True}
        with httpx.Client(base_url=self.base_url, timeout=120) as http:
            while not self.stop.is_set():
                sent = time.monotonic()
                with http.stream("POST", "/v1/chat/completions", json=body) as response:
                    text = "".join(response.iter_text())
                if response.status_code == 200:
                    outcome = "done" if text.rstrip().endswith("data: [DONE]") else "cut off"
                else:
                    outcome = json.loads(text)["error"]["code"]
                self.outcomes.append((sent, time.monotonic(), response.status_code, outcome))

    def wait_for(self, seen: Callable[[tuple[float, float, int, str]], bool]) -> None:
        """Until an outcome matching `seen` arrived (bounded by the test's timeout)."""
        while not any(seen(o) for o in list(self.outcomes)):
            if not any(thread.is_alive() for thread in self.threads):
                raise AssertionError("the clients stopped")
            time.sleep(0.05)


def test_traffic_on_an_adapter_being_loaded_and_unloaded_only_404s_while_it_is_unloaded(server, random_adapters):
    """Every request to the churned adapter succeeds, or gets 404 `model_not_found` while it is unloaded: answered
    after the unload call (the gateway stops routing to it at once; running requests finish) and sent before the
    next load returned. Each phase sees traffic before the next begins."""
    tag = random_adapters["b"].tag
    assert load(server, tag).status_code == 200
    close_breaker(server, tag)
    unloaded: list[tuple[float, float]] = []  # (unload called, next load returned)
    traffic = AdapterTraffic(server.base_url, tag)
    for thread in traffic.threads:
        thread.start()
    try:
        for _ in range(3):
            loaded_at = time.monotonic()
            traffic.wait_for(lambda o, t=loaded_at: o[0] > t and o[2] == 200)
            unload_called = time.monotonic()
            assert unload(server, tag).status_code == 200
            unload_returned = time.monotonic()
            traffic.wait_for(lambda o, t=unload_returned: o[0] > t and o[2] == 404)
            assert load(server, tag).status_code == 200
            unloaded.append((unload_called, time.monotonic()))
        traffic.wait_for(lambda o, t=unloaded[-1][1]: o[0] > t and o[2] == 200)
    finally:
        traffic.stop.set()
        for thread in traffic.threads:
            thread.join(120)
        unload(server, tag)

    def while_unloaded(sent: float, answered: float) -> bool:
        return any(answered >= called and sent <= returned for called, returned in unloaded)

    wrong = [o for o in traffic.outcomes if o[2:] != (200, "done")
             and not (o[2:] == (404, "model_not_found") and while_unloaded(o[0], o[1]))]  # fmt: skip
    assert wrong == [], wrong


def close_breaker(server, tag: str) -> None:
    """Start from a closed circuit breaker: an earlier test's injected faults may have left `tag`'s open, and
    while its half-open probe runs every other request is refused with 503. One request at a time until closed."""
    body = {"model": tag, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 1}
    while httpx.get(f"{server.base_url}/ready", timeout=10).json()["breakers"].get(tag, "closed") != "closed":
        httpx.post(f"{server.base_url}/v1/chat/completions", json=body, timeout=120)
        time.sleep(0.5)  # the breaker's open period passes by time alone: nothing else to poll
