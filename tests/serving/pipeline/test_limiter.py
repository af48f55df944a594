"""Choosing the limiter, and shared keys reaching `authenticate`, against a real redis-server."""

from __future__ import annotations

import httpx
import pytest
from fastapi import Depends, FastAPI

from serving.api.auth import Principal, authenticate, key_digest
from serving.api.errors import install_error_handlers
from serving.errors import RateLimitError
from serving.pipeline.limiter import InProcessRateLimiter, build_rate_limiter
from serving.settings import Settings
from serving.state.redis_keys import StoredKey, new_key
from serving.state.redis_limits import SharedRateLimiter
from serving.state.shared import SharedState


@pytest.fixture
async def shared(redis_server):
    state = SharedState.open(Settings(state={"url": redis_server.url}).state)
    yield state
    await state.close()


async def test_without_state_url_the_limiter_stays_in_process():
    settings = Settings(limits={"requests_per_minute": 1})
    limiter = build_rate_limiter(settings)
    assert isinstance(limiter, InProcessRateLimiter)
    await limiter.admit("anonymous", lambda: 0)
    with pytest.raises(RateLimitError):
        await limiter.admit("anonymous", lambda: 0)


async def test_shared_keys_bring_their_own_limits_and_others_get_the_defaults(shared):
    settings = Settings(limits={"requests_per_minute": 7}, state={"url": shared.settings.url})
    lookup = shared.key_lookup()
    await shared.key_store().create(StoredKey("own", key_digest(new_key()), requests_per_minute=2))
    await lookup.get("refresh")  # loads the table
    limiter = build_rate_limiter(settings, shared, lookup)
    assert isinstance(limiter, SharedRateLimiter)
    assert limiter.limits("own") == (2, 0)
    assert limiter.limits("anonymous") == (7, 0)
    assert limiter.limits("someone-else") == (7, 0)


async def test_authenticate_accepts_a_shared_key_and_stays_on_when_the_table_is_empty(shared):
    app = FastAPI()
    install_error_handlers(app)
    app.state.api_keys = {}
    app.state.shared_keys = shared.key_lookup()

    @app.get("/who")
    async def who(principal: Principal = Depends(authenticate)) -> dict[str, str | int]:
        return {"id": principal.key_id, "role": principal.role, "priority": principal.priority}

    key = new_key()
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://gw") as client:
        assert (await client.get("/who")).status_code == 401  # no shared key yet, and still no anonymous access
        await shared.key_store().create(StoredKey("team", key_digest(key), "admin", priority=3))
        app.state.shared_keys = shared.key_lookup()  # a fresh copy: no waiting for the poll interval here
        answer = await client.get("/who", headers={"Authorization": f"Bearer {key}"})
        assert answer.json() == {"id": "team", "role": "admin", "priority": 3}
        wrong = await client.get("/who", headers={"Authorization": "Bearer sk-wrong"})
        assert wrong.status_code == 401 and wrong.json()["error"]["code"] == "invalid_api_key"
