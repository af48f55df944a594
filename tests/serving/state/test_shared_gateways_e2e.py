"""Three real gateway processes sharing one real redis-server, in front of the session's vLLM engine
(`engine.url`): one key's limit across all three, a route change and a key revocation seen everywhere within 1 s,
Redis down (`open` serves unlimited and counts, `closed` refuses with 503, no 500) and back, and a rollout that
survives kill -9 of the lease holder with a complete audit. The gateways start once for the module; the
destructive checks (the outage, the kill) come last, in file order."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass

import httpx
import psutil
import pytest
import redis

from serving.api.auth import key_digest
from serving.settings import StateSettings
from serving.state.redis_keys import StoredKey
from serving.state.server import LocalRedis
from serving.state.shared import SharedState
from tests.conftest import GATEWAY_UP_TIMEOUT_S, free_port, start_bentoml, stop, wait_for
from tests.serving.rollout.test_rollout_e2e import kill_whole_server
from tests.serving.rollout.traffic import Traffic

BASE = "smollm2-135m-instruct"
R = 50
"""Requests per minute of the limited key: R ± 2 % is R ± 1."""
LIMITED, ADMIN, REVOKED, PROBE = "sk-e2e-limited", "sk-e2e-admin", "sk-e2e-revoked", "sk-e2e-probe"
METERED, TPM = "sk-e2e-metered", 600
"""A key limited by tokens only: TPM per minute refills 10 a second, little beside one request's usage."""
CLOSED = 2
"""The replica with `state.on_unavailable: closed`; the others are `open`."""
ROLLOUT = {
    "steps": [25, 50, 100], "interval_s": 3, "min_requests": 2, "failure_threshold": 3, "max_error_rate": 0.05,
    "max_ttft_p95_ratio": 5, "max_latency_p95_ratio": 5,
}  # fmt: skip


@dataclass
class Replicas:
    urls: list[str]
    processes: list
    redis: LocalRedis
    state: StateSettings


def bearer(key: str) -> dict[str, str]:
    return {"authorization": f"Bearer {key}"}


def create_keys(state: StateSettings) -> None:
    async def create() -> None:
        shared = SharedState.open(state)
        try:
            store = shared.key_store()
            await store.create(StoredKey("limited", key_digest(LIMITED), requests_per_minute=R))
            await store.create(StoredKey("ops", key_digest(ADMIN), role="admin"))
            await store.create(StoredKey("leaver", key_digest(REVOKED)))
            await store.create(StoredKey("probe", key_digest(PROBE), requests_per_minute=100_000))
            await store.create(StoredKey("metered", key_digest(METERED), tokens_per_minute=TPM))
        finally:
            await shared.close()

    asyncio.run(create())


@pytest.fixture(scope="module")
def replicas(server, artifacts_dir) -> Iterator[Replicas]:
    store = LocalRedis(free_port(), artifacts_dir)
    store.start()
    state = StateSettings(url=store.url, lease_ttl_s=3, retry_s=0.2)
    create_keys(state)
    processes, urls = [], []
    try:
        for n in range(3):
            env = {
                "SERVEKIT_ENGINE__URL": server.engine_url,
                "SERVEKIT_HOME": str(artifacts_dir / f"shared-{n}"),
                "SERVEKIT_STATE__URL": store.url,
                "SERVEKIT_STATE__LEASE_TTL_S": "3",
                "SERVEKIT_STATE__RETRY_S": "0.2",
                "SERVEKIT_STATE__ON_UNAVAILABLE": "closed" if n == CLOSED else "open",
            }
            process, url = start_bentoml("bentos.service:Servekit", env, artifacts_dir / f"shared-{n}.log")
            processes.append(process)
            urls.append(url)
        for process, url in zip(processes, urls, strict=True):
            wait_for(f"{url}/ready", process, GATEWAY_UP_TIMEOUT_S)
        yield Replicas(urls, processes, store, state)
    finally:
        for process in processes:
            stop(process)
        store.stop()


def burst(urls: list[str], key: str, total: int) -> Counter[int]:
    """`total` one-token chats at once, spread round-robin over `urls`: their statuses, counted."""

    async def send() -> list[int]:
        async with httpx.AsyncClient(timeout=120, headers=bearer(key)) as client:
            body = {"model": BASE, "max_tokens": 1, "messages": [{"role": "user", "content": "hi"}]}
            answers = await asyncio.gather(
                *(client.post(f"{urls[n % len(urls)]}/v1/chat/completions", json=body) for n in range(total))
            )
        return [answer.status_code for answer in answers]

    return Counter(asyncio.run(send()))


