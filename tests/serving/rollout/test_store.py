from __future__ import annotations

import pytest

from serving.errors import ConflictError
from serving.rollout.policy import Phase, RolloutConfig, RolloutState
from serving.rollout.store import RolloutStore
from serving.state import connect
from serving.state.records import SqliteRecords


async def test_state_and_audit_survive_a_reopen(tmp_path):
    store = RolloutStore(SqliteRecords(connect(tmp_path / "state.db")))
    state = RolloutState(route="r", primary="a", canary="b", config=RolloutConfig(), phase=Phase.progressing, step=2)
    await store.save(state, None, "set_weight", {"canary_weight": 25, "observation": {"canary": {"requests": 60}}}, 0)
    reopened = RolloutStore(SqliteRecords(connect(tmp_path / "state.db")))
    assert await reopened.get("r") == state
    assert (await reopened.history("r"))[0]["observation"]["canary"]["requests"] == 60
    assert await reopened.get("other") is None


async def test_a_state_saved_over_one_that_changed_meanwhile_is_refused_and_not_audited(tmp_path):
    store = RolloutStore(SqliteRecords(connect(tmp_path / "state.db")))
    started = RolloutState(route="r", primary="a", canary="b", config=RolloutConfig(), phase=Phase.progressing)
    await store.save(started, None, "started", {}, None)
    paused = started.model_copy(update={"phase": Phase.paused})
    await store.save(paused, await store.get("r"), "paused", {}, None)  # read back: its JSON round-trips
    with pytest.raises(ConflictError):  # a tick decided on `started` while the pause was being written
        await store.save(started.model_copy(update={"step": 1}), started, "set_weight", {}, 0)
    with pytest.raises(ConflictError):  # a second start over a rollout that exists
        await store.save(started, None, "started", {}, None)
    assert await store.get("r") == paused
    assert [entry["event"] for entry in await store.history("r")] == ["started", "paused"]
