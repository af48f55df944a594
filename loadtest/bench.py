"""Gateway benchmark: servekit vs the raw vLLM OpenAI server behind it, measured side by side in one run.

Both targets are the same engine process (servekit's managed child, identical engine args), so the ratio is
the gateway's own cost. Rounds alternate the order (A B, B A, ...) so drift on a noisy machine cancels out.

    python -m loadtest.bench gateway --servekit-url http://127.0.0.1:3000 --raw-url http://127.0.0.1:8100
"""

from __future__ import annotations

import asyncio
import json
import statistics
from dataclasses import asdict, dataclass
from pathlib import Path

import typer
from rich.console import Console
from rich.progress import Progress
from rich.table import Table

from loadtest.stream_client import StreamResult, run_concurrent

TOPICS = (
    "the ocean", "a lighthouse", "bread baking", "the moon", "mountain trails", "a library", "rainy cities",
    "old trains", "honeybees", "desert nights", "a violin", "winter markets", "coral reefs", "paper maps",
    "thunderstorms", "tea ceremonies",
)  # fmt: skip
console = Console()
app = typer.Typer(no_args_is_help=True, help="Benchmarks that compare targets side by side in one run.")


@app.callback()
def bench() -> None:
    """Keeps `gateway` a subcommand (more benchmarks join it)."""


def prompts(count: int) -> list[str]:
    return [f"Write a long, detailed story about {TOPICS[i % len(TOPICS)]} (#{i})." for i in range(count)]


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    return statistics.quantiles(values, n=100, method="inclusive")[int(q) - 1] if len(values) > 1 else values[0]


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


async def compare_gateway(
    targets: dict[str, str], model: str, concurrency: int, max_tokens: int, rounds: int
) -> dict[str, TargetSummary]:
    """Run `rounds` alternating rounds of `concurrency` streams against each target; aggregate per target."""
    batch = prompts(concurrency)
    extra = {"ignore_eos": True, "temperature": 0}  # every request generates exactly max_tokens
    collected: dict[str, tuple[list[StreamResult], float]] = {name: ([], 0.0) for name in targets}
    names = list(targets)
    with Progress(console=console) as progress:
        task = progress.add_task("warm-up", total=rounds * len(names) + len(names))
        for name in names:
            await run_concurrent(targets[name], model, batch[:4], 8, 4, extra)
            progress.advance(task)
        for round_index in range(rounds):
            for name in names if round_index % 2 == 0 else reversed(names):
                progress.update(task, description=f"round {round_index + 1}/{rounds}: {name}")
                results, wall = await run_concurrent(targets[name], model, batch, max_tokens, concurrency, extra)
                previous, previous_wall = collected[name]
                collected[name] = (previous + results, previous_wall + wall)
                progress.advance(task)
    return {name: TargetSummary.of(name, *collected[name]) for name in names}


def ratios(candidate: TargetSummary, baseline: TargetSummary) -> dict[str, float]:
    return {
        "throughput_ratio": candidate.output_tok_s / baseline.output_tok_s,
        "req_s_ratio": candidate.req_s / baseline.req_s,
        "ttft_p50_overhead_ms": candidate.ttft_p50_ms - baseline.ttft_p50_ms,
        "ttft_p95_overhead_ms": candidate.ttft_p95_ms - baseline.ttft_p95_ms,
    }