def admin(url: str, method: str, path: str, **kwargs) -> httpx.Response:
    return httpx.request(method, f"{url}/admin{path}", headers=bearer(ADMIN), timeout=120, **kwargs)


def visible_within(check, timeout_s: float = 1.0) -> float:
    """Poll `check` until it holds (at most 10 s); the seconds it took, for the issue's "within 1 s"."""
    start = time.monotonic()
    while not check():
        assert time.monotonic() - start < 10, "never became visible"
        time.sleep(0.02)
    return time.monotonic() - start


def test_a_keys_limit_is_shared_by_the_three_replicas(replicas):
    statuses = burst(replicas.urls, LIMITED, 3 * R)
    assert set(statuses) <= {200, 429}, statuses
    assert abs(statuses[200] - R) <= 0.02 * R, statuses


def test_a_route_changed_through_one_replica_is_applied_by_the_others_within_1s(replicas):
    a, *others = replicas.urls
    name = f"shared-{time.monotonic_ns()}"
    assert admin(a, "PUT", f"/routes/{name}", json={"members": [{"version": BASE, "weight": 100}]}).status_code == 200
    took = visible_within(
        lambda: all(any(r["name"] == name for r in admin(u, "GET", "/routes").json()) for u in others)
    )
    assert took <= 1.0, f"applied by the other replicas after {took:.2f}s"
    body = {"model": name, "max_tokens": 1, "messages": [{"role": "user", "content": "hi"}]}
    for url in others:
        served = httpx.post(f"{url}/v1/chat/completions", json=body, headers=bearer(ADMIN), timeout=120)
        assert served.status_code == 200 and served.headers["x-servekit-version"].startswith(f"{BASE}:")


def test_a_revoked_key_is_refused_by_every_replica_within_1s(replicas):
    def status(url: str) -> int:
        return httpx.get(f"{url}/v1/models", headers=bearer(REVOKED), timeout=30).status_code

    assert [status(url) for url in replicas.urls] == [200] * 3

    async def revoke() -> None:
        shared = SharedState.open(replicas.state)
        try:
            await shared.key_store().revoke("leaver")
        finally:
            await shared.close()

    asyncio.run(revoke())
    took = visible_within(lambda: all(status(url) == 401 for url in replicas.urls))
    assert took <= 1.0, f"refused everywhere after {took:.2f}s"


def test_tokens_charged_on_one_replica_are_settled_with_real_usage_in_the_bucket_the_others_see(replicas):
    a, b = replicas.urls[:2]
    body = {"model": BASE, "max_tokens": 5, "messages": [{"role": "user", "content": "hi"}]}
    bucket = f"{replicas.state.prefix}:ratelimit:{{metered}}:tokens"
    client = redis.Redis.from_url(replicas.redis.url, decode_responses=True)
    try:
        first = httpx.post(f"{a}/v1/chat/completions", json=body, headers=bearer(METERED), timeout=120)
        answered = time.monotonic()
        left_after_estimate = int(first.headers["x-ratelimit-remaining-tokens"])
        used = first.json()["usage"]["total_tokens"]
        estimate = TPM - left_after_estimate
        assert abs(used - estimate) > 20, (used, estimate)  # the chat template: settling changes the level
        # A's settlement landed: the stored level moved from TPM - estimate to TPM - used (plus a little refill).
        visible_within(lambda: abs(float(client.hget(bucket, "level")) - (TPM - used)) < 10)
    finally:
        client.close()
    second = httpx.post(f"{b}/v1/chat/completions", json=body, headers=bearer(METERED), timeout=120)
    refilled = (time.monotonic() - answered) * TPM / 60
    # B charges the same estimate on top of A's real usage (not A's estimate), plus what refilled meanwhile.
    left = int(second.headers["x-ratelimit-remaining-tokens"])
    assert left_after_estimate - used - 1 <= left <= left_after_estimate - used + refilled + 1, (left, used)


def errors_counted(url: str) -> float:
    text = httpx.get(f"{url}/metrics", timeout=30).text
    return sum(
        float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith("servekit_state_errors_total{")
    )


