from __future__ import annotations

from serving.rollout.policy import Phase, RolloutConfig, RolloutState
from serving.rollout.store import RolloutStore
from serving.state import connect


def test_state_and_audit_survive_a_reopen(tmp_path):
    store = RolloutStore(connect(tmp_path / "state.db"))
    state = RolloutState(route="r", primary="a", canary="b", config=RolloutConfig(), phase=Phase.progressing, step=2)
    store.save(state)
    store.audit("r", "set_weight", {"canary_weight": 25, "observation": {"canary": {"requests": 60}}})
    reopened = RolloutStore(connect(tmp_path / "state.db"))
    assert reopened.get("r") == state
    assert reopened.history("r")[0]["observation"]["canary"]["requests"] == 60
    assert reopened.get("other") is None
