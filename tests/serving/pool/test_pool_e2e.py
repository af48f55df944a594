"""A version on a two-replica pool of real vLLM engines (one core each), through a real gateway with the official
`openai` client: both replicas serve, a conversation's turns stay on one replica (prefix affinity), an adapter
with `pool.adapter_replicas: 1` is loaded on one replica only and served there, a second gateway serves the
version from replicas it finds under a name (DNS discovery from a hosts file, one of the pool's engines behind
it), and killing one replica's engine loses no request while /ready stays green, until its supervisor brings it
back."""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Iterator

import httpx
import openai
import psutil
import pytest
from prometheus_client.parser import text_string_to_metric_families

from serving.bench.session import free_port
from tests.conftest import GATEWAY_UP_TIMEOUT_S, start_bentoml, stop, throwaway_adapter, wait_for

BASE = "smollm2-135m-instruct"
START_TIMEOUT_S = 900  # two engines starting at once on a shared 2-core box
pytestmark = pytest.mark.timeout(GATEWAY_UP_TIMEOUT_S + 2 * START_TIMEOUT_S)


@pytest.fixture(scope="module")
def gateway(artifacts_dir) -> Iterator[subprocess.Popen[bytes]]:
    engine_port = free_port()
    env = {
        "SERVEKIT_HOME": str(artifacts_dir / "pooled"),
        "SERVEKIT_ENGINE__PORT": str(engine_port),
        "SERVEKIT_ENGINE__REPLICAS": "2",
        "SERVEKIT_ENGINE__KV_CACHE_SPACE_GIB": "1",
        "SERVEKIT_POOL__PROBE_INTERVAL_S": "0.5",
        "SERVEKIT_POOL__ADAPTER_REPLICAS": "1",
    }
    process, base_url = start_bentoml("bentos.service:Servekit", env, artifacts_dir / "pooled.log")
    process.base_url = base_url
    process.engine_url = f"http://127.0.0.1:{engine_port}"  # the first replica's engine
    try:
        wait_for(f"{base_url}/health", process, GATEWAY_UP_TIMEOUT_S)
        wait_for(f"{base_url}/ready", process, START_TIMEOUT_S)
        yield process
    finally:
        stop(process)


@pytest.fixture
def pooled(gateway) -> str:
    return gateway.base_url


def engine_requests(base_url: str) -> dict[str, float]:
    """Finished requests per replica, by each engine's own counter (its series carry a `replica` label)."""
    counts: dict[str, float] = {}
    for family in text_string_to_metric_families(httpx.get(f"{base_url}/metrics").text):
        if family.name == "vllm:request_success":
            for sample in family.samples:
                if sample.name.endswith("_total"):
                    replica = sample.labels["replica"]
                    counts[replica] = counts.get(replica, 0.0) + sample.value
    return counts


def engine_states(base_url: str) -> dict[str, str]:
    return {engine["name"]: engine["state"] for engine in httpx.get(f"{base_url}/admin/engines").json()}


@pytest.fixture(scope="module")
def adapter(settings, tmp_path_factory) -> Iterator[str]:
    with throwaway_adapter(settings, tmp_path_factory.mktemp("pool"), "test-pool-adapter", 13) as tag:
        yield tag


def test_both_replicas_serve_and_a_conversation_stays_on_one(pooled):
    assert set(engine_states(pooled)) == {f"{BASE}/0", f"{BASE}/1"}
    client = openai.OpenAI(base_url=f"{pooled}/v1", api_key="unused", max_retries=0)
    before = engine_requests(pooled)
    for n in range(8):  # distinct prompts: the least loaded replica takes each new prefix
        client.chat.completions.create(model=BASE, max_tokens=2, messages=[
            {"role": "user", "content": f"Request {n}: " + "tell me about ships and the sea. " * 12}])  # fmt: skip
    spread = {replica: count - before.get(replica, 0.0) for replica, count in engine_requests(pooled).items()}
    assert all(spread.get(f"{BASE}/{i}", 0) > 0 for i in (0, 1)), f"both replicas serve: {spread}"

    before = engine_requests(pooled)
    history = [{"role": "system", "content": "You are a helpful pirate who answers briefly. " * 12}]
    for turn in range(4):
        history.append({"role": "user", "content": f"Turn {turn}: what do pirates eat?"})
        reply = client.chat.completions.create(model=BASE, max_tokens=8, messages=history, temperature=0)
        history.append({"role": "assistant", "content": reply.choices[0].message.content})
    turns = {replica: count - before.get(replica, 0.0) for replica, count in engine_requests(pooled).items()}
    assert sorted(turns.values()) == [0, 4], f"every turn on the replica that holds the conversation: {turns}"


