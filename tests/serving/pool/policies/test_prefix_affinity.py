import random

from serving.pool.policies.least_loaded import LeastLoaded
from serving.pool.policies.prefix_affinity import PrefixAffinity
from serving.pool.policy import Reason, RequestContext
from serving.pool.prefix_blocks import messages_text, prefix_blocks
from serving.pool.prefix_index import PrefixIndex
from serving.pool.replica import Replica

SYSTEM = {"role": "system", "content": "You answer questions about ships. " * 10}


def ctx(*messages: dict) -> RequestContext:
    text = messages_text([SYSTEM, *messages])
    return RequestContext(prefix_blocks=prefix_blocks(text, block_chars=32, max_blocks=256))


def policy(load_bound: int = 2) -> PrefixAffinity:
    return PrefixAffinity(PrefixIndex(10_000, 1), load_bound, LeastLoaded(random.Random(3)))


def replicas(count: int) -> list[Replica]:
    return [Replica(f"r{i}", url=f"http://r{i}") for i in range(count)]


def test_a_conversations_next_turn_follows_its_first() -> None:
    pool, chooser = replicas(4), policy()
    question = {"role": "user", "content": "How fast is a clipper? " * 4}
    first = chooser.choose(pool, ctx(question))
    assert first.reason is Reason.no_match
    answer = {"role": "assistant", "content": "About 16 knots. " * 4}
    second = chooser.choose(pool, ctx(question, answer, {"role": "user", "content": "And a galleon?"}))
    assert (second.replica, second.reason) == (first.replica, Reason.prefix_hit)


def test_the_longest_match_wins_over_a_shared_system_prompt() -> None:
    pool, chooser = replicas(2), policy()
    a = {"role": "user", "content": "Tell me about the Cutty Sark. " * 4}
    b = {"role": "user", "content": "Tell me about the Mary Rose. " * 4}
    first = chooser.choose(pool, ctx(a))
    other = next(r for r in pool if r is not first.replica)
    first.replica.in_flight = 2
    assert chooser.choose(pool, ctx(b)).replica is first.replica
    chooser.index.record(ctx(b).prefix_blocks, other.id)
    assert chooser.choose(pool, ctx(b, {"role": "user", "content": "more"})).replica is other


def test_over_the_load_bound_it_falls_back_to_the_least_loaded() -> None:
    pool, chooser = replicas(2), policy(load_bound=2)
    question = {"role": "user", "content": "Name a frigate. " * 6}
    holder = chooser.choose(pool, ctx(question)).replica
    holder.in_flight = 3
    fallback = chooser.choose(pool, ctx(question))
    assert fallback.reason is Reason.load_fallback
    assert fallback.replica is not holder
    holder.in_flight = 2
    assert chooser.choose(pool, ctx(question)).reason is Reason.prefix_hit


def test_the_fallback_replica_learns_the_prefix_so_a_hot_prefix_spreads() -> None:
    pool, chooser = replicas(2), policy(load_bound=1)
    question = {"role": "user", "content": "Describe a brig. " * 6}
    holder = chooser.choose(pool, ctx(question)).replica
    holder.in_flight = 5
    helper = chooser.choose(pool, ctx(question)).replica
    holder.in_flight = 0
    helper.in_flight = 1
    assert chooser.choose(pool, ctx(question)).replica is holder
    holder.in_flight = 2
    hit = chooser.choose(pool, ctx(question))
    assert (hit.replica, hit.reason) == (helper, Reason.prefix_hit)


def test_a_forgotten_replica_matches_nothing() -> None:
    pool, chooser = replicas(2), policy()
    question = {"role": "user", "content": "What is a keel? " * 6}
    holder = chooser.choose(pool, ctx(question)).replica
    chooser.forget(holder.id)
    assert chooser.choose(pool, ctx(question)).reason is Reason.no_match


def test_a_prompt_shorter_than_a_block_goes_by_load() -> None:
    pool, chooser = replicas(2), policy()
    pool[0].in_flight = 4
    choice = chooser.choose(pool, RequestContext(prefix_blocks=[]))
    assert (choice.replica, choice.reason) == (pool[1], Reason.no_match)
