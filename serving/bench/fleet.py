"""`servekit bench fleet`: replica choice on a multi-turn chat workload (`serving.bench.conversations`) over the
same two engines. Two managed replicas of the default model (one core each, started once, a KV cache too small for
every conversation), and in front of them, in alternating rounds: servekit gateways whose pools name the two
engines' URLs under `round_robin`, `least_loaded` and `prefix_affinity` (only the policy differs), and
`vllm-router --policy cache_aware`. Then a reference: one engine on both cores, with the two replicas' KV cache.

Per target: TTFT p50/p95, ITL p50, output tok/s, the engines' prefix-cache hit rate over its rounds
(`vllm:prefix_cache_hits_total` / `vllm:prefix_cache_queries_total`, read before and after each round), and the
busiest replica's share of the requests. Goals, as ratios: prefix_affinity TTFT p50 <= 0.5x round_robin's and
<= 1.0x vllm-router's; output tok/s >= 1.0x round_robin's. Every round opens its conversations with a salt of its
own and the engines' prefix caches are reset before it (`/reset_prefix_cache`, vLLM's dev mode), so no round
finds another's prompts cached. `--quick` runs the same steps against instant echo engines (no cache, no
metrics): it proves the mechanics, its numbers mean nothing."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import re
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import psutil
from prometheus_client.parser import text_string_to_metric_families

from loadtest.bench import TargetSummary, alternating
from serving.backends.process import stop_child, wait_for_url
from serving.backends.vllm import SERVER_MODULE
from serving.bench import plots, vllm_router
from serving.bench.conversations import Turn, Workload, play
from serving.bench.router import start_echo
from serving.bench.section import BenchContext, SectionResult, Target
from serving.bench.session import free_port, start_gateway, stop_gateway, wait_ready

POLICIES = ("round_robin", "least_loaded", "prefix_affinity")
PEER = "vllm-router cache_aware"
REFERENCE = "1 engine, 2 cores"
FULL = Workload(conversations=32, turns=6, users=16, max_tokens=32, document_words=1500)
"""Each conversation carries ~1,750 tokens of its own (a pasted document) beside ~615 shared ones: what a
conversation's replica keeps cached is mostly its own, so sending a turn elsewhere costs a real prefill."""
QUICK = Workload(conversations=4, turns=2, users=2, max_tokens=4, system_words=40, document_words=20)
KV_BLOCKS = 192
"""KV blocks per replica (vLLM's CPU block is 128 tokens: 24,576 tokens): the 8 conversations in flight on a
replica when each stays on one (~19,500 tokens with the shared prompts) fit, the 16 that every replica sees under
`round_robin` (~36,000) do not, and the full workload's ~72,000 distinct tokens fit nowhere; the reference engine
gets twice this."""
MAX_MODEL_LEN = 4096
"""A conversation's last turn is ~2,800 tokens: over the default 2,048 (the model takes 8,192)."""
TTFT_GOAL = 0.5
THROUGHPUT_GOAL = 1.0
PEER_GOAL = 1.0
COUNTERS = {
    "hits": "vllm:prefix_cache_hits_total",
    "queries": "vllm:prefix_cache_queries_total",
    "requests": "vllm:request_success_total",
}


@dataclass
class Measured:
    """A target's rounds: answered turns, wall times, and per engine the counters' growth over the rounds."""

    turns: list[Turn] = field(default_factory=list)
    wall_s: float = 0.0
    counters: dict[str, dict[str, float]] = field(default_factory=dict)
    rounds: list[str] = field(default_factory=list)
    """Each round in a few figures, so a round a neighbour's burst spoiled can be told from a real difference."""

    def add(self, turns: list[Turn], wall_s: float, grown: dict[str, dict[str, float]]) -> None:
        self.turns += turns
        self.wall_s += wall_s
        one = TargetSummary.of("round", [turn.result for turn in turns], wall_s)
        hits, queries = sum(c["hits"] for c in grown.values()), sum(c["queries"] for c in grown.values())
        self.rounds.append(
            f"TTFT p50 {one.ttft_p50_ms:.0f} ms, {one.output_tok_s:.1f} tok/s, hit rate "
            + (f"{hits / queries:.3f}" if queries else "n/a")
        )
        for engine, by_name in grown.items():
            mine = self.counters.setdefault(engine, dict.fromkeys(COUNTERS, 0.0))
            for name, value in by_name.items():
                mine[name] += value

    def row(self, name: str) -> dict[str, object]:
        summary = TargetSummary.of(name, [turn.result for turn in self.turns], self.wall_s or float("nan"))
        hits = sum(c["hits"] for c in self.counters.values())
        queries = sum(c["queries"] for c in self.counters.values())
        served = [c["requests"] for c in self.counters.values()]
        later = [t.result.ttft_s for t in self.turns if t.index > 0 and t.result.ttft_s is not None]
        return {
            "target": name,
            "requests": summary.requests,
            "errors": summary.errors,
            "ttft_p50_ms": summary.ttft_p50_ms,
            "ttft_p95_ms": summary.ttft_p95_ms,
            "ttft_p50_later_turns_ms": 1000 * _median(later),
            "itl_p50_ms": summary.itl_p50_ms,
            "output_tok_s": summary.output_tok_s,
            "prefix_hit_rate": hits / queries if queries else float("nan"),
            "uncached_tokens_per_request": (queries - hits) / sum(served) if queries and sum(served) else float("nan"),
            "busiest_replica_share": max(served) / sum(served) if served and sum(served) else float("nan"),
        }


