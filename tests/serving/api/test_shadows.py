"""Shadow admin routes through the whole ASGI stack, in front of in-memory engines."""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import AsyncIterator
from pathlib import Path
from types import SimpleNamespace

import httpx
import pytest
from fastapi import FastAPI

from serving.api.app import create_app
from serving.api.shadows import primary_tokenizers, shadows_of
from serving.rollout.controller import RolloutController
from serving.rollout.store import RolloutStore
from serving.router.routes import Route, RouteMember
from serving.settings import AccessLogSettings, ApiKey, AuthSettings, Settings, ShadowSettings
from serving.shadow.answer import Answer
from serving.shadow.compare import characters
from serving.state import connect
from serving.state.records import SqliteRecords
from tests.serving.fake_engine import started_gateway

ADMIN_KEY, USER_KEY = "sk-admin", "sk-user"


def settings(tmp_path: Path, auth: bool = False) -> Settings:
    keys = [
        ApiKey(id=role, sha256=hashlib.sha256(key.encode()).hexdigest(), role=role)
        for role, key in (("admin", ADMIN_KEY), ("user", USER_KEY))
    ]
    return Settings(
        access_log=AccessLogSettings(enabled=False),
        home=tmp_path,
        shadow=ShadowSettings(out_dir=tmp_path / "shadows"),
        auth=AuthSettings(keys=keys if auth else []),
    )


async def stack(tmp_path: Path, auth: bool = False) -> AsyncIterator[tuple[httpx.AsyncClient, FastAPI]]:
    gateway = await started_gateway(tmp_path / "state.db", "chat", "new")
    await gateway.set_route(Route(name="ab", members=[RouteMember(version="chat", weight=100)]))
    app = create_app(settings(tmp_path, auth), gateway)
    app.state.rollouts = RolloutController(
        gateway, None, RolloutStore(SqliteRecords(connect(tmp_path / "state.db"))), tmp_path
    )
    try:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://servekit") as client:
            yield client, app
    finally:
        await shadows_of(app).close()
        await app.state.rollouts.stop()
        await gateway.stop()


@pytest.fixture
async def served(tmp_path: Path) -> AsyncIterator[tuple[httpx.AsyncClient, FastAPI]]:
    async for pair in stack(tmp_path):
        yield pair


async def test_a_shadow_is_started_shown_and_stopped_with_its_report(served):
    client, app = served
    started = await client.post("/admin/shadows/ab", json={"candidate": "new", "percent": 50, "max_in_flight": 3})
    assert started.status_code == 200
    body = started.json()
    assert (body["primary"], body["candidate"], body["state"], body["max_in_flight"]) == ("chat", "new", "running", 3)
    shadower = shadows_of(app)
    assert shadower.mirror("ab", "r1", _answering("hello"))
    shadower.primary_done("ab", "r1", Answer(200, 0.2, 0.1, "hello", None, 0.0))
    while shadower.runs["ab"].busy:  # copies in flight or pairs being compared
        await asyncio.sleep(0.005)
    assert [run["route"] for run in (await client.get("/admin/shadows")).json()] == ["ab"]
    stopped = await client.delete("/admin/shadows/ab")
    assert stopped.status_code == 200 and stopped.json()["state"] == "finished"
    assert stopped.json()["comparison"]["agreement"] == 1.0 and Path(stopped.json()["report"]).is_file()
    assert (await client.get("/admin/shadows/ab")).json()["report"] == stopped.json()["report"]
    assert (await client.get("/admin/shadows")).json() == []
    metrics = (await client.get("/metrics")).text
    assert 'servekit_shadow_requests_total{route="ab",version="new"} 1.0' in metrics


async def test_bad_starts_are_refused_in_the_openai_shape(served):
    client, _ = served
    cases = [
        ("nosuch-route", {"candidate": "new", "percent": 10}, 404, "model"),
        ("ab", {"candidate": "nosuch-version", "percent": 10}, 404, "model"),
        ("ab", {"candidate": "chat", "percent": 10}, 400, "candidate"),
        ("ab", {"candidate": "new", "percent": 0}, 400, "percent"),
        ("ab", {"candidate": "new", "percent": 100.5}, 400, "percent"),
    ]
    for route, body, status, param in cases:
        refused = await client.post(f"/admin/shadows/{route}", json=body)
        assert refused.status_code == status, (route, body, refused.text)
        assert refused.json()["error"]["param"] == param
    assert (await client.post("/admin/shadows/ab", json={"candidate": "new", "percent": 100})).status_code == 200
    second = await client.post("/admin/shadows/ab", json={"candidate": "new", "percent": 5})
    assert second.status_code == 409 and "already shadowed" in second.json()["error"]["message"]
    assert (await client.delete("/admin/shadows/other")).status_code == 404
    assert (await client.get("/admin/shadows/other")).status_code == 404


