"""A version on a real Triton server behind the same gateway as a vLLM version: same OpenAI surface, and both
answering as members of one A/B route."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator

import httpx
import openai
import psutil
import pytest

from serving.backends.ports import free_port_block
from tests.conftest import GATEWAY_UP_TIMEOUT_S, start_bentoml, stop, wait_for

BASE = "smollm2-135m-instruct"
TRITON = "smollm2-triton"
QUESTION = [{"role": "user", "content": "What is the capital of France?"}]


def metric(text: str, name: str) -> float:
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith(name))


TRITON_PORT = free_port_block(3)
# The module's gateway starts a tritonserver (up to GATEWAY_UP_TIMEOUT_S + 300 s) and one test waits for a restart.
pytestmark = pytest.mark.timeout(900)


@pytest.fixture(scope="module")
def gateway(server, artifacts_dir) -> Iterator[str]:
    versions = [{"name": TRITON, "model": BASE, "engine": "triton", "port": TRITON_PORT}]
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
