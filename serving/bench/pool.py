"""What choosing a replica costs: `EnginePool.choose` under each policy with 8 replicas and 10,000 indexed
prompts (goal p99 <= 50 us), the prompt-to-blocks step that feeds it, and the prefix index's memory (goal: within
its bound, 64 MiB by default). In-process, no engine: the decision is pure computation on the request path."""

from __future__ import annotations

import random
import time
import tracemalloc

from loadtest.bench import percentile
from serving.bench import plots
from serving.bench.section import BenchContext, SectionResult, Target
from serving.pool.factory import make_policy
from serving.pool.policy import ReplicaPolicy, RequestContext
from serving.pool.pool import EnginePool
from serving.pool.prefix_blocks import messages_text, prefix_blocks
from serving.pool.prefix_index import MIB, PrefixIndex
from serving.pool.replica import Replica
from serving.settings import PoolSettings

DECISION_GOAL_US = 50.0
REPLICAS = 8
PREFIXES = 10_000
SYSTEM_PROMPTS = 100
POLICIES = ("round_robin", "least_loaded", "session", "prefix_affinity")
DEFAULTS = PoolSettings()


def words(rng: random.Random, count: int) -> str:
    return " ".join(rng.choice(("ship", "sail", "wind", "port", "tide", "mast", "crew", "reef")) for _ in range(count))


def conversations(rng: random.Random, count: int) -> list[list[dict[str, str]]]:
    """Chats of 1-4 turns opening with one of a few long system prompts: the shape prefix affinity is for."""
    systems = [{"role": "system", "content": f"[{i}] " + words(rng, 300)} for i in range(SYSTEM_PROMPTS)]
    chats = []
    for _ in range(count):
        chat = [rng.choice(systems)]
        for _ in range(rng.randint(1, 4)):
            chat += [{"role": "user", "content": words(rng, 60)}, {"role": "assistant", "content": words(rng, 80)}]
        chats.append(chat[:-1])
    return chats


def blocks(text: str) -> list[int]:
    return prefix_blocks(text, DEFAULTS.block_chars, DEFAULTS.max_prefix_blocks, "m")


def contexts(chats: list[list[dict[str, str]]]) -> list[RequestContext]:
    return [RequestContext(f"user-{i}", None, blocks(messages_text(chat))) for i, chat in enumerate(chats)]


def decision_timings(
    policy: ReplicaPolicy, indexed: list[RequestContext], queries: list[RequestContext]
) -> list[float]:
    """µs per `EnginePool.choose`, after the 10,000 indexed prompts went through the same pool; replicas carry
    random loads so the load bound and the P2C comparisons are exercised."""
    rng = random.Random(1)
    replicas = [Replica(f"http://10.0.0.{i}:8000", url=f"http://10.0.0.{i}:8000") for i in range(REPLICAS)]
    pool = EnginePool("m:v1", replicas, policy)
    for ctx in indexed:
        pool.choose(ctx)
    timings = []
    for ctx in queries:
        for replica in replicas:
            replica.in_flight = rng.randrange(12)
        started = time.perf_counter_ns()
        pool.choose(ctx)
        timings.append((time.perf_counter_ns() - started) / 1000)
    return timings


def index_mib(indexed: list[RequestContext]) -> tuple[float, int]:
    """Memory (MiB) and entries of a prefix index holding these prompts, as tracemalloc counts it."""
    tracemalloc.start()
    try:
        index = PrefixIndex(DEFAULTS.index_max_entries, DEFAULTS.index_max_mib)
        for i, ctx in enumerate(indexed):
            index.record(ctx.prefix_blocks, f"r{i % REPLICAS}")
        return tracemalloc.get_traced_memory()[0] / MIB, len(index)
    finally:
        tracemalloc.stop()


