"""A base-model update as a canary on real engines: a route names a second registered base version, the gateway
starts a vLLM engine for it (warm before it gets traffic), both versions answer, then the route moves to the new
base and back, and the on-demand engine is stopped, while streaming clients (official `openai` client) see no
failed request."""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import bentoml
import httpx
import openai
import psutil
import pytest
from typer.testing import CliRunner

from serving.cli import app as cli
from serving.registry.store import import_directory
from serving.router.router import embedded_router
from serving.router.routes import Route, RouteMember
from serving.state import connect
from tests.conftest import GATEWAY_UP_TIMEOUT_S, base_copy, start_bentoml, stop, wait_for

BASE = "smollm2-135m-instruct"
BLUE = "smollm2-blue"
ROUTE = "assistant"
START_TIMEOUT_S = 900  # a vLLM start next to a busy engine on a shared 2-core box (measured 160-500 s)
# A test here may wait for its gateway and for an on-demand engine's start: each up to START_TIMEOUT_S.
pytestmark = pytest.mark.timeout(GATEWAY_UP_TIMEOUT_S + 2 * START_TIMEOUT_S)


def put_route(gateway: str, members: dict[str, float]) -> httpx.Response:
    body = {"members": [{"version": v, "weight": w} for v, w in members.items()]}
    return httpx.put(f"{gateway}/admin/routes/{ROUTE}", json=body, timeout=START_TIMEOUT_S + 60)


def cards(gateway: str) -> dict[str, dict]:
    return {card["id"]: card for card in httpx.get(f"{gateway}/v1/models", timeout=10).json()["data"]}


def engine_process(served_name: str) -> psutil.Process | None:
    """The vLLM server child serving `served_name`, if one runs."""
    for process in psutil.process_iter(["cmdline"]):
        cmdline = process.info["cmdline"] or []
        if "--served-model-name" in cmdline and cmdline[cmdline.index("--served-model-name") + 1] == served_name:
            return process
    return None


def alive(process: psutil.Process) -> bool:
    try:
        return process.is_running() and process.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def listening(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return True
    except OSError:
        return False


def until(condition: Callable[[], bool], timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.2)


class StreamingClients:
    """Clients streaming chat completions from a route until stopped, each pausing `pause_s` between requests;
    every answer's version (x-servekit-version) and start time is kept, and every failure. (Back to back, the
    busy engine's pinned threads starve a new engine's start on this 2-core box: measured 160-500 s instead of
    ~25 s idle; in CI even one stream every 0.5 s kept a new engine's worker at <1 % CPU for 12 minutes.)"""

    def __init__(self, base_url: str, model: str, clients: int = 2, pause_s: float = 0.5) -> None:
        self.pause_s = pause_s
        self.base_url, self.model = base_url, model
        self.done = threading.Event()
        self.answers: list[tuple[float, str]] = []
        self.failures: list[str] = []
        self.threads = [threading.Thread(target=self._run, daemon=True) for _ in range(clients)]

    def _run(self) -> None:
        client = openai.OpenAI(base_url=f"{self.base_url}/v1", api_key="unused", max_retries=0, timeout=120)
        while not self.done.is_set():
            began = time.monotonic()
            try:
                raw = client.chat.completions.with_raw_response.create(
                    model=self.model, messages=[{"role": "user", "content": "Say hi."}], max_tokens=8, stream=True
                )
                text = "".join(c.choices[0].delta.content or "" for c in raw.parse() if c.choices)
                version = raw.headers["x-servekit-version"]
                if text:
                    self.answers.append((began, version))
                else:
                    self.failures.append(f"{version}: empty answer")
            except Exception as exc:  # every kind of failure counts; none may happen
                self.failures.append(repr(exc))
            self.done.wait(self.pause_s)

    def versions_since(self, since: float) -> list[str]:
        return [version for began, version in list(self.answers) if began >= since]

    def __enter__(self) -> StreamingClients:
        for thread in self.threads:
            thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.done.set()
        for thread in self.threads:
            thread.join()


@pytest.fixture(scope="module")
def blue(settings) -> Iterator[str]:
    """A second base version of the same weights."""
    with base_copy(settings, BLUE) as tag:
        yield tag


@contextlib.contextmanager
def extra_gateway(server, home: Path, log: Path) -> Iterator[str]:
    """A gateway on the session's engine (its primary); on-demand engines are its own children. Yields once
    /ready is green."""
    env = {
        "SERVEKIT_ENGINE__URL": server.engine_url,
        "SERVEKIT_HOME": str(home),
        "SERVEKIT_ENGINE__KV_CACHE_SPACE_GIB": "1",
        "SERVEKIT_ON_DEMAND__READY_TIMEOUT_S": str(START_TIMEOUT_S),
        "SERVEKIT_SERVER__REQUEST_TIMEOUT_S": str(START_TIMEOUT_S + 60),
    }
    process, base_url = start_bentoml("bentos.service:Servekit", env, log)
    try:
        wait_for(f"{base_url}/ready", process, GATEWAY_UP_TIMEOUT_S + START_TIMEOUT_S)
        yield base_url
    finally:
        stop(process)


@pytest.fixture(scope="module")
def gateway(server, artifacts_dir) -> Iterator[str]:
    with extra_gateway(server, artifacts_dir / "ondemand-gateway", artifacts_dir / "ondemand-gateway.log") as url:
        yield url


def test_a_route_to_an_unknown_version_is_a_404(gateway):
    response = put_route(gateway, {BASE: 90, "no-such-base:v1": 10})
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "model_not_found"


def test_a_base_that_cannot_start_refuses_the_route_and_leaves_nothing_running(gateway, tmp_path):
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "config.json").write_text(json.dumps({"model_type": "no-such-architecture"}))
    tag = import_directory("broken-base", "v1", broken, {"kind": "base"}, {"kind": "base"}).tag
    try:
        response = put_route(gateway, {BASE: 90, tag: 10})
        assert response.status_code == 503, response.text
        error = response.json()["error"]
        assert error["code"] == "engine_start_failed" and "no-such-architecture" in error["message"]
        assert tag not in cards(gateway)
        as_user = CliRunner().invoke(cli, ["routes", "set", ROUTE, f"{BASE}=90", f"{tag}=10", "--url", gateway])
        assert as_user.exit_code == 1 and "no-such-architecture" in as_user.output, "the engine log's reason"
        assert f"engine {tag}: starting for" in as_user.output, "no progress while the engine started"
        assert engine_process(tag) is None
        assert ROUTE not in {r["name"] for r in httpx.get(f"{gateway}/admin/routes").json()}
    finally:
        bentoml.models.delete(tag)


