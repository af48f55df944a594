"""Gateway duties against a real gateway (auth on, small in-flight cap) in front of the session's engine:
keys and roles on every route, load shedding, and the JSON access log."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
from fastapi.routing import APIRoute

from serving.api.app import create_app
from serving.api.auth import key_digest
from serving.settings import Settings
from tests.conftest import GATEWAY_UP_TIMEOUT_S, start_bentoml, stop, wait_for

BASE = "smollm2-135m-instruct"
USER_KEY, ADMIN_KEY, LIMITED_KEY = "sk-user-test", "sk-admin-test", "sk-limited-test"
METERED_KEY, TOKENS_KEY = "sk-metered-test", "sk-tokens-test"
METERED_RPM, TOKENS_TPM = 30, 300
PUBLIC_PATHS = {"/health", "/ready", "/metrics", "/docs", "/docs/oauth2-redirect", "/redoc", "/openapi.json"}


@pytest.fixture(scope="module")
def guarded(server, artifacts_dir) -> Iterator[tuple[str, object]]:
    keys = [
        {"id": "user-1", "sha256": key_digest(USER_KEY), "role": "user"},
        {"id": "admin-1", "sha256": key_digest(ADMIN_KEY), "role": "admin"},
        {"id": "limited", "sha256": key_digest(LIMITED_KEY), "role": "user", "models": ["some-other-route"]},
        {"id": "metered", "sha256": key_digest(METERED_KEY), "requests_per_minute": METERED_RPM},
        {"id": "tokens", "sha256": key_digest(TOKENS_KEY), "tokens_per_minute": TOKENS_TPM},
    ]
    env = {
        "SERVEKIT_ENGINE__URL": server.engine_url,
        "SERVEKIT_HOME": str(artifacts_dir / "guarded"),
        "SERVEKIT_AUTH__KEYS": json.dumps(keys),
        "SERVEKIT_LIMITS__MAX_IN_FLIGHT_PER_ENGINE": "2",
        "SERVEKIT_LIMITS__MAX_MESSAGES": "80",
        "SERVEKIT_LIMITS__MAX_TOKENS_CAP": "512",
        "SERVEKIT_LIMITS__PROMPT_POLICIES": json.dumps({"long-chats": "truncate_left"}),
        "SERVEKIT_ROUTES": json.dumps({"long-chats": {BASE: 100}}),
    }
    log_path = artifacts_dir / "guarded.log"
    process, base_url = start_bentoml("bentos.service:Servekit", env, log_path)
    try:
        wait_for(f"{base_url}/ready", process, GATEWAY_UP_TIMEOUT_S)
        yield base_url, log_path
    finally:
        stop(process)


def app_routes() -> list[tuple[str, str]]:
    app = create_app(Settings())
    return [
        (method, route.path.replace("{version}", "x:1").replace("{name}", "r").replace("{route}", "r")
         .replace("{operation}", "pause").replace("{path:path}", "anything"))
        for route in app.routes if isinstance(route, APIRoute) and route.include_in_schema
        for method in sorted(route.methods)
    ]  # fmt: skip


def test_no_route_is_reachable_without_a_key(guarded):
    base_url, _ = guarded
    checked = 0
    for method, path in app_routes():
        if path in PUBLIC_PATHS:
            continue
        response = httpx.request(method, base_url + path, json={})
        assert response.status_code == 401, (method, path, response.status_code)
        assert response.json()["error"]["code"] == "invalid_api_key"
        checked += 1
    assert checked >= 15
    assert httpx.get(f"{base_url}/v1/models", headers={"Authorization": "Bearer wrong"}).status_code == 401


def test_roles_and_model_limits(guarded):
    base_url, _ = guarded
    user = {"Authorization": f"Bearer {USER_KEY}"}
    admin = {"Authorization": f"Bearer {ADMIN_KEY}"}
    assert httpx.get(f"{base_url}/v1/models", headers=user).status_code == 200
    forbidden = httpx.get(f"{base_url}/admin/routes", headers=user)
    assert forbidden.status_code == 403 and forbidden.json()["error"]["code"] == "permission_denied"
    assert httpx.get(f"{base_url}/admin/routes", headers=admin).status_code == 200
    body = {"model": BASE, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2}
    limited = httpx.post(
        f"{base_url}/v1/chat/completions", json=body, headers={"Authorization": f"Bearer {LIMITED_KEY}"}
    )
    assert limited.status_code == 403 and limited.json()["error"]["param"] == "model"


def test_path_traversal_in_version_names_is_refused(guarded):
    base_url, _ = guarded
    admin = {"Authorization": f"Bearer {ADMIN_KEY}"}
    for version in ("..%2F..%2Fetc%2Fpasswd", "..:..", "a:..%2F..%2Fsecret", "..", "a:b..c"):
        response = httpx.post(f"{base_url}/admin/models/{version}/load", headers=admin)
        assert response.status_code in (400, 404), (version, response.status_code)
        assert response.json()["error"]["message"]


def test_requests_beyond_the_in_flight_cap_are_shed_at_once(guarded):
    base_url, _ = guarded
    user = {"Authorization": f"Bearer {USER_KEY}"}
    long = {"model": BASE, "messages": [{"role": "user", "content": "Tell a long story."}], "max_tokens": 400,
            "ignore_eos": True, "stream": True}  # fmt: skip
    started = threading.Barrier(3, timeout=120)  # a holder that fails breaks it for all: no one waits forever
    release = threading.Event()

    def hold_a_stream() -> None:
        try:
            with httpx.stream("POST", f"{base_url}/v1/chat/completions", json=long, headers=user, timeout=120) as r:
                lines = r.iter_lines()
                next(lines)
                started.wait()
                release.wait(120)
        finally:
            started.abort()  # no-op once passed; wakes the others if this holder never got there

    holders = [threading.Thread(target=hold_a_stream) for _ in range(2)]
    for thread in holders:
        thread.start()
    try:
        started.wait()
        shed = httpx.post(f"{base_url}/v1/chat/completions", json={**long, "stream": False}, headers=user, timeout=10)
        assert shed.status_code == 503
        assert shed.json()["error"]["code"] == "overloaded"
        assert shed.headers["retry-after"] == "1"
    finally:
        release.set()
        for thread in holders:
            thread.join()


def test_access_log_is_json_per_request_without_the_key(guarded):
    base_url, log_path = guarded
    body = {"model": BASE, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2}
    headers = {"Authorization": f"Bearer {USER_KEY}", "x-request-id": "access-log-probe"}
    assert httpx.post(f"{base_url}/v1/chat/completions", json=body, headers=headers).status_code == 200
    records = [json.loads(line) for line in log_path.read_text().splitlines() if line.startswith('{"request_id"')]
    probe = next(r for r in records if r["request_id"] == "access-log-probe")
    assert probe["key_id"] == "user-1" and probe["status"] == 200 and probe["completion_tokens"] == 2
    assert probe["latency_s"] > 0
    assert USER_KEY not in log_path.read_text()


def test_the_request_bucket_admits_what_it_holds_then_refuses(guarded):
    """Counted, not timed: one client sends requests one after another until the first 429. The bucket held
    METERED_RPM and refills METERED_RPM per minute, so it admits METERED_RPM plus what refilled while the client
    was sending (measured here), and every admission says how many are left."""
    base_url, _ = guarded
    headers = {"Authorization": f"Bearer {METERED_KEY}"}
    body = {"model": BASE, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 1}
    accepted: list[httpx.Response] = []
    with httpx.Client(timeout=60.0, headers=headers) as http:
        began = time.monotonic()
        while (response := http.post(f"{base_url}/v1/chat/completions", json=body)).status_code == 200:
            accepted.append(response)
            assert len(accepted) <= 3 * METERED_RPM, "the limiter never refused"
        refilled = (time.monotonic() - began) * METERED_RPM / 60
    assert response.status_code == 429, response.text
    assert METERED_RPM <= len(accepted) <= METERED_RPM + refilled
    assert accepted[0].headers["x-ratelimit-remaining-requests"] == str(METERED_RPM - 1)
    assert response.headers["x-ratelimit-limit-requests"] == str(METERED_RPM)
    assert response.headers["x-ratelimit-remaining-requests"] == "0"
    assert response.json()["error"]["type"] == "requests"
    time.sleep(int(response.headers["retry-after"]))  # the refill under test: waiting what it asked admits one
    assert httpx.post(f"{base_url}/v1/chat/completions", json=body, headers=headers, timeout=60).status_code == 200


def test_tokens_per_minute_charge_estimates_and_refuse_oversized_requests(guarded):
    base_url, _ = guarded
    url = f"{base_url}/v1/chat/completions"
    small = {"model": BASE, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 100}
    # 100 tokens of one stream take seconds on a small CPU: more than httpx's 5 s default
    with httpx.Client(headers={"Authorization": f"Bearer {TOKENS_KEY}"}, timeout=120) as http:
        too_big = http.post(url, json={**small, "max_tokens": TOKENS_TPM + 1})
        first = http.post(url, json=small)
        # Sent together, charged on arrival: 4 x ~105 tokens exceed the whole 300-token bucket however much of it
        # refilled while `first` ran (counted, not timed: 105 more would take 21 s of refill during the burst).
        with ThreadPoolExecutor(4) as pool:
            refused = list(pool.map(lambda _: http.post(url, json=small), range(4)))
    assert too_big.status_code == 429
    assert too_big.json()["error"]["type"] == "tokens" and "too large" in too_big.json()["error"]["message"]
    assert first.status_code == 200
    remaining = int(first.headers["x-ratelimit-remaining-tokens"])
    assert first.headers["x-ratelimit-limit-tokens"] == str(TOKENS_TPM)
    assert remaining <= TOKENS_TPM - 100  # charged up front: prompt estimate + max_tokens
    assert any(r.status_code == 429 and r.json()["error"]["type"] == "tokens" for r in refused)


def test_input_limits_refuse_with_the_field_named(guarded):
    base_url, _ = guarded
    headers = {"Authorization": f"Bearer {USER_KEY}"}
    url = f"{base_url}/v1/chat/completions"
    many = httpx.post(url, headers=headers, json={"model": BASE, "messages": [{"role": "user", "content": "x"}] * 81})
    assert many.status_code == 400
    assert (many.json()["error"]["param"], many.json()["error"]["code"]) == ("messages", "too_many_messages")
    long = httpx.post(url, headers=headers, json={
        "model": BASE, "messages": [{"role": "user", "content": "x"}], "max_tokens": 513,
    })  # fmt: skip
    assert long.status_code == 400 and long.json()["error"]["param"] == "max_tokens"


def test_truncate_left_fits_a_long_history_where_the_default_policy_refuses(guarded):
    """The same 3,000-token history: 400 context_length_exceeded from a model name with the default policy,
    200 from the route configured with `truncate_left` (the oldest turns dropped, named in a header)."""
    base_url, _ = guarded
    turns = [
        {"role": "user" if i % 2 == 0 else "assistant", "content": f"turn {i}: " + "lorem ipsum dolor sit amet " * 12}
        for i in range(60)
    ]
    messages = [{"role": "system", "content": "Answer in one word."}, *turns, {"role": "user", "content": "Ready?"}]
    headers = {"Authorization": f"Bearer {USER_KEY}"}
    refused = httpx.post(
        f"{base_url}/v1/chat/completions", headers=headers, json={"model": BASE, "messages": messages, "max_tokens": 4}
    )
    assert refused.status_code == 400 and refused.json()["error"]["code"] == "context_length_exceeded"
    fitted = httpx.post(
        f"{base_url}/v1/chat/completions", headers=headers, timeout=120,
        json={"model": "long-chats", "messages": messages, "max_tokens": 4},
    )  # fmt: skip
    assert fitted.status_code == 200, fitted.text
    dropped = int(fitted.headers["x-servekit-truncated-messages"])
    assert 0 < dropped < len(turns)
    assert fitted.json()["usage"]["prompt_tokens"] + 4 <= 2048
