"""Side-by-side streaming measurement of OpenAI endpoints (HTTP only): what `servekit bench` compares with.

Rounds alternate the order (A B, B A, ...) so drift on a noisy machine cancels out, and round i of each target
forms a pair that `Paired` compares; every request generates exactly `max_tokens` (`ignore_eos`), so targets do
equal work."""

from __future__ import annotations

import statistics
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import httpx
from prometheus_client.parser import text_string_to_metric_families
from rich.console import Console
from rich.progress import Progress

from loadtest.stream_client import StreamResult, run_concurrent

TOPICS = (
    "the ocean", "a lighthouse", "bread baking", "the moon", "mountain trails", "a library", "rainy cities",
    "old trains", "honeybees", "desert nights", "a violin", "winter markets", "coral reefs", "paper maps",
    "thunderstorms", "tea ceremonies",
)  # fmt: skip
console = Console()


def prompts(count: int) -> list[str]:
    return [f"Write a long, detailed story about {TOPICS[i % len(TOPICS)]} (#{i})." for i in range(count)]


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    return statistics.quantiles(values, n=100, method="inclusive")[int(q) - 1] if len(values) > 1 else values[0]


def median_or_nan(values: list[float]) -> float:
    """The median; NaN when nothing was measured, so the gap shows in tables and plots instead of failing."""
    return statistics.median(values) if values else float("nan")


@dataclass
class TargetSummary:
    name: str
    requests: int
    errors: int
    output_tokens: int
    wall_s: float
    output_tok_s: float
    req_s: float
    ttft_p50_ms: float
    ttft_p95_ms: float
    itl_p50_ms: float
    itl_p95_ms: float

    @classmethod
    def of(cls, name: str, results: list[StreamResult], wall_s: float) -> TargetSummary:
        ok = [r for r in results if r.ok]
        ttfts = [r.ttft_s for r in ok if r.ttft_s is not None]
        itls = [gap for r in ok for gap in r.inter_token_latencies]
        tokens = sum(r.output_tokens for r in ok)
        return cls(
            name=name,
            requests=len(results),
            errors=len(results) - len(ok),
            output_tokens=tokens,
            wall_s=wall_s,
            output_tok_s=tokens / wall_s,
            req_s=len(ok) / wall_s,
            ttft_p50_ms=1000 * percentile(ttfts, 50),
            ttft_p95_ms=1000 * percentile(ttfts, 95),
            itl_p50_ms=1000 * percentile(itls, 50),
            itl_p95_ms=1000 * percentile(itls, 95),
        )


ENGINE_TTFT = "vllm:time_to_first_token_seconds"


@dataclass
class Round:
    """One target's streams in one round, the round's wall time and, when the engine's metrics were read around
    the round, the mean time to first token the engine itself measured for those streams."""

    results: list[StreamResult]
    wall_s: float
    engine_ttft_s: float | None = None

    @property
    def outside_engine_ttft_ms(self) -> float | None:
        """Mean time to first token spent outside the engine (HTTP, gateway, loopback): what the client saw minus
        what the engine saw, in the mean. It is ms-sized and steady where TTFT itself swings by a prefill step, so
        two targets' difference shows a few ms of path cost where the TTFT's cannot. Under concurrency it is not
        additive to TTFT: a request delayed on its way in partly waits out time it would have waited for its
        prefill batch anyway."""
        ttfts = [r.ttft_s for r in self.results if r.ok and r.ttft_s is not None]
        if self.engine_ttft_s is None or not ttfts:
            return None
        return 1000 * (statistics.fmean(ttfts) - self.engine_ttft_s)


async def metric_sums(client: httpx.AsyncClient, metrics_url: str, names: tuple[str, ...]) -> dict[str, float]:
    """Each named sample summed over its series, from one scrape (0.0 for a name the server does not expose)."""
    response = await client.get(metrics_url)
    response.raise_for_status()
    totals = dict.fromkeys(names, 0.0)
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            if sample.name in totals:
                totals[sample.name] += sample.value
    return totals