def test_an_adapter_loads_on_its_one_replica_only_and_is_served_there(pooled, adapter):
    card = httpx.post(f"{pooled}/admin/models/{adapter}/load", timeout=300)
    assert card.status_code == 200, card.text
    try:
        (carrier,) = card.json()["replicas"]
        engines = httpx.get(f"{pooled}/admin/engines").json()
        assert [engine["name"] for engine in engines if adapter in engine["adapters"]] == [carrier]
        on_engine = {  # each engine's own list of what it serves
            engine["name"]: {model["id"] for model in httpx.get(f"{engine['url']}/v1/models").json()["data"]}
            for engine in engines
        }
        assert {name for name, ids in on_engine.items() if adapter in ids} == {carrier}, on_engine

        client = openai.OpenAI(base_url=f"{pooled}/v1", api_key="unused", max_retries=0)
        listed = {model.id: model for model in client.models.list().data}
        assert listed[adapter].model_extra["replicas"] == [carrier]
        before = engine_requests(pooled)
        for n in range(4):
            reply = client.chat.completions.create(
                model=adapter, max_tokens=4, messages=[{"role": "user", "content": f"Ahoy {n}, what ship is this?"}]
            )
            assert reply.model == adapter and reply.choices[0].message.content is not None
        served = {replica: count - before.get(replica, 0.0) for replica, count in engine_requests(pooled).items()}
        assert {replica for replica, count in served.items() if count} == {carrier}, served
    finally:
        httpx.post(f"{pooled}/admin/models/{adapter}/unload")


def test_a_second_gateway_finds_a_replica_under_a_name_and_lets_it_go(gateway, artifacts_dir, tmp_path):
    engine_port = int(gateway.engine_url.rsplit(":", 1)[1])
    hosts = tmp_path / "hosts"
    hosts.write_text("# nothing registered yet\n")
    discovery = {"host": "replicas.test", "port": engine_port, "interval_s": 0.5, "hosts_file": str(hosts)}
    env = {"SERVEKIT_HOME": str(artifacts_dir / "discovering"), "SERVEKIT_ENGINE__DISCOVERY": json.dumps(discovery)}
    log = artifacts_dir / "discovering.log"
    process, base_url = start_bentoml("bentos.service:Servekit", env, log)
    try:
        wait_for(f"{base_url}/health", process, GATEWAY_UP_TIMEOUT_S)
        wait_for(f"{base_url}/ready", process, GATEWAY_UP_TIMEOUT_S, status=503)
        assert engine_states(base_url) == {}, "an unresolvable name: no replica, startup goes on"

        hosts.write_text("127.0.0.1 replicas.test\n")
        wait_for(f"{base_url}/ready", process, GATEWAY_UP_TIMEOUT_S)
        found = f"{BASE}/127.0.0.1:{engine_port}"
        assert engine_states(base_url) == {found: "ready"}
        client = openai.OpenAI(base_url=f"{base_url}/v1", api_key="unused", max_retries=0)
        reply = client.chat.completions.create(model=BASE, max_tokens=4, messages=[{"role": "user", "content": "Hi"}])
        assert reply.choices[0].message.content is not None

        hosts.write_text("127.0.0.2 replicas.test\n")  # moved to an address where no engine listens
        wait_for(f"{base_url}/ready", process, GATEWAY_UP_TIMEOUT_S, status=503)
        assert set(engine_states(base_url)) == {f"{BASE}/127.0.0.2:{engine_port}"}
    finally:
        stop(process)
    warnings = [line for line in log.read_text().splitlines() if "replicas.test does not resolve" in line]
    assert len(warnings) == 1 and "engine.discovery.host" in warnings[0], "warned once, naming the key"


def test_a_killed_replica_loses_no_request_and_comes_back(gateway, pooled):
    client = openai.OpenAI(base_url=f"{pooled}/v1", api_key="unused", max_retries=0)
    engines = [
        child for child in psutil.Process(gateway.pid).children(recursive=True)
        if "vllm.entrypoints.openai.api_server" in " ".join(child.cmdline())
    ]  # fmt: skip
    assert len(engines) == 2, "the gateway runs one engine per replica"
    engines[0].kill()
    for n in range(12):
        reply = client.chat.completions.create(
            model=BASE, max_tokens=4, messages=[{"role": "user", "content": f"Still there? {n}"}]
        )
        assert reply.choices[0].message.content is not None
        assert httpx.get(f"{pooled}/ready").status_code == 200, "one ready replica keeps the version ready"
    deadline = time.monotonic() + START_TIMEOUT_S
    while set(engine_states(pooled).values()) != {"ready"}:
        assert time.monotonic() < deadline, f"the killed replica never came back: {engine_states(pooled)}"
        time.sleep(1)
