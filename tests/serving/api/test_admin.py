"""Admin routes through the whole ASGI stack, in front of in-memory engines (the same on the real engine and
BentoML: test_rollout_e2e.py, test_gateway_adapters_e2e.py)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from serving.api.app import create_app
from serving.api.auth import key_digest
from serving.rollout.controller import RolloutController
from serving.rollout.store import RolloutStore
from serving.settings import AccessLogSettings, FaultSettings, Settings
from serving.state import connect
from serving.state.records import SqliteRecords
from tests.serving.fake_engine import started_gateway

SPLIT = {"members": [{"version": "chat", "weight": 70}, {"version": "new", "weight": 30}]}
SLOW_ROLLOUT = {"canary": "new", "config": {"steps": [10, 100], "interval_s": 3600}}


def chat(model: str, user: str) -> dict[str, object]:
    return {"model": model, "user": user, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2}


@pytest.fixture(params=[False, True], ids=["faults-off", "faults-on"])
async def client(request, tmp_path: Path) -> AsyncIterator[httpx.AsyncClient]:
    gateway = await started_gateway(tmp_path / "state.db", "chat", "new")
    settings = Settings(faults=FaultSettings(enabled=request.param), access_log=AccessLogSettings(enabled=False))
    app = create_app(settings, gateway)
    app.state.rollouts = RolloutController(
        gateway, None, RolloutStore(SqliteRecords(connect(tmp_path / "state.db"))), tmp_path
    )
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://servekit") as client:
        yield client
    await app.state.rollouts.stop()
    await gateway.stop()


async def test_a_route_splits_users_by_weight_and_keeps_each_on_one_version(client):
    assert (await client.put("/admin/routes/ab", json=SPLIT)).status_code == 200
    assert [route["name"] for route in (await client.get("/admin/routes")).json()] == ["ab"]
    served = {}
    for n in range(200):
        answer = await client.post("/v1/chat/completions", json=chat("ab", f"user-{n}"))
        served[f"user-{n}"] = answer.headers["x-servekit-version"]
    share = sum(version == "new:v1" for version in served.values()) / len(served)
    assert 0.2 < share < 0.4
    for user in ("user-1", "user-2", "user-3"):
        again = await client.post("/v1/chat/completions", json=chat("ab", user))
        assert again.headers["x-servekit-version"] == served[user]
    assert (await client.delete("/admin/routes/ab")).json() == {"deleted": "ab"}
    assert (await client.post("/v1/chat/completions", json=chat("ab", "x"))).status_code == 404


async def test_a_route_is_refused_with_the_field_named(client):
    lopsided = {"members": [{"version": "chat", "weight": 70}, {"version": "new", "weight": 20}]}
    refused = await client.put("/admin/routes/ab", json=lopsided)
    assert refused.status_code == 400 and refused.json()["error"]["param"] == "members"
    unknown = await client.put("/admin/routes/ab", json={"members": [{"version": "nosuch", "weight": 100}]})
    assert unknown.status_code == 404 and unknown.json()["error"]["code"] == "model_not_found"
    assert (await client.get("/admin/routes")).json() == []


async def test_a_rollout_is_driven_and_its_route_locked_until_it_ends(client):
    await client.put("/admin/routes/ab", json={"members": [{"version": "chat", "weight": 100}]})
    started = await client.post("/admin/rollouts/ab", json=SLOW_ROLLOUT)
    assert started.status_code == 200 and started.json()["phase"] == "progressing"
    locked = await client.put("/admin/routes/ab", json=SPLIT)
    assert locked.status_code == 409 and "under a rollout" in locked.json()["error"]["message"]
    assert (await client.post("/admin/rollouts/ab/explode")).status_code == 404
    assert (await client.post("/admin/rollouts/ab/pause")).json()["phase"] == "paused"
    assert (await client.post("/admin/rollouts/ab/promote")).json()["phase"] == "promoted"
    assert [m["version"] for m in (await client.get("/admin/routes")).json()[0]["members"]] == ["new"]
    history = (await client.get("/admin/rollouts/ab/history")).json()
    assert [entry["event"] for entry in history] == ["started", "set_weight", "paused", "promoted manually"]
    assert (await client.put("/admin/routes/ab", json=SPLIT)).status_code == 200  # unlocked once finished


async def test_faults_are_injected_only_when_enabled(client, request):
    enabled = request.node.callspec.params["client"]
    broken = await client.put("/admin/faults/new", json={"error_rate": 1.0})
    assert broken.status_code == (200 if enabled else 404)
    answer = await client.post("/v1/chat/completions", json=chat("new", "u"))
    assert answer.status_code == (502 if enabled else 200)  # an engine failure: bad gateway
    if enabled:
        assert "injected fault" in answer.json()["error"]["message"]
        assert (await client.delete("/admin/faults/new")).json() == {"cleared": "new"}
        assert (await client.post("/v1/chat/completions", json=chat("new", "u"))).status_code == 200


async def test_with_redis_down_admin_changes_are_refused_with_503_state_unavailable_and_requests_still_served(
    tmp_path, redis_server
):
    admin = {"id": "ops", "sha256": key_digest("sk-ops"), "role": "admin"}
    settings = Settings(
        access_log=AccessLogSettings(enabled=False), auth={"keys": [admin]},
        state={"url": redis_server.url, "retry_s": 0.05},
    )  # fmt: skip
    gateway = await started_gateway(tmp_path / "state.db", "chat", "new", state=settings.state)
    app = create_app(settings, gateway)
    app.state.rollouts = RolloutController(
        gateway, None, RolloutStore(gateway.router.records), tmp_path, lease=gateway.shared.lease()
    )
    try:
        transport, headers = httpx.ASGITransport(app=app), {"authorization": "Bearer sk-ops"}
        async with httpx.AsyncClient(transport=transport, base_url="http://servekit", headers=headers) as client:
            assert (await client.put("/admin/routes/ab", json=SPLIT)).status_code == 200
            redis_server.stop()
            refused = [
                await client.put("/admin/routes/ab", json={"members": [{"version": "new", "weight": 100}]}),
                await client.delete("/admin/routes/ab"),
                await client.post("/admin/rollouts/ab", json=SLOW_ROLLOUT),
                await client.post("/admin/rollouts/ab/abort"),
            ]
            for answer in refused:
                assert answer.status_code == 503
                error = answer.json()["error"]
                assert (error["type"], error["code"]) == ("service_unavailable", "state_unavailable")
                assert set(error) == {"message", "type", "param", "code"}
            assert [member["weight"] for member in (await client.get("/admin/routes")).json()[0]["members"]] == [
                70,
                30,
            ]
            assert (await client.post("/v1/chat/completions", json=chat("ab", "u"))).status_code == 200
    finally:
        await app.state.rollouts.stop()
        await gateway.stop()
        await gateway.shared.close()