async def engine_ttft_totals(client: httpx.AsyncClient, metrics_url: str) -> tuple[float, float]:
    """(sum of seconds, count) of vLLM's own time-to-first-token histogram, over all its series."""
    totals = await metric_sums(client, metrics_url, (f"{ENGINE_TTFT}_sum", f"{ENGINE_TTFT}_count"))
    return totals[f"{ENGINE_TTFT}_sum"], totals[f"{ENGINE_TTFT}_count"]


async def measure_round(
    url: str, model: str, batch: list[str], max_tokens: int, concurrency: int, engine_metrics_url: str | None
) -> Round:
    """One round of streams; with `engine_metrics_url`, the engine's TTFT histogram is read before and after, and
    its mean kept if the engine counted exactly this round's first tokens (nothing else ran)."""
    extra = {"ignore_eos": True, "temperature": 0}  # every request generates exactly max_tokens
    if engine_metrics_url is None:
        return Round(*await run_concurrent(url, model, batch, max_tokens, concurrency, extra))
    async with httpx.AsyncClient(timeout=30) as client:
        before = await engine_ttft_totals(client, engine_metrics_url)
        results, wall_s = await run_concurrent(url, model, batch, max_tokens, concurrency, extra)
        after = await engine_ttft_totals(client, engine_metrics_url)
    seconds, count = after[0] - before[0], after[1] - before[1]
    started = sum(1 for r in results if r.ttft_s is not None)
    return Round(results, wall_s, seconds / count if count and count == started else None)


async def run_rounds(
    targets: dict[str, str],
    model: str,
    concurrency: int,
    max_tokens: int,
    rounds: int,
    requests: int | None = None,
    progress: Progress | None = None,
    models: dict[str, str | list[str]] | None = None,
    engine_metrics_url: str | None = None,
) -> dict[str, list[Round]]:
    """Run `rounds` alternating rounds of `requests` streams (default: `concurrency`), at most `concurrency` in
    flight, against each target (URL). Round i of every target ran back to back with the others: a pair.
    `models` overrides `model` for some targets; `engine_metrics_url` (the /metrics of the one engine behind every
    target) adds the engine's own TTFT to each round."""
    chosen = {name: (models or {}).get(name, model) for name in targets}
    batch = prompts(requests or concurrency)
    measured: dict[str, list[Round]] = {name: [] for name in targets}
    names = list(targets)
    with progress_task(progress, f"c={concurrency} warm-up", rounds * len(names) + len(names)) as (bar, task):
        for name in names:
            await measure_round(targets[name], chosen[name], batch[:4], 8, 4, None)
            bar.advance(task)
        for round_index in range(rounds):
            for name in alternating(names, round_index):
                bar.update(task, description=f"c={concurrency} round {round_index + 1}/{rounds}: {name}")
                measured[name].append(
                    await measure_round(targets[name], chosen[name], batch, max_tokens, concurrency, engine_metrics_url)
                )
                bar.advance(task)
    return measured


@contextmanager
def progress_task(progress: Progress | None, description: str, total: int) -> Iterator[tuple[Progress, int]]:
    """A task on the caller's progress display, or on one of its own (started and stopped here)."""
    owned = progress is None
    bar = progress or Progress(console=console)
    if owned:
        bar.start()
    task = bar.add_task(description, total=total)
    try:
        yield bar, task
    finally:
        bar.remove_task(task)
        if owned:
            bar.stop()


def alternating(names: list[str], index: int) -> list[str]:
    """The order of round `index`: A B, then B A, so a drifting machine favours neither side."""
    return names if index % 2 == 0 else names[::-1]


PROCESS_CPU = "process_cpu_seconds_total"


