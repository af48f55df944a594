"""Canary rollouts on the real engine: base as primary, an adapter as canary, a short interval, real traffic."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import httpx
import psutil
import pytest

from serving.observe.config import write_config
from serving.observe.server import PrometheusServer
from tests.conftest import GATEWAY_UP_TIMEOUT_S, free_port, start_bentoml, stop, wait_for

BASE = "smollm2-135m-instruct"
# LoRA requests run ~2.5x slower than base ones on vLLM-CPU, so the latency ratios get room here; the error-rate
# check is what the faulty-canary test trips.
FAST = {
    "steps": [50, 100], "interval_s": 3, "min_requests": 3, "failure_threshold": 2, "max_error_rate": 0.05,
    "max_ttft_p95_ratio": 5, "max_latency_p95_ratio": 5,
}  # fmt: skip


def admin(base_url: str, method: str, path: str, **kwargs) -> httpx.Response:
    return httpx.request(method, f"{base_url}/admin{path}", timeout=120, **kwargs)


class Traffic:
    """Background chat requests to a route from many users, until stopped."""

    def __init__(self, base_url: str, route: str, threads: int = 3) -> None:
        self.base_url, self.route = base_url, route
        self.stop_event = threading.Event()
        self.statuses: list[int] = []
        self.threads = [threading.Thread(target=self._run, args=(i,), daemon=True) for i in range(threads)]

    def _run(self, index: int) -> None:
        with httpx.Client(base_url=self.base_url, timeout=120) as client:
            n = 0
            while not self.stop_event.is_set():
                n += 1
                body = {"model": self.route, "user": f"u{index}-{n}", "max_tokens": 4,
                        "messages": [{"role": "user", "content": "hi"}]}  # fmt: skip
                self.statuses.append(client.post("/v1/chat/completions", json=body).status_code)

    def __enter__(self) -> Traffic:
        for thread in self.threads:
            thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.stop_event.set()
        for thread in self.threads:
            thread.join()


def kill_whole_server(process) -> None:
    """SIGKILL the server and its workers (BentoML's workers outlive a killed arbiter otherwise)."""
    for child in psutil.Process(process.pid).children(recursive=True):
        child.kill()
    process.kill()
    process.wait()


def wait_for_phase(base_url: str, route: str, phases: set[str], timeout_s: float = 240) -> dict:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        state = admin(base_url, "GET", f"/rollouts/{route}").json()
        if state["phase"] in phases:
            return state
        time.sleep(0.5)
    raise TimeoutError(f"rollout on {route} never reached {phases}: {state}")


@pytest.fixture
def route(server) -> Iterator[str]:
    name = f"assistant-{time.monotonic_ns()}"
    created = admin(server.base_url, "PUT", f"/routes/{name}", json={"members": [{"version": BASE, "weight": 100}]})
    assert created.status_code == 200, created.text
    yield name
    admin(server.base_url, "DELETE", f"/routes/{name}")


def test_healthy_canary_is_promoted(server, route, random_adapters):
    canary = random_adapters["a"].tag
    with Traffic(server.base_url, route):
        started = admin(server.base_url, "POST", f"/rollouts/{route}", json={"canary": canary, "config": FAST})
        assert started.status_code == 200, started.text
        assert started.json()["phase"] == "progressing"
        second = admin(server.base_url, "POST", f"/rollouts/{route}", json={"canary": canary, "config": FAST})
        assert second.status_code == 409
        final = wait_for_phase(server.base_url, route, {"promoted", "rolled_back"})
    assert final["phase"] == "promoted"
    members = admin(server.base_url, "GET", "/routes").json()
    assert next(r for r in members if r["name"] == route)["members"] == [{"version": canary, "weight": 100.0}]
    events = [entry["event"] for entry in admin(server.base_url, "GET", f"/rollouts/{route}/history").json()]
    assert events[0] == "started" and events[-1] == "promote" and "set_weight" in events
    body = {"model": route, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2}
    served = httpx.post(f"{server.base_url}/v1/chat/completions", json=body)
    assert served.headers["x-servekit-version"] == canary
    assert admin(server.base_url, "POST", f"/rollouts/{route}/promote").status_code == 409


def test_faulty_canary_is_rolled_back_automatically(server, route, random_adapters):
    canary = random_adapters["b"].tag
    assert admin(server.base_url, "POST", f"/models/{canary}/load").status_code == 200
    assert admin(server.base_url, "PUT", f"/faults/{canary}", json={"error_rate": 0.6}).status_code == 200
    try:
        with Traffic(server.base_url, route) as traffic:
            admin(server.base_url, "POST", f"/rollouts/{route}", json={"canary": canary, "config": FAST})
            final = wait_for_phase(server.base_url, route, {"promoted", "rolled_back"})
    finally:
        admin(server.base_url, "DELETE", f"/faults/{canary}")
    assert final["phase"] == "rolled_back" and final["failed_checks"] == 2
    history = admin(server.base_url, "GET", f"/rollouts/{route}/history").json()
    rollback = history[-1]
    assert rollback["event"] == "rollback" and "error rate" in rollback["reason"]
    assert rollback["observation"]["canary"]["server_errors"] > 0
    route_now = next(r for r in admin(server.base_url, "GET", "/routes").json() if r["name"] == route)
    assert route_now["members"] == [{"version": BASE, "weight": 100.0}]
    assert 500 <= max(traffic.statuses) < 600, "the injected faults were real 5xx answers"


def test_route_and_rollout_errors_keep_the_openai_shape(server, route):
    bad_weights = admin(server.base_url, "PUT", f"/routes/{route}", json={"members": [{"version": BASE, "weight": 60}]})
    assert bad_weights.status_code == 400 and bad_weights.json()["error"]["type"] == "invalid_request_error"
    unknown = admin(server.base_url, "PUT", "/routes/x", json={"members": [{"version": "ghost:1", "weight": 100}]})
    assert unknown.status_code == 404
    assert admin(server.base_url, "POST", "/rollouts/no-such-route", json={"canary": BASE}).status_code == 404
    assert admin(server.base_url, "POST", f"/rollouts/{route}/abort").status_code == 409


def test_a_rollout_resumes_after_the_gateway_is_killed(server, random_adapters, artifacts_dir):
    home = artifacts_dir / "resume-home"
    env = {"SERVEKIT_ENGINE__URL": server.engine_url, "SERVEKIT_HOME": str(home)}
    slow = {**FAST, "steps": [10, 100], "interval_s": 1, "min_requests": 10_000}
    process, base_url = start_bentoml("bentos.service:Servekit", env, artifacts_dir / "resume-1.log")
    try:
        wait_for(f"{base_url}/ready", process, GATEWAY_UP_TIMEOUT_S)
        admin(base_url, "PUT", "/routes/assistant", json={"members": [{"version": BASE, "weight": 100}]})
        canary = random_adapters["b"].tag
        assert (
            admin(base_url, "POST", "/rollouts/assistant", json={"canary": canary, "config": slow}).status_code == 200
        )
    finally:
        kill_whole_server(process)
    process, base_url = start_bentoml("bentos.service:Servekit", env, artifacts_dir / "resume-2.log")
    try:
        wait_for(f"{base_url}/ready", process, GATEWAY_UP_TIMEOUT_S)
        state = admin(base_url, "GET", "/rollouts/assistant").json()
        assert state["phase"] == "progressing" and state["canary"] == random_adapters["b"].tag
        deadline = time.monotonic() + 30
        while "resumed" not in [e["event"] for e in admin(base_url, "GET", "/rollouts/assistant/history").json()]:
            assert time.monotonic() < deadline
            time.sleep(0.2)
        ticks_before = state["ticks"]
        wait_deadline = time.monotonic() + 30
        while admin(base_url, "GET", "/rollouts/assistant").json()["ticks"] <= ticks_before:
            assert time.monotonic() < wait_deadline, "the resumed rollout never ticked"
            time.sleep(0.2)
        assert admin(base_url, "POST", "/rollouts/assistant/abort").json()["phase"] == "rolled_back"
    finally:
        stop(process)


def test_faulty_canary_is_rolled_back_with_a_real_prometheus_in_the_loop(server, random_adapters, artifacts_dir):
    """The gateway's rollouts observe through PromQL against a real Prometheus scraping that gateway."""
    gateway_port = free_port()
    data_dir = artifacts_dir / "prometheus-loop"
    data_dir.mkdir()
    config = write_config(data_dir, f"http://127.0.0.1:{gateway_port}", "1s")
    with PrometheusServer("prometheus", config, data_dir, free_port(), "1d") as prometheus:
        env = {
            "SERVEKIT_ENGINE__URL": server.engine_url,
            "SERVEKIT_HOME": str(artifacts_dir / "prometheus-loop-home"),
            "SERVEKIT_OBSERVE__URL": prometheus.url,
            "SERVEKIT_FAULTS__ENABLED": "true",
        }
        process, base_url = start_bentoml(
            "bentos.service:Servekit", env, artifacts_dir / "prometheus-loop.log", port=gateway_port
        )
        try:
            wait_for(f"{base_url}/ready", process, GATEWAY_UP_TIMEOUT_S)
            canary = random_adapters["b"].tag
            admin(base_url, "PUT", "/routes/assistant", json={"members": [{"version": BASE, "weight": 100}]})
            assert admin(base_url, "POST", f"/models/{canary}/load").status_code == 200
            assert admin(base_url, "PUT", f"/faults/{canary}", json={"error_rate": 0.6}).status_code == 200
            with Traffic(base_url, "assistant"):
                config_ = {**FAST, "interval_s": 4}
                started = admin(base_url, "POST", "/rollouts/assistant", json={"canary": canary, "config": config_})
                assert started.status_code == 200, started.text
                final = wait_for_phase(base_url, "assistant", {"promoted", "rolled_back"})
            assert final["phase"] == "rolled_back"
            rollback = admin(base_url, "GET", "/rollouts/assistant/history").json()[-1]
            assert rollback["event"] == "rollback" and rollback["observation"]["canary"]["server_errors"] > 0
        finally:
            stop(process)


def test_load_test_gate_blocks_a_start_and_fails_a_step(server, route, random_adapters):
    canary = random_adapters["a"].tag
    impossible = {"url": server.base_url, "slo": "ttft_p95<0.001s", "duration_s": 5, "users": 2}
    refused = admin(
        server.base_url, "POST", f"/rollouts/{route}",
        json={"canary": canary, "config": FAST, "load_test_gate": impossible},
    )  # fmt: skip
    assert refused.status_code == 409 and "ttft_p95" in refused.json()["error"]["message"]
    audit = admin(server.base_url, "GET", f"/rollouts/{route}/history")
    assert audit.status_code == 404, "a refused rollout leaves no state behind"

    step_only = {**impossible, "stages": ["step"]}
    config = {**FAST, "failure_threshold": 1, "min_requests": 1}
    with Traffic(server.base_url, route):
        started = admin(
            server.base_url, "POST", f"/rollouts/{route}",
            json={"canary": canary, "config": config, "load_test_gate": step_only},
        )  # fmt: skip
        assert started.status_code == 200, started.text
        final = wait_for_phase(server.base_url, route, {"promoted", "rolled_back"})
    assert final["phase"] == "rolled_back"
    rollback = admin(server.base_url, "GET", f"/rollouts/{route}/history").json()[-1]
    assert "load test" in rollback["reason"] and "report.html" in rollback["reason"]
