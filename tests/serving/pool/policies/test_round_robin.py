from serving.pool.policies.round_robin import RoundRobin
from serving.pool.policy import Reason, RequestContext
from serving.pool.replica import Replica


def test_takes_each_replica_in_turn() -> None:
    replicas = [Replica(i, url=f"http://{i}") for i in "abc"]
    policy = RoundRobin()
    choices = [policy.choose(replicas, RequestContext()) for _ in range(6)]
    assert [c.replica.id for c in choices] == list("abcabc")
    assert {c.reason for c in choices} == {Reason.round_robin}