async def cpu_per_request(
    targets: dict[str, str],
    processes: dict[str, str],
    model: str,
    concurrency: int,
    bursts: int,
    blocks: int,
    progress: Progress | None = None,
) -> dict[str, dict[str, float]]:
    """Milliseconds of CPU per request that each process spent while one target served, per target and process.

    `processes` maps a name to a /metrics URL with the Prometheus client's `process_cpu_seconds_total` (servekit's
    gateway and vLLM's API server both expose one). Each target serves `blocks` alternating blocks of `bursts`
    bursts of `concurrency` one-token streams; the counters are read only around whole blocks, so the scrapes' own
    cost and the counter's 10 ms resolution stay small against a block's requests. Median over blocks."""
    batch = prompts(concurrency)
    names = list(targets)
    spent: dict[str, dict[str, list[float]]] = {name: {process: [] for process in processes} for name in names}
    async with httpx.AsyncClient(timeout=30) as client:

        async def counters() -> dict[str, float]:
            return {
                process: (await metric_sums(client, url, (PROCESS_CPU,)))[PROCESS_CPU]
                for process, url in processes.items()
            }

        with progress_task(progress, "CPU per request", blocks * len(names)) as (bar, task):
            for block in range(blocks):
                for name in alternating(names, block):
                    bar.update(task, description=f"CPU per request, block {block + 1}/{blocks}: {name}")
                    before, served = await counters(), 0
                    for _ in range(bursts):
                        burst = await measure_round(targets[name], model, batch, 1, concurrency, None)
                        served += sum(result.ok for result in burst.results)
                    after = await counters()
                    if not served:
                        raise RuntimeError(f"no request to {name} succeeded while measuring CPU per request")
                    for process in processes:
                        spent[name][process].append(1000 * (after[process] - before[process]) / served)
                    bar.advance(task)
    return {name: {process: statistics.median(ms) for process, ms in by.items()} for name, by in spent.items()}


def summarise(name: str, rounds: list[Round]) -> TargetSummary:
    """All of a target's rounds as one summary (tokens over the summed wall time)."""
    return TargetSummary.of(name, [r for one in rounds for r in one.results], sum(one.wall_s for one in rounds))


def summaries(measured: dict[str, list[Round]]) -> dict[str, TargetSummary]:
    """Each target's rounds aggregated into one summary."""
    return {name: summarise(name, rounds) for name, rounds in measured.items()}


@dataclass
class Paired:
    """A candidate against a baseline pair by pair (rounds run back to back). A slow minute on a shared machine
    hits both sides of a pair, and the median over pairs ignores the pair a neighbour's burst spoiled: an
    aggregate over rounds would carry it."""

    throughput_ratios: list[float]
    ttft_p50_overheads_ms: list[float]
    outside_engine_overheads_ms: list[float]
    """Per pair, the candidate's mean TTFT outside the engine minus the baseline's (pairs where both sides have
    the engine's figure)."""

    @classmethod
    def of(cls, candidate: list[Round], baseline: list[Round]) -> Paired:
        rounds = list(zip(candidate, baseline, strict=True))
        pairs = [(summarise("candidate", [c]), summarise("baseline", [b])) for c, b in rounds]
        outside = [(c.outside_engine_ttft_ms, b.outside_engine_ttft_ms) for c, b in rounds]
        return cls(
            throughput_ratios=[c.output_tok_s / b.output_tok_s for c, b in pairs],
            ttft_p50_overheads_ms=[c.ttft_p50_ms - b.ttft_p50_ms for c, b in pairs],
            outside_engine_overheads_ms=[c - b for c, b in outside if c is not None and b is not None],
        )

    @property
    def throughput_ratio(self) -> float:
        return statistics.median(self.throughput_ratios)

    @property
    def ttft_p50_overhead_ms(self) -> float:
        return statistics.median(self.ttft_p50_overheads_ms)

    @property
    def outside_engine_overhead_ms(self) -> float:
        """Median over pairs; NaN when no pair had the engine's figure."""
        return median_or_nan(self.outside_engine_overheads_ms)