def test_a_base_model_canary_starts_and_retires_its_engine_with_no_failed_request(gateway, blue):
    assert put_route(gateway, {BASE: 100}).status_code == 200
    with StreamingClients(gateway, ROUTE, clients=1, pause_s=2.0) as clients:
        until(lambda: len(clients.answers) >= 3, 120, "traffic on the primary")
        (primary,) = set(clients.versions_since(0))

        with ThreadPoolExecutor(1) as pool:
            began = time.monotonic()
            change = pool.submit(put_route, gateway, {BASE: 90, blue: 10})
            until(lambda: blue in cards(gateway) or change.done(), 120, "the on-demand engine to be listed")
            if not change.done():
                assert not cards(gateway)[blue]["ready"], "listed ready before its warm-up finished"
                assert httpx.get(f"{gateway}/ready").status_code == 200, "a starting on-demand engine turned /ready red"
            assert change.result().status_code == 200, change.result().text
            start_s = time.monotonic() - began
        card = cards(gateway)[blue]
        assert (card["engine"], card["ready"], card["on_demand"], card["root"]) == ("vllm", True, True, blue)
        engine = engine_process(blue)
        assert engine is not None
        engine_tree = [engine, *engine.children(recursive=True)]
        port = int(engine.cmdline()[engine.cmdline().index("--port") + 1])
        assert listening(port)

        until(lambda: blue in clients.versions_since(began), 300, "the new base to answer at 10%")
        assert put_route(gateway, {blue: 100}).status_code == 200
        promoted = time.monotonic()
        until(lambda: len(clients.versions_since(promoted)) >= 6, 300, "answers after the switch")
        assert set(clients.versions_since(promoted)) == {blue}

        assert put_route(gateway, {BASE: 100}).status_code == 200
        back = time.monotonic()
        until(lambda: not any(alive(p) for p in engine_tree), 120, "the on-demand engine to stop")
        retire_s = time.monotonic() - back
        assert not listening(port)
        assert blue not in cards(gateway)
        until(lambda: len(clients.versions_since(back)) >= 6, 300, "answers after the rollback")
        assert set(clients.versions_since(back)) == {primary}
    print(f"\non-demand start (PUT until warm) {start_s:.1f}s, retire {retire_s:.1f}s, {len(clients.answers)} streams")
    assert clients.failures == []
    assert {primary, blue} <= {version for _, version in clients.answers}


def test_after_a_restart_a_stored_route_starts_its_on_demand_engine_again(server, artifacts_dir, blue):
    """The state file is what survives a restart: a route stored there with an on-demand member brings the
    engine back at start-up, and /ready waits for it (the route sends it traffic)."""
    home = artifacts_dir / "ondemand-restart"
    canary = Route(name=ROUTE, members=[RouteMember(version=BASE, weight=90), RouteMember(version=blue, weight=10)])
    asyncio.run(embedded_router(connect(home.resolve() / "state.db"), {}).set(canary))
    with extra_gateway(server, home, artifacts_dir / "ondemand-restart.log") as gateway:
        card = cards(gateway)[blue]
        assert (card["ready"], card["on_demand"]) == (True, True), "/ready turned green before the routed engine"
        body = {"model": ROUTE, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4}
        pinned = httpx.post(
            f"{gateway}/v1/chat/completions", json=body, headers={"x-servekit-version": blue}, timeout=120
        )
        assert pinned.status_code == 200 and pinned.headers["x-servekit-version"] == blue
        engine = engine_process(blue)
        assert engine is not None
        engine_tree = [engine, *engine.children(recursive=True)]
    until(lambda: not any(alive(p) for p in engine_tree), 60, "the on-demand engine to stop with its gateway")
