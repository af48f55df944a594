"""The fleet section: its workload, its reading of the engines' counters, and a quick run end to end against echo
engines (servekit gateways, and vllm-router where installed; no real engine)."""

from __future__ import annotations

import math

import pytest
from PIL import Image
from rich.progress import Progress

from serving.bench import fleet, vllm_router
from serving.bench.conversations import Workload, scripts
from serving.bench.section import BenchContext
from serving.settings import Settings

VLLM_METRICS = """\
# HELP vllm:prefix_cache_queries_total Prefix cache queries, in terms of number of queried tokens.
# TYPE vllm:prefix_cache_queries_total counter
vllm:prefix_cache_queries_total{engine="0",model_name="m"} 1200.0
# HELP vllm:prefix_cache_hits_total Prefix cache hits, in terms of number of cached tokens.
# TYPE vllm:prefix_cache_hits_total counter
vllm:prefix_cache_hits_total{engine="0",model_name="m"} 900.0
# HELP vllm:request_success_total Count of successfully processed requests.
# TYPE vllm:request_success_total counter
vllm:request_success_total{engine="0",finished_reason="length",model_name="m"} 7.0
vllm:request_success_total{engine="0",finished_reason="stop",model_name="m"} 3.0
"""


def test_counters_are_read_from_vllm_metrics_and_summed_over_label_sets():
    assert fleet.counter_totals(VLLM_METRICS) == {"hits": 900.0, "queries": 1200.0, "requests": 10.0}
    assert fleet.counter_totals("") == {"hits": 0.0, "queries": 0.0, "requests": 0.0}


def test_conversations_share_system_prompts_within_a_round_and_nothing_across_rounds():
    workload = Workload(conversations=6, turns=3, users=2, max_tokens=4, system_prompts=2)
    first, second = scripts(workload, "a"), scripts(workload, "b")
    assert len(first) == 6 and all(len(chat) == 1 + 3 for chat in first)
    assert first[0][0] == first[2][0] != first[1][0]  # conversation i opens with system prompt i % 2
    assert "document" in first[0][1] and "document" not in first[0][2]  # the document comes with turn 1 only
    assert len({chat[1] for chat in first}) == 6  # every conversation's own document
    assert all(a[0][:4] != b[0][:4] for a, b in zip(first, second, strict=True))  # the salt opens the prompt


def test_hit_rate_and_the_busiest_replicas_share_come_from_the_counters_growth():
    measured = fleet.Measured()
    measured.add(
        [],
        2.0,
        {
            "a": {"hits": 30.0, "queries": 100.0, "requests": 6.0},
            "b": {"hits": 10.0, "queries": 100.0, "requests": 2.0},
        },
    )
    measured.add(
        [],
        2.0,
        {"a": {"hits": 0.0, "queries": 0.0, "requests": 0.0}, "b": {"hits": 0.0, "queries": 0.0, "requests": 0.0}},
    )
    row = measured.row("x")
    assert row["prefix_hit_rate"] == pytest.approx(0.2)
    assert row["busiest_replica_share"] == pytest.approx(0.75)
    assert row["uncached_tokens_per_request"] == pytest.approx(160 / 8)  # 200 queried, 40 hit, 8 served
    assert len(measured.rounds) == 2 and "hit rate 0.200" in measured.rounds[0]


@pytest.mark.timeout(400)
def test_quick_run_measures_every_target_over_the_same_two_engines(tmp_path):
    ctx = BenchContext(Settings(), tmp_path, quick=True, progress=Progress(), session=None)
    result = fleet.run(ctx)
    rows = {str(row["target"]).removesuffix(" (not installed)"): row for row in result.rows}
    assert list(rows) == [*fleet.POLICIES, fleet.PEER, fleet.REFERENCE]
    played = fleet.QUICK.conversations * fleet.QUICK.turns
    measured = [name for name in rows if vllm_router.binary() is not None or name != fleet.PEER]
    for name in measured:
        assert rows[name]["requests"] == played and rows[name]["errors"] == 0, name
        assert rows[name]["output_tok_s"] > 0 and rows[name]["ttft_p50_ms"] > 0, name
    assert rows["round_robin"]["busiest_replica_share"] == 0.5  # in turn over the two engines
    assert rows[fleet.REFERENCE]["busiest_replica_share"] == 1.0  # one engine
    names = [target.name for target in result.targets]
    assert names[:2] == ["TTFT p50 prefix_affinity / round_robin", "output tok/s prefix_affinity / round_robin"]
    if vllm_router.binary() is None:
        assert math.isnan(rows[fleet.PEER]["ttft_p50_ms"]) and len(names) == 2
        assert any(vllm_router.MISSING in note for note in result.notes)
    else:
        assert names[2] == f"TTFT p50 prefix_affinity / {fleet.PEER}"
    width, height = Image.open(result.plots[0]).size
    assert width > 500 and height > 300


def test_without_vllm_router_the_peer_is_refused_with_how_to_install_it(tmp_path, monkeypatch):
    monkeypatch.setattr(vllm_router, "binary", lambda: None)
    ctx = BenchContext(Settings(), tmp_path, quick=True, progress=Progress(), session=None)
    with fleet.Fleet(ctx) as nothing_started, pytest.raises(FileNotFoundError, match="make vllm-router-setup"):
        nothing_started.peer(["http://127.0.0.1:9"])
    rows = [fleet._missing(name) for name in (*fleet.POLICIES, fleet.PEER)]
    rows[:3] = [
        {**row, "target": name, "ttft_p50_ms": 10.0, "output_tok_s": 5.0}
        for row, name in zip(rows[:3], fleet.POLICIES, strict=True)
    ]
    notes: list[str] = []
    assert len(fleet.targets_of(rows, notes)) == 2 and notes == [f"no ratio against {fleet.PEER}: it did not run"]
