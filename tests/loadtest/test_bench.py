"""The benchmark harness: summaries from timed streams, and a smoke run against the real server and its engine
(no speed assertion: speed is reported by `servekit bench`, not tested)."""

from __future__ import annotations

import asyncio

from loadtest.bench import TargetSummary, compare_gateway
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


def test_gateway_comparison_against_the_real_server_and_its_engine(server):
    targets = {"servekit": server.base_url, "raw-vllm": server.engine_url}
    summaries = asyncio.run(
        compare_gateway(targets, "smollm2-135m-instruct", concurrency=2, max_tokens=4, rounds=2, requests=3)
    )
    assert all(s.errors == 0 and s.requests == 2 * 3 and s.output_tokens == 2 * 3 * 4 for s in summaries.values())