async def test_shadows_need_the_admin_key_when_auth_is_on(tmp_path):
    async for client, _ in stack(tmp_path, auth=True):
        body = {"candidate": "new", "percent": 10}
        assert (await client.post("/admin/shadows/ab", json=body)).status_code == 401
        user = await client.post("/admin/shadows/ab", json=body, headers={"Authorization": f"Bearer {USER_KEY}"})
        assert user.status_code == 403
        admin = await client.post("/admin/shadows/ab", json=body, headers={"Authorization": f"Bearer {ADMIN_KEY}"})
        assert admin.status_code == 200


async def shadow_once(client: httpx.AsyncClient, app: FastAPI, primary: str, candidate: str) -> None:
    assert (await client.post("/admin/shadows/ab", json={"candidate": "new", "percent": 100})).status_code == 200
    shadower = shadows_of(app)
    for n in range(4):
        shadower.mirror("ab", f"r{n}", _answering(candidate))
        shadower.primary_done("ab", f"r{n}", Answer(200, 0.3, 0.1, primary, None, 0.0))
    while shadower.runs["ab"].busy:  # copies in flight or pairs being compared
        await asyncio.sleep(0.005)
    assert (await client.delete("/admin/shadows/ab")).status_code == 200


async def test_require_shadow_refuses_a_canary_that_missed_and_audits_the_run_it_relied_on(served):
    client, app = served
    rollout = {"canary": "new", "config": {"steps": [10, 100], "interval_s": 3600}}
    required = "agreement>=0.9,ttft_p95_ratio<=1.25,error_rate<=0.01"
    bad = await client.post("/admin/rollouts/ab", json={**rollout, "require_shadow": "agreement=0.9"})
    assert bad.status_code == 400 and bad.json()["error"]["param"] == "require_shadow"
    unshadowed = await client.post("/admin/rollouts/ab", json={**rollout, "require_shadow": required})
    assert unshadowed.status_code == 409 and "no shadow run on this route" in unshadowed.json()["error"]["message"]
    await shadow_once(client, app, primary="the cat sat on the mat", candidate="a dog ran")
    refused = await client.post("/admin/rollouts/ab", json={**rollout, "require_shadow": required})
    assert refused.status_code == 409
    message = refused.json()["error"]["message"]
    assert "agreement = " in message and "(required agreement>=0.9)" in message and "error_rate" not in message
    await shadow_once(client, app, primary="the cat sat on the mat", candidate="the cat sat on the mat")
    started = await client.post("/admin/rollouts/ab", json={**rollout, "require_shadow": required})
    assert started.status_code == 200 and started.json()["gates"]["require_shadow"] == required
    history = (await client.get("/admin/rollouts/ab/history")).json()
    gates = [entry for entry in history if entry["event"] == "pre-rollout gate"]
    assert [gate["passed"] for gate in gates] == [False, False, True]
    assert gates[1]["evidence"]["run"]["comparison"]["agreement"] < 0.9
    relied_on = gates[2]["evidence"]
    assert relied_on["required"] == required and relied_on["run"]["comparison"]["agreement"] == 1.0
    assert relied_on["run"]["report"].endswith("report.html")


def _answering(text: str):
    async def send() -> Answer:
        return Answer(200, 0.3, 0.1, text, None, 0.0)

    return send


def word_tokenizer(directory: Path) -> Path:
    """A tiny word-level tokenizer saved as a model directory holds one (no download)."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {"[UNK]": 0, "the": 1, "cat": 2, "sat": 3, "dog": 4}
    tokenizer = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    PreTrainedTokenizerFast(tokenizer_object=tokenizer, unk_token="[UNK]").save_pretrained(directory)
    return directory


def test_agreement_is_measured_in_the_primarys_tokens_else_characters(tmp_path):
    base = SimpleNamespace(name="base", parent=None, model=SimpleNamespace(path=word_tokenizer(tmp_path / "base")))
    adapter = SimpleNamespace(name="lora", parent="base", model=SimpleNamespace(path=tmp_path / "no-tokenizer"))
    remote = SimpleNamespace(name="remote", parent=None, model=SimpleNamespace(path=tmp_path / "missing"))
    versions = SimpleNamespace(resolve={"base": base, "lora": adapter, "remote": remote}.__getitem__)
    gateway = SimpleNamespace(versions=versions)
    tokenize_for = primary_tokenizers(gateway)
    assert tokenize_for("lora")(["the cat sat", "cat"]) == [[1, 2, 3], [2]]  # an adapter primary: its base's
    assert tokenize_for("remote") is characters
    assert tokenize_for("lora") is tokenize_for("lora")  # loaded once