def full_index_mib(rng: random.Random) -> tuple[float, int, float]:
    """An index filled past its default bound with churn: (peak MiB, entries, ms of one sweep of departed
    replicas, which `forget` defers until fresh bits run out)."""
    tracemalloc.start()
    try:
        index = PrefixIndex(DEFAULTS.index_max_entries, DEFAULTS.index_max_mib)
        for conversation in range(index.capacity // 8):
            blocks = [rng.getrandbits(63) for _ in range(16)]
            index.record(blocks, f"r{conversation % REPLICAS}")
        used = tracemalloc.get_traced_memory()[1] / MIB
    finally:
        tracemalloc.stop()
    for replica in range(REPLICAS):
        index.forget(f"r{replica}")
    started = time.perf_counter()
    index.sweep()
    return used, index.capacity, 1000 * (time.perf_counter() - started)


def run(ctx: BenchContext) -> SectionResult:
    queries_n = 2_000 if ctx.quick else 50_000
    rng = random.Random(0)
    chats = conversations(rng, PREFIXES)
    indexed = contexts(chats)
    follow_ups = [
        [*chat, {"role": "assistant", "content": "ok"}, {"role": "user", "content": words(rng, 40)}] for chat in chats
    ]
    mix = contexts(follow_ups[:2000]) + contexts(conversations(rng, 1000))
    queries = [rng.choice(mix) for _ in range(queries_n)]
    rows, targets = [], []
    task = ctx.progress.add_task("pool decision", total=len(POLICIES))
    for name in POLICIES:
        timings = decision_timings(make_policy(PoolSettings(policy=name)), indexed, queries)
        p50, p99 = percentile(timings, 50), percentile(timings, 99)
        rows.append({"measure": f"choose() {name} (us)", "p50": p50, "p99": p99, "n": len(timings)})
        targets.append(Target(f"choose() p99 us, {name}", p99, f"<= {DECISION_GOAL_US:g} us", p99 <= DECISION_GOAL_US))
        ctx.progress.advance(task)
    block_timings = []
    for chat in follow_ups[:5000]:
        started = time.perf_counter_ns()
        blocks(messages_text(chat))
        block_timings.append((time.perf_counter_ns() - started) / 1000)
    mean_chars = sum(len(messages_text(chat)) for chat in follow_ups[:5000]) / 5000
    rows.append({
        "measure": f"messages -> prefix blocks, {mean_chars:.0f} chars (us)",
        "p50": percentile(block_timings, 50), "p99": percentile(block_timings, 99), "n": len(block_timings),
    })  # fmt: skip
    used, entries = index_mib(indexed)
    full, capacity, forget_ms = full_index_mib(rng)
    rows.append({"measure": f"index MiB, {PREFIXES} prompts ({entries} blocks)", "p50": used, "p99": used, "n": 1})
    rows.append({"measure": f"index MiB at peak, full ({capacity} blocks)", "p50": full, "p99": full, "n": 1})
    rows.append({"measure": "sweep departed replicas, full index (ms)", "p50": forget_ms, "p99": forget_ms, "n": 1})
    targets.append(Target("full index MiB", full, f"<= {DEFAULTS.index_max_mib:g} MiB", full <= DEFAULTS.index_max_mib))
    plot = plots.bars(
        ctx.out / "pool.png",
        f"Replica choice: EnginePool.choose with {REPLICAS} replicas, {PREFIXES} indexed prompts; prefix index memory",
        [
            ("choose() us", {"p50": [r["p50"] for r in rows[:4]], "p99": [r["p99"] for r in rows[:4]]}, list(POLICIES)),
            ("index MiB", {"measured": [used, full], "bound": [DEFAULTS.index_max_mib, DEFAULTS.index_max_mib]},
             [f"{PREFIXES} prompts", "full"]),
        ],
    )  # fmt: skip
    notes = [
        f"queries: follow-up turns of indexed chats and new chats on the same {SYSTEM_PROMPTS} system prompts, "
        f"replica loads random in 0-11, load bound {DEFAULTS.load_bound}, blocks of {DEFAULTS.block_chars} characters",
        "the prefix-blocks row is paid once per request before choose(), by the caller",
    ]
    return SectionResult("pool", rows, targets, [plot], notes)
