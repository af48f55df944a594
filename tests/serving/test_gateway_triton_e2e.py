"""A version on a real Triton server behind the same gateway as a vLLM version: same OpenAI surface, both
answering as members of one A/B route, and a rollout onto the (really slower) Triton engine rolled back by the
latency ratio at its default limit."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator

import httpx
import openai
import psutil
import pytest

from serving.backends.ports import free_port_block
from tests.conftest import GATEWAY_UP_TIMEOUT_S, base_copy, start_bentoml, stop, wait_for
from tests.serving.rollout.traffic import Traffic, admin, wait_for_phase

BASE = "smollm2-135m-instruct"
TRITON = "smollm2-triton"
"""Served on Triton from the default model's weights registered under this name: a registry version of its own,
so its series (`version` label) are told apart from the vLLM version's."""
QUESTION = [{"role": "user", "content": "What is the capital of France?"}]


def metric(text: str, name: str) -> float:
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith(name))


TRITON_PORT = free_port_block(3)
# The module's gateway starts a tritonserver (up to GATEWAY_UP_TIMEOUT_S + 300 s) and one test waits for a restart.
pytestmark = pytest.mark.timeout(900)


@pytest.fixture(scope="module")
def triton_weights(settings) -> Iterator[str]:
    with base_copy(settings, TRITON) as tag:
        yield tag


@pytest.fixture(scope="module")
def gateway(server, triton_weights, artifacts_dir) -> Iterator[str]:
    versions = [{"name": TRITON, "model": triton_weights, "engine": "triton", "port": TRITON_PORT}]
    env = {
        "SERVEKIT_ENGINE__URL": server.engine_url,
        "SERVEKIT_HOME": str(artifacts_dir / "triton-gateway"),
        "SERVEKIT_VERSIONS": json.dumps(versions),
    }
    process, base_url = start_bentoml("bentos.service:Servekit", env, artifacts_dir / "triton-gateway.log")
    try:
        wait_for(f"{base_url}/ready", process, GATEWAY_UP_TIMEOUT_S + 300)
        yield base_url
    finally:
        stop(process)


def test_triton_version_has_the_same_openai_surface(gateway):
    client = openai.OpenAI(base_url=f"{gateway}/v1", api_key="unused", max_retries=0)
    cards = {m.id: m.model_extra["engine"] for m in client.models.list().data}
    assert cards[TRITON] == "triton" and cards[BASE] == "vllm"
    whole = client.chat.completions.create(model=TRITON, messages=QUESTION, max_tokens=16, temperature=0)
    assert whole.choices[0].message.content and whole.usage.completion_tokens > 0
    chunks = list(
        client.chat.completions.create(model=TRITON, messages=QUESTION, max_tokens=16, temperature=0, stream=True)
    )
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == whole.choices[0].message.content
    with pytest.raises(openai.BadRequestError):
        client.chat.completions.create(
            model=TRITON, messages=[{"role": "user", "content": "word " * 3000}], max_tokens=8
        )
    assert "nv_inference_count" in httpx.get(f"{gateway}/metrics").text


def test_an_ab_route_with_a_vllm_and_a_triton_version_uses_both(gateway):
    members = [{"version": BASE, "weight": 50}, {"version": TRITON, "weight": 50}]
    assert httpx.put(f"{gateway}/admin/routes/ab", json={"members": members}).status_code == 200
    before = httpx.get(f"{gateway}/metrics").text
    for user in range(12):
        body = {"model": "ab", "messages": QUESTION, "max_tokens": 4, "user": f"user-{user}"}
        assert httpx.post(f"{gateway}/v1/chat/completions", json=body, timeout=120).status_code == 200
    after = httpx.get(f"{gateway}/metrics").text
    assert metric(after, "nv_inference_request_success") > metric(before, "nv_inference_request_success")
    assert metric(after, "vllm:request_success_total") > metric(before, "vllm:request_success_total")
    httpx.delete(f"{gateway}/admin/routes/ab")


def test_a_killed_tritonserver_turns_ready_red_while_vllm_keeps_serving(gateway):
    triton = next(
        p for p in psutil.process_iter(["name", "cmdline"])
        if p.info["name"] == "tritonserver" and f"--http-port={TRITON_PORT}" in " ".join(p.info["cmdline"] or ())
    )  # fmt: skip
    triton.kill()
    while httpx.get(f"{gateway}/ready").status_code == 200:  # however long noticing takes here
        time.sleep(0.1)
    triton_body = {"model": TRITON, "messages": QUESTION, "max_tokens": 4}
    assert httpx.post(f"{gateway}/v1/chat/completions", json=triton_body, timeout=60).status_code == 503
    body = {"messages": QUESTION, "max_tokens": 4}
    assert httpx.post(f"{gateway}/v1/chat/completions", json={**body, "model": BASE}, timeout=60).status_code == 200
    deadline = time.monotonic() + 300
    while httpx.get(f"{gateway}/ready").status_code != 200:
        assert time.monotonic() < deadline, "tritonserver was not restarted"
        time.sleep(0.5)
    assert httpx.post(f"{gateway}/v1/chat/completions", json={**body, "model": TRITON}, timeout=60).status_code == 200


def test_a_really_slower_canary_is_rolled_back_by_the_latency_ratio_at_its_default_limit(gateway):
    """Triton's Python backend answers the same requests several times slower than vLLM here: a real slow canary,
    no injected fault, judged with the default limits (ratios 1.25, two failed checks)."""
    assert admin(gateway, "PUT", "/routes/migrate", json={"members": [{"version": BASE, "weight": 100}]}).is_success
    config = {"steps": [50, 100], "interval_s": 5, "min_requests": 3}
    try:
        with Traffic(gateway, "migrate") as traffic:
            started = admin(gateway, "POST", "/rollouts/migrate", json={"canary": TRITON, "config": config})
            assert started.status_code == 200, started.text
            final = wait_for_phase(gateway, "migrate", {"promoted", "rolled_back"})
        assert final["phase"] == "rolled_back", final
        history = admin(gateway, "GET", "/rollouts/migrate/history").json()
        failed = [e for e in history if e["event"] in ("halt", "rollback") and "ratio" in e["reason"]]
        assert [e["event"] for e in failed][-2:] == ["halt", "rollback"], history
        for entry in failed:
            observed = entry["observation"]
            assert "latency p95 ratio" in entry["reason"] and "error rate" not in entry["reason"]
            assert observed["primary"]["requests"] > 0 and observed["canary"]["server_errors"] == 0
            assert observed["canary"]["latency_p95_s"] > 1.25 * observed["primary"]["latency_p95_s"]
        assert set(traffic.statuses) == {200}, "the slow canary failed no request; only its speed rolled it back"
        route = next(r for r in admin(gateway, "GET", "/routes").json() if r["name"] == "migrate")
        assert route["members"] == [{"version": BASE, "weight": 100.0}]
    finally:
        admin(gateway, "DELETE", "/routes/migrate")