def _median(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[len(ordered) // 2] if ordered else float("nan")


def counter_totals(metrics_text: str) -> dict[str, float]:
    """The counters this section reads, each summed over its label sets (0.0 when absent)."""
    wanted = {sample: name for name, sample in COUNTERS.items()}
    totals = dict.fromkeys(COUNTERS, 0.0)
    for family in text_string_to_metric_families(metrics_text):
        for sample in family.samples:
            if sample.name in wanted:
                totals[wanted[sample.name]] += sample.value
    return totals


def read_counters(engines: list[str]) -> dict[str, dict[str, float]]:
    """Each engine's counters; the echo engine has no `/metrics` but counts its generations at `/stats`."""
    found = {}
    with httpx.Client(timeout=10) as client:
        for url in engines:
            response = client.get(f"{url}/metrics")
            if response.status_code == 200:
                found[url] = counter_totals(response.text)
            else:
                generations = client.get(f"{url}/stats").raise_for_status().json()["generations"]
                found[url] = {"hits": 0.0, "queries": 0.0, "requests": float(generations)}
    return found


def reset_prefix_caches(engines: list[str]) -> bool:
    """Empty every engine's prefix cache; False where an engine does not offer it (not in vLLM's dev mode)."""
    with httpx.Client(timeout=60) as client:
        return all(client.post(f"{url}/reset_prefix_cache").status_code == 200 for url in engines)


def choice_reasons(gateway: str) -> dict[str, int]:
    """A servekit gateway's replica choices by reason (`servekit_replica_choice_total`), e.g. prefix hits against
    load fallbacks: why `prefix_affinity` sent what where."""
    reasons: dict[str, int] = {}
    for family in text_string_to_metric_families(httpx.get(f"{gateway}/metrics", timeout=10).text):
        for sample in family.samples:
            if sample.name == "servekit_replica_choice_total":
                reason = sample.labels["reason"]
                reasons[reason] = reasons.get(reason, 0) + round(sample.value)
    return reasons


def engine_urls(gateway: subprocess.Popen, count: int, timeout_s: float = 120) -> list[str]:
    """The URLs of the vLLM servers a gateway started as its managed replicas, read from their command lines
    (`/admin/engines` does not show them); waits for `count` of them to be spawned."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        ports = set()
        for child in psutil.Process(gateway.pid).children(recursive=True):
            with contextlib.suppress(psutil.Error):
                args = child.cmdline()
                if SERVER_MODULE in args and "--port" in args:
                    ports.add(int(args[args.index("--port") + 1]))
        if len(ports) >= count:
            return [f"http://127.0.0.1:{port}" for port in sorted(ports)]
        time.sleep(0.5)
    raise TimeoutError(f"the gateway did not start {count} engines in {timeout_s:.0f} s")


def kv_cache_tokens(logs: Path) -> list[str]:
    """What the engines logged as their KV cache size (proof of the override), one entry per engine log."""
    sizes = []
    for log in sorted(logs.rglob("engine-*.log")):
        found = re.findall(r"KV cache size: ([\d,]+) tokens", log.read_text(errors="replace"))
        if found:
            sizes.append(found[-1])
    return sizes


class Fleet:
    """The processes of one run, stopped together at the end (in reverse order of start)."""

    def __init__(self, ctx: BenchContext) -> None:
        self.ctx = ctx
        self.model = ctx.settings.model.name
        self._stops: list[Callable[[], None]] = []

    def __enter__(self) -> Fleet:
        return self

    def __exit__(self, *_: object) -> None:
        while self._stops:
            self._stops.pop()()

    def engines(self, count: int, blocks: int, name: str) -> list[str]:
        """`count` engines: echo engines in quick mode, else a gateway's managed replicas of the default model
        (vLLM's dev mode on, for `/reset_prefix_cache`)."""
        if self.ctx.quick:
            urls = []
            for i in range(count):
                (self.ctx.out / f"{name}-{i}").mkdir(exist_ok=True)
                process, url = start_echo(self.ctx.out / f"{name}-{i}")
                self._stops.append(functools.partial(_stop_echo, process))
                urls.append(url)
            return urls
        env = {
            "SERVEKIT_ENGINE__URL": None, "SERVEKIT_ENGINE__PORT": str(free_port()), "SERVEKIT_ENGINE__URLS": None,
            "SERVEKIT_ENGINE__REPLICAS": str(count), "SERVEKIT_ENGINE__ENABLE_LORA": "false",
            "SERVEKIT_ENGINE__KV_CACHE_SPACE_GIB": "1", "SERVEKIT_ENGINE__MAX_MODEL_LEN": str(MAX_MODEL_LEN),
            "SERVEKIT_ENGINE__EXTRA_ARGS": json.dumps(["--num-gpu-blocks-override", str(blocks)]),
            "SERVEKIT_POOL__POLICY": "round_robin", "VLLM_SERVER_DEV_MODE": "1",
        }  # fmt: skip
        process, _ = self._gateways({name: env})[name]
        urls = engine_urls(process, count)
        for engine in urls:
            wait_for_url(process, f"{engine}/health", timeout_s=900)
        return urls

    def gateways(self, pools: dict[str, tuple[str, list[str]]]) -> dict[str, str]:
        """Servekit gateways, name -> (policy, engines): each pool is its engines' URLs; started side by side."""
        started = self._gateways({
            name: {
                "SERVEKIT_ENGINE__URL": None, "SERVEKIT_ENGINE__REPLICAS": None,
                "SERVEKIT_ENGINE__URLS": json.dumps(engines), "SERVEKIT_ENGINE__ENABLE_LORA": "false",
                "SERVEKIT_ENGINE__MAX_MODEL_LEN": str(MAX_MODEL_LEN),
                "SERVEKIT_POOL__POLICY": policy,
            }
            for name, (policy, engines) in pools.items()
        })  # fmt: skip
        return {name: url for name, (_, url) in started.items()}

    def peer(self, engines: list[str]) -> str:
        executable = vllm_router.binary()
        if executable is None:
            raise FileNotFoundError(vllm_router.MISSING)
        process, url = vllm_router.start(executable, engines, "cache_aware", self.ctx.out / "vllm-router.log")
        self._stops.append(functools.partial(stop_child, process, 30))
        return url

    def _gateways(self, envs: dict[str, dict[str, str | None]]) -> dict[str, tuple[subprocess.Popen, str]]:
        """Start one gateway per name with these `SERVEKIT_*` overrides, all at once, then wait for each."""
        started, logs = {}, {}
        for name, env in envs.items():
            slug = name.replace(" ", "-").replace(",", "")
            logs[name] = self.ctx.out / f"{slug}.log"
            started[name] = start_gateway({**env, "SERVEKIT_HOME": str(self.ctx.out / slug)}, logs[name])
            self._stops.append(functools.partial(stop_gateway, started[name][0]))
        for name, (process, url) in started.items():
            wait_ready(process, url, logs[name], timeout_s=900)
        return started


def _stop_echo(process: subprocess.Popen) -> None:
    process.terminate()
    process.wait()


def measure(ctx: BenchContext, targets: dict[str, str], engines: list[str], rounds: int, workload: Workload) -> dict:
    """`rounds` alternating rounds of the workload against every target, each on freshly emptied caches."""
    measured = {name: Measured() for name in targets}
    task = ctx.progress.add_task("fleet", total=rounds * len(targets))
    for round_index in range(rounds):
        for name in alternating(list(targets), round_index):
            ctx.progress.update(task, description=f"fleet round {round_index + 1}/{rounds}: {name}")
            if not ctx.quick and not reset_prefix_caches(engines):
                raise RuntimeError("an engine refused /reset_prefix_cache (VLLM_SERVER_DEV_MODE off?)")
            before = read_counters(engines)
            turns, wall_s = asyncio.run(play(targets[name], ctx.settings.model.name, workload, f"{name} {round_index}"))
            after = read_counters(engines)
            grown = {url: {k: after[url][k] - before[url][k] for k in COUNTERS} for url in after}
            measured[name].add(turns, wall_s, grown)
            ctx.progress.advance(task)
    ctx.progress.remove_task(task)
    return measured


def run(ctx: BenchContext) -> SectionResult:
    workload, rounds = (QUICK, 1) if ctx.quick else (FULL, 2)
    notes = [
        f"{workload.conversations} conversations x {workload.turns} turns, {workload.users} users in flight, "
        f"{workload.system_prompts} shared system prompts of {workload.system_words} words, a {workload.document_words}"
        f"-word document per conversation, {workload.question_words}-word questions, {workload.max_tokens}-token "
        f"answers (ignore_eos, temperature 0); {rounds} alternating round(s) per target, caches reset before each",
    ]
    measured: dict[str, Measured] = {}
    with Fleet(ctx) as fleet:
        engines = fleet.engines(2, KV_BLOCKS, "replicas")
        pools = {policy: (policy, engines) for policy in POLICIES}
        if ctx.quick:  # echo engines cost no cores: the reference starts with the others, to keep the smoke run short
            pools[REFERENCE] = ("round_robin", fleet.engines(1, 2 * KV_BLOCKS, "reference"))
        targets = fleet.gateways(pools)
        try:
            targets[PEER] = fleet.peer(engines)
        except FileNotFoundError as missing:
            notes.append(f"{PEER}: {missing}")
        reference = {REFERENCE: targets.pop(REFERENCE)} if ctx.quick else {}
        measured |= measure(ctx, targets, engines, rounds, workload)
        for policy in POLICIES:
            reasons = ", ".join(f"{why} {count}" for why, count in sorted(choice_reasons(targets[policy]).items()))
            notes.append(f"{policy}: replica choices by reason (warm-up included): {reasons}")
        if reference:
            measured |= measure(ctx, reference, pools[REFERENCE][1], rounds, workload)
    if not ctx.quick:  # the replicas are gone: one engine gets both cores and their KV cache
        with Fleet(ctx) as fleet:
            single = fleet.engines(1, 2 * KV_BLOCKS, "reference")
            gateway = fleet.gateways({REFERENCE: ("round_robin", single)})
            measured |= measure(ctx, gateway, single, rounds, workload)
    notes += [f"{name} per round: " + "; ".join(measured[name].rounds) for name in measured]
    notes.append(f"engines' KV cache (tokens, from their logs): {', '.join(kv_cache_tokens(ctx.out)) or 'n/a'}")
    rows = [measured[name].row(name) if name in measured else _missing(name) for name in (*POLICIES, PEER, REFERENCE)]
    return SectionResult("fleet", rows, targets_of(rows, notes), [plot(ctx.out, rows, workload)], notes)


def _missing(name: str) -> dict[str, object]:
    nan = float("nan")
    return {
        "target": f"{name} (not installed)", "requests": 0, "errors": 0, "ttft_p50_ms": nan, "ttft_p95_ms": nan,
        "ttft_p50_later_turns_ms": nan, "itl_p50_ms": nan, "output_tok_s": nan, "prefix_hit_rate": nan,
        "uncached_tokens_per_request": nan, "busiest_replica_share": nan,
    }  # fmt: skip


def targets_of(rows: list[dict[str, object]], notes: list[str]) -> list[Target]:
    by = {str(row["target"]): row for row in rows}
    ours, rr = by["prefix_affinity"], by["round_robin"]
    ttft = float(ours["ttft_p50_ms"]) / float(rr["ttft_p50_ms"])
    speed = float(ours["output_tok_s"]) / float(rr["output_tok_s"])
    targets = [
        Target("TTFT p50 prefix_affinity / round_robin", ttft, f"<= {TTFT_GOAL}x", ttft <= TTFT_GOAL),
        Target("output tok/s prefix_affinity / round_robin", speed, f">= {THROUGHPUT_GOAL}x", speed >= THROUGHPUT_GOAL),
    ]
    if PEER in by:
        peer = float(ours["ttft_p50_ms"]) / float(by[PEER]["ttft_p50_ms"])
        targets.append(Target(f"TTFT p50 prefix_affinity / {PEER}", peer, f"<= {PEER_GOAL}x", peer <= PEER_GOAL))
    else:
        notes.append(f"no ratio against {PEER}: it did not run")
    return targets


def plot(out: Path, rows: list[dict[str, object]], workload: Workload) -> Path:
    names = [re.sub(r"_| (?=cache_aware|\(not)|, ", "\n", str(row["target"])) for row in rows]  # narrow labels

    def series(*fields: str) -> dict[str, list[float]]:
        return {f.removesuffix("_ms").replace("_", " "): [float(row[f]) for row in rows] for f in fields}

    return plots.bars(
        out / "fleet.png",
        f"Replica choice over two 1-core replicas: {workload.conversations} chats x {workload.turns} turns, "
        f"{workload.users} users (last: one engine on both cores)",
        [
            ("TTFT ms", series("ttft_p50_ms", "ttft_p95_ms"), names),
            ("ITL p50 ms", series("itl_p50_ms"), names),
            ("output tokens/s", series("output_tok_s"), names),
            ("prefix-cache hit rate", series("prefix_hit_rate"), names),
            ("prompt tokens computed per request", series("uncached_tokens_per_request"), names),
            ("busiest replica's share of requests", series("busiest_replica_share"), names),
        ],
    )
