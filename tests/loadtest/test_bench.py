"""The benchmark harness: summaries from timed streams, and a smoke run against the real server and its engine
(no speed assertion: speed is reported by `servekit bench`, not tested)."""

from __future__ import annotations

import asyncio
import math

import pytest

from loadtest.bench import Paired, Round, TargetSummary, cpu_per_request, run_rounds, summaries, summarise
from loadtest.stream_client import StreamResult


def test_summary_from_timed_streams():
    results = [
        StreamResult(
            ok=True, started=0.0, first_token_at=0.1, finished=1.0, token_times=[0.1, 0.2, 0.4], output_tokens=3
        ),
        StreamResult(ok=True, started=0.0, first_token_at=0.3, finished=1.0, token_times=[0.3, 0.5], output_tokens=2),
        StreamResult(ok=False, started=0.0, error="HTTP 503"),
    ]
    summary = TargetSummary.of("t", results, wall_s=2.0)
    assert (summary.requests, summary.errors, summary.output_tokens) == (3, 1, 5)
    assert summary.output_tok_s == 2.5
    assert summary.req_s == 1.0
    assert 100 <= summary.ttft_p50_ms <= 300
    assert 100 <= summary.itl_p50_ms <= 200


def streams(ttft_s: float, tokens: int) -> list[StreamResult]:
    """Two streams that finish after 1 s with `tokens` tokens each, the first one after `ttft_s`."""
    times = [ttft_s + i * 0.01 for i in range(tokens)]
    return [
        StreamResult(ok=True, started=0.0, first_token_at=ttft_s, finished=1.0, token_times=times, output_tokens=tokens)
        for _ in range(2)
    ]


def test_pairs_compare_round_by_round_and_the_median_ignores_one_spoiled_pair():
    baseline = [Round(streams(0.100, 10), 1.0), Round(streams(0.100, 10), 1.0), Round(streams(0.100, 10), 1.0)]
    # The candidate's second round ran during a neighbour's burst: half the throughput, 500 ms later.
    candidate = [Round(streams(0.102, 10), 1.0), Round(streams(0.600, 10), 2.0), Round(streams(0.104, 10), 1.0)]
    paired = Paired.of(candidate, baseline)
    assert paired.throughput_ratios == [1.0, 0.5, 1.0]
    assert paired.throughput_ratio == 1.0
    assert [round(o, 6) for o in paired.ttft_p50_overheads_ms] == [2.0, 500.0, 4.0]
    assert round(paired.ttft_p50_overhead_ms, 6) == 4.0
    # The aggregate over rounds carries the spoiled pair.
    assert summarise("c", candidate).output_tok_s / summarise("b", baseline).output_tok_s == 0.75
    # Without the engine's own TTFT there is nothing outside the engine to compare.
    assert paired.outside_engine_overheads_ms == []
    assert math.isnan(paired.outside_engine_overhead_ms)


def test_time_outside_the_engine_subtracts_what_the_engine_measured_and_cancels_its_swing():
    # Round 2 of both sides prefilled 500 ms slower: TTFT p50 moves, the time outside the engine does not.
    baseline = [Round(streams(0.100, 4), 1.0, engine_ttft_s=0.098), Round(streams(0.600, 4), 1.0, engine_ttft_s=0.598)]
    candidate = [Round(streams(0.103, 4), 1.0, engine_ttft_s=0.100), Round(streams(0.350, 4), 1.0, engine_ttft_s=0.346)]
    assert round(baseline[0].outside_engine_ttft_ms, 6) == 2.0
    paired = Paired.of(candidate, baseline)
    assert [round(o, 6) for o in paired.ttft_p50_overheads_ms] == [3.0, -250.0]
    assert [round(o, 6) for o in paired.outside_engine_overheads_ms] == [1.0, 2.0]
    assert round(paired.outside_engine_overhead_ms, 6) == 1.5
    # A round whose engine figure is missing (the engine counted other requests too) leaves its pair out.
    candidate[1].engine_ttft_s = None
    assert [round(o, 6) for o in Paired.of(candidate, baseline).outside_engine_overheads_ms] == [1.0]


def test_pairs_need_rounds_of_both_sides():
    with pytest.raises(ValueError):
        Paired.of([Round(streams(0.1, 1), 1.0)], [])


def test_gateway_comparison_against_the_real_server_and_its_engine(server):
    targets = {"servekit": server.base_url, "raw-vllm": server.engine_url}
    measured = asyncio.run(
        run_rounds(
            targets, "smollm2-135m-instruct", concurrency=2, max_tokens=4, rounds=2, requests=3,
            engine_metrics_url=f"{server.engine_url}/metrics",
        )
    )  # fmt: skip
    assert all(
        s.errors == 0 and s.requests == 2 * 3 and s.output_tokens == 2 * 3 * 4 for s in summaries(measured).values()
    )
    for rounds in measured.values():  # each round kept apart, for pairing
        assert [len(one.results) for one in rounds] == [3, 3]
        assert all(one.wall_s > 0 and all(r.ok and r.output_tokens == 4 for r in one.results) for one in rounds)
        for one in rounds:  # the engine counted this round's requests: its TTFT nests inside the client's
            client_ttft_ms = 1000 * sum(r.ttft_s for r in one.results) / len(one.results)
            assert one.engine_ttft_s > 0
            assert 0 < one.outside_engine_ttft_ms < client_ttft_ms
    paired = Paired.of(measured["servekit"], measured["raw-vllm"])
    assert len(paired.throughput_ratios) == len(paired.ttft_p50_overheads_ms) == 2
    assert len(paired.outside_engine_overheads_ms) == 2


def test_cpu_per_request_charges_each_process_for_the_requests_it_handled(server):
    spent = asyncio.run(
        cpu_per_request(
            {"servekit": server.base_url, "raw-vllm": server.engine_url},
            {"gateway": f"{server.base_url}/metrics", "engine server": f"{server.engine_url}/metrics"},
            "smollm2-135m-instruct", concurrency=4, bursts=8, blocks=1,
        )
    )  # fmt: skip
    # Requests on either path pass through vLLM's API server; only those sent to servekit pass through the gateway
    # (which otherwise only runs its engine health checks).
    assert spent["servekit"]["engine server"] > 0 and spent["raw-vllm"]["engine server"] > 0
    assert spent["servekit"]["gateway"] > spent["raw-vllm"]["gateway"]