def markdown_table(summaries: dict[str, TargetSummary], ratio: dict[str, float]) -> str:
    rows = [
        "| target | output tok/s | req/s | TTFT p50 ms | TTFT p95 ms | ITL p50 ms | ITL p95 ms | errors |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for s in summaries.values():
        rows.append(
            f"| {s.name} | {s.output_tok_s:.1f} | {s.req_s:.2f} | {s.ttft_p50_ms:.1f} | {s.ttft_p95_ms:.1f} "
            f"| {s.itl_p50_ms:.1f} | {s.itl_p95_ms:.1f} | {s.errors} |"
        )
    rows.append("")
    rows.append(
        f"servekit/raw throughput **{ratio['throughput_ratio']:.3f}x** (target >= 0.97), "
        f"TTFT p50 overhead **{ratio['ttft_p50_overhead_ms']:+.1f} ms** (target <= 5 ms)"
    )
    return "\n".join(rows) + "\n"


def plot(summaries: dict[str, TargetSummary], ratio: dict[str, float], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(summaries)
    fig, axes = plt.subplots(1, 3, figsize=(13, 4))
    panels = [
        ("output tokens/s", [summaries[n].output_tok_s for n in names]),
        ("TTFT ms (p50 / p95)", None),
        ("ITL ms (p50 / p95)", None),
    ]
    axes[0].bar(names, panels[0][1], color=["#3b7dd8", "#9aa5b1"])
    axes[0].set_title(panels[0][0])
    for axis, (title, _), (p50, p95) in zip(
        axes[1:], panels[1:], [("ttft_p50_ms", "ttft_p95_ms"), ("itl_p50_ms", "itl_p95_ms")], strict=True
    ):
        x = range(len(names))
        axis.bar([i - 0.2 for i in x], [getattr(summaries[n], p50) for n in names], 0.4, label="p50")
        axis.bar([i + 0.2 for i in x], [getattr(summaries[n], p95) for n in names], 0.4, label="p95")
        axis.set_xticks(list(x), names)
        axis.set_title(title)
        axis.legend()
    fig.suptitle(
        f"servekit vs raw vLLM, same engine, alternating rounds: throughput ratio {ratio['throughput_ratio']:.3f}x, "
        f"TTFT p50 overhead {ratio['ttft_p50_overhead_ms']:+.0f} ms"
    )
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_report(summaries: dict[str, TargetSummary], settings: dict, out: Path) -> dict:
    out.mkdir(parents=True, exist_ok=True)
    names = list(summaries)
    ratio = ratios(summaries[names[0]], summaries[names[1]])
    report = {"settings": settings, "targets": {n: asdict(s) for n, s in summaries.items()}, "ratios": ratio}
    (out / "bench.json").write_text(json.dumps(report, indent=2))
    (out / "bench.md").write_text(markdown_table(summaries, ratio))
    plot(summaries, ratio, out / "bench.png")
    return report


def print_summary(summaries: dict[str, TargetSummary], ratio: dict[str, float]) -> None:
    table = Table("target", "tok/s", "req/s", "TTFT p50", "TTFT p95", "ITL p50", "ITL p95", "errors")
    for s in summaries.values():
        table.add_row(
            s.name, f"{s.output_tok_s:.1f}", f"{s.req_s:.2f}", f"{s.ttft_p50_ms:.1f} ms", f"{s.ttft_p95_ms:.1f} ms",
            f"{s.itl_p50_ms:.1f} ms", f"{s.itl_p95_ms:.1f} ms", str(s.errors),
        )  # fmt: skip
    console.print(table)
    console.print(
        f"throughput ratio servekit/raw = {ratio['throughput_ratio']:.3f}, "
        f"TTFT p50 overhead = {ratio['ttft_p50_overhead_ms']:+.1f} ms"
    )


def run_gateway_bench(
    servekit_url: str, raw_url: str, model: str, concurrency: int, max_tokens: int, rounds: int, out: Path
) -> dict:
    summaries = asyncio.run(
        compare_gateway({"servekit": servekit_url, "raw-vllm": raw_url}, model, concurrency, max_tokens, rounds)
    )
    settings = {"model": model, "concurrency": concurrency, "max_tokens": max_tokens, "rounds": rounds}
    report = write_report(summaries, settings, out)
    print_summary(summaries, report["ratios"])
    console.print(f"wrote {out}/bench.json, bench.md, bench.png")
    return report


@app.command()
def gateway(
    servekit_url: str = typer.Option("http://127.0.0.1:3000"),
    raw_url: str = typer.Option("http://127.0.0.1:8100", help="The engine servekit runs (engine.port)."),
    model: str = typer.Option("smollm2-135m-instruct"),
    concurrency: int = typer.Option(32),
    max_tokens: int = typer.Option(128),
    rounds: int = typer.Option(4),
    out: Path = typer.Option(Path("bench-out")),
) -> None:
    """servekit vs the raw engine: output tok/s, TTFT, ITL, req/s and their ratios."""
    run_gateway_bench(servekit_url, raw_url, model, concurrency, max_tokens, rounds, out)


if __name__ == "__main__":
    app()