def test_redis_down_open_serves_unlimited_closed_refuses_503_and_limits_are_shared_again_after(replicas):
    opened = replicas.urls[:CLOSED]
    replicas.redis.stop()
    try:
        unlimited = burst(opened, LIMITED, R + 10)  # more than the limit, on the replicas that fail open
        assert unlimited == Counter({200: R + 10}), unlimited
        assert all(errors_counted(url) > 0 for url in opened)
        refused = httpx.post(
            f"{replicas.urls[CLOSED]}/v1/chat/completions", headers=bearer(LIMITED), timeout=60,
            json={"model": BASE, "max_tokens": 1, "messages": [{"role": "user", "content": "hi"}]},
        )  # fmt: skip
        assert refused.status_code == 503, refused.text
        assert refused.json()["error"]["code"] == "state_unavailable"
        change = admin(opened[0], "PUT", "/routes/during-outage", json={"members": [{"version": BASE, "weight": 100}]})
        assert change.status_code == 503 and change.json()["error"]["code"] == "state_unavailable"
    finally:
        replicas.redis.start()  # without persistence the test's Redis comes back empty: the keys are made again
    create_keys(replicas.state)
    # A limited request on the `closed` replica is answered once that replica reaches Redis again.
    visible_within(lambda: burst(replicas.urls[CLOSED:], PROBE, 1) == Counter({200: 1}))
    statuses = burst(replicas.urls, LIMITED, 3 * R)
    assert set(statuses) <= {200, 429}, statuses
    assert abs(statuses[200] - R) <= 0.02 * R, statuses


def holder_index(replicas: Replicas) -> int:
    """The replica whose worker holds the rollout lease (the lease's holder key names `host:pid`)."""
    client = redis.Redis.from_url(replicas.redis.url, decode_responses=True)
    try:
        name = client.get(f"{replicas.state.prefix}:lease:rollouts:holder")
    finally:
        client.close()
    assert name is not None, "no replica holds the lease"
    pid = int(name.rsplit(":", 1)[1])
    for n, process in enumerate(replicas.processes):
        if process.poll() is not None:  # a replica the test killed
            continue
        tree = [process.pid, *(child.pid for child in psutil.Process(process.pid).children(recursive=True))]
        if pid in tree:
            return n
    raise LookupError(f"lease holder {name} is none of the replicas")


def test_a_rollout_survives_kill_9_of_the_lease_holder_and_is_promoted_by_another_with_a_complete_audit(
    replicas, random_adapters
):
    canary = random_adapters["a"].tag
    route = f"canary-{time.monotonic_ns()}"
    a = replicas.urls[0]
    assert admin(a, "PUT", f"/routes/{route}", json={"members": [{"version": BASE, "weight": 100}]}).status_code == 200
    visible_within(
        lambda: all(any(r["name"] == route for r in admin(u, "GET", "/routes").json()) for u in replicas.urls)
    )
    traffic = [Traffic(url, route, threads=2, headers=bearer(ADMIN)) for url in replicas.urls]
    for each in traffic:
        each.__enter__()
    try:
        started = admin(a, "POST", f"/rollouts/{route}", json={"canary": canary, "config": ROLLOUT})
        assert started.status_code == 200, started.text
        holder = holder_index(replicas)

        def decided_by_holder() -> bool:
            history = admin(replicas.urls[holder], "GET", f"/rollouts/{route}/history")
            if history.status_code == 503:  # a Redis reply slower than state.timeout_s on a busy box: poll again
                assert history.json()["error"]["code"] == "state_unavailable", history.text
                return False
            return sum(entry["event"] == "set_weight" for entry in history.json()) >= 2

        deadline = time.monotonic() + 120
        while not decided_by_holder():
            assert time.monotonic() < deadline, "the holder made no decision"
            time.sleep(0.5)
        kill_whole_server(replicas.processes[holder])
        traffic[holder].__exit__()
        survivor = replicas.urls[(holder + 1) % 3]
        deadline = time.monotonic() + 180
        while (final := admin(survivor, "GET", f"/rollouts/{route}").json()).get("phase") not in (
            "promoted",
            "rolled_back",
        ):  # an error body (503 state_unavailable on a busy box) has no phase: poll again
            assert time.monotonic() < deadline, f"the rollout never finished after the kill: {final}"
            time.sleep(0.5)
    finally:
        for each in traffic:
            each.__exit__()
    assert final["phase"] == "promoted"
    history = admin(survivor, "GET", f"/rollouts/{route}/history").json()
    decisions = [(e["event"], e["canary_weight"]) for e in history if e.get("canary_weight") is not None]
    assert decisions == [("set_weight", 25.0), ("set_weight", 50.0), ("set_weight", 100.0), ("promote", 100.0)]
    events = [e["event"] for e in history]
    assert events.count("resumed") == 1 and events.index("resumed") > events.index("set_weight"), events
    assert holder_index(replicas) != holder
    for n, each in enumerate(traffic):
        if n != holder:  # the survivors answered every request, through the handover too
            assert set(each.statuses) == {200}, Counter(each.statuses)
