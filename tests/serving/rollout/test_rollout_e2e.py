"""Canary rollouts on the real engine: base as primary, an adapter as canary, a short interval, real traffic; the
README's own commands through the CLI."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import psutil
import pytest
from typer.testing import CliRunner

from serving.cli import app as cli
from serving.observe.config import write_config
from serving.observe.server import PrometheusServer
from tests.conftest import GATEWAY_UP_TIMEOUT_S, free_port, start_bentoml, stop, wait_for
from tests.serving.rollout.traffic import Traffic, admin, wait_for_phase

BASE = "smollm2-135m-instruct"
# The latency ratios of an adapter and its base swing with the batch mix over windows this short (p95 of a few
# requests), so they get room here: these tests are about identity, gates, faults and resuming; the ratios at
# their default limits are what test_gateway_triton_e2e.py's really slower canary trips.
FAST = {
    "steps": [50, 100], "interval_s": 3, "min_requests": 3, "failure_threshold": 2, "max_error_rate": 0.05,
    "max_ttft_p95_ratio": 5, "max_latency_p95_ratio": 5,
}  # fmt: skip


def kill_whole_server(process) -> None:
    """SIGKILL the server and its workers (BentoML's workers outlive a killed arbiter otherwise)."""
    for child in psutil.Process(process.pid).children(recursive=True):
        child.kill()
    process.kill()
    process.wait()


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
    history = admin(server.base_url, "GET", f"/rollouts/{route}/history").json()
    events = [entry["event"] for entry in history]
    assert events[0] == "started" and events[-1] == "promote" and "set_weight" in events
    assert_compared_with_the_primary(history)
    body = {"model": route, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2}
    served = httpx.post(f"{server.base_url}/v1/chat/completions", json=body)
    assert served.headers["x-servekit-version"] == canary
    assert admin(server.base_url, "POST", f"/rollouts/{route}/promote").status_code == 409


def assert_compared_with_the_primary(history: list[dict]) -> None:
    """Every judged tick saw the primary's real traffic, or said that it compared with its last window that had
    some (weight 100); none passed on data that was not there."""
    judged = [e for e in history if e.get("observation") and e["event"] in ("set_weight", "promote")]
    assert judged, history
    for entry in judged:
        assert entry["observation"]["primary"]["requests"] > 0 or "last window with traffic" in entry["reason"], entry
    assert any(e["observation"]["primary"]["requests"] > 0 for e in judged), "the primary was never observed"


def test_the_readme_rollout_through_the_cli_observes_the_primary_and_runs_its_gate(server, random_adapters):
    """As the README shows it: the base by its public name, the adapter by its tag, a load-test gate."""
    url = ["--url", server.base_url]
    runner = CliRunner()
    canary = random_adapters["a"].tag
    route = f"cli-{time.monotonic_ns()}"
    assert runner.invoke(cli, ["models", "load", canary, *url]).exit_code == 0
    routed = runner.invoke(cli, ["routes", "set", route, f"{BASE}=90", f"{canary}=10", *url])
    assert routed.exit_code == 0 and f"{BASE}=90, {canary}=10" in routed.output, routed.output
    options = ["--steps", "50,100", "--interval", "3s", "--min-requests", "3", "--max-ttft-p95-ratio", "5",
               "--max-latency-p95-ratio", "5", "--gate-slo", "error_rate<0.01", "--gate-duration", "2",
               "--gate-users", "1"]  # fmt: skip
    try:
        with Traffic(server.base_url, route):
            started = runner.invoke(cli, ["rollout", "start", route, "--canary", canary, *options, *url])
            assert started.exit_code == 0, started.output
            assert f"primary {BASE}" in started.output and "gate load_test_gate" in started.output
            status = admin(server.base_url, "GET", f"/rollouts/{route}").json()
            assert (status["primary"], status["canary"]) == (BASE, canary)
            assert status["gates"]["load_test_gate"]["slo"] == "error_rate<0.01", "the gate reached the server"
            final = wait_for_phase(server.base_url, route, {"promoted", "rolled_back"})
        assert final["phase"] == "promoted", final
        history = admin(server.base_url, "GET", f"/rollouts/{route}/history").json()
        assert_compared_with_the_primary(history)
        pre = next(e for e in history if e["event"] == "pre-rollout gate")
        assert pre["passed"] and Path(pre["report"]).is_file()
        steps = [e for e in history if e["event"] in ("set_weight", "promote") and e.get("observation")]
        for entry in steps:
            (gate,) = entry["gates"]
            assert gate["gate"] == "load test" and gate["passed"] and Path(gate["report"]).is_file(), entry
    finally:
        admin(server.base_url, "DELETE", f"/routes/{route}")


def test_a_primary_without_traffic_halts_the_step(server, route, random_adapters):
    canary = random_adapters["b"].tag
    with Traffic(server.base_url, route, pin=canary):
        started = admin(server.base_url, "POST", f"/rollouts/{route}", json={"canary": canary, "config": FAST})
        assert started.status_code == 200, started.text
        until(lambda: halts(server.base_url, route) >= 2, 120, "two ticks to judge the canary-only traffic")
    state = admin(server.base_url, "GET", f"/rollouts/{route}").json()
    assert (state["phase"], state["step"], state["failed_checks"]) == ("progressing", 0, 0)
    assert admin(server.base_url, "POST", f"/rollouts/{route}/abort").json()["phase"] == "rolled_back"


def halts(base_url: str, route: str) -> int:
    """Ticks that halted because the primary had no data while the canary had enough."""
    history = admin(base_url, "GET", f"/rollouts/{route}/history").json()
    return sum(e["event"] == "halt" and "no primary data" in e["reason"] for e in history)


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


def test_a_rollout_resumes_after_the_gateway_is_killed_and_reaches_promotion(server, random_adapters, artifacts_dir):
    home = artifacts_dir / "resume-home"
    env = {"SERVEKIT_ENGINE__URL": server.engine_url, "SERVEKIT_HOME": str(home)}
    canary = random_adapters["b"].tag
    process, base_url = start_bentoml("bentos.service:Servekit", env, artifacts_dir / "resume-1.log")
    try:
        wait_for(f"{base_url}/ready", process, GATEWAY_UP_TIMEOUT_S)
        admin(base_url, "PUT", "/routes/assistant", json={"members": [{"version": BASE, "weight": 100}]})
        started = admin(base_url, "POST", "/rollouts/assistant", json={"canary": canary, "config": FAST})
        assert started.status_code == 200, started.text
        until(lambda: last_event(base_url) == "halt", 60, "a tick with no traffic to halt the first step")
    finally:
        kill_whole_server(process)
    process, base_url = start_bentoml("bentos.service:Servekit", env, artifacts_dir / "resume-2.log")
    try:
        wait_for(f"{base_url}/ready", process, GATEWAY_UP_TIMEOUT_S)
        state = admin(base_url, "GET", "/rollouts/assistant").json()
        assert (state["phase"], state["step"], state["canary"]) == ("progressing", 0, canary)
        with Traffic(base_url, "assistant"):
            final = wait_for_phase(base_url, "assistant", {"promoted", "rolled_back"})
        assert final["phase"] == "promoted", final
        history = admin(base_url, "GET", "/rollouts/assistant/history").json()
        events = [entry["event"] for entry in history]
        assert "set_weight" in events[events.index("resumed") :] and events[-1] == "promote", events
        assert_compared_with_the_primary(history)
        route = next(r for r in admin(base_url, "GET", "/routes").json() if r["name"] == "assistant")
        assert route["members"] == [{"version": canary, "weight": 100.0}]
    finally:
        stop(process)


def last_event(base_url: str) -> str:
    return admin(base_url, "GET", "/rollouts/assistant/history").json()[-1]["event"]


def until(condition, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.2)


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
