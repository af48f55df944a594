"""`servekit bench --quick` against the session's real server and engine: every section runs and writes its
table, targets and plots (numbers are not asserted: speed is reported by the bench, not tested)."""

from __future__ import annotations

import json
import math
from dataclasses import asdict

import pytest
from PIL import Image
from rich.progress import Progress

from serving.bench import baseline, harness
from serving.bench.section import BenchContext, SectionResult, Target


def test_markdown_lists_every_target_and_failed_section():
    router = SectionResult("router", [{"measure": "m", "p50": 1.5}], [Target("p99", 3.0, "<= 50", True)], [])
    report = {
        "machine": {"cpu": "cpu", "cores": 2, "memory_gib": 1.0, "python": "3.11", "packages": {}, "commit": "abc",
                    "date": "today"},
        "quick": False,
        "sections": {
            "router": {**asdict(router), "seconds": 1.0},
            "lora": {"name": "lora", "error": "RuntimeError('engine died')", "seconds": 2.0},
        },
    }  # fmt: skip
    text = harness.markdown(report)
    assert "| router | p99 | 3 | <= 50 | ✅ |" in text
    assert "| lora | section failed: `RuntimeError('engine died')`" in text
    assert "| measure | p50 |" in text and "| m | 1.5 |" in text


RUN_HERE = [name for name in harness.SECTIONS if name != "fleet"]
"""fleet's quick run (five gateways on echo engines, ~70 s) is its own test (test_fleet.py): it needs no engine."""


@pytest.fixture(scope="module")
def quick_report(server, settings, tmp_path_factory):
    out = tmp_path_factory.mktemp("bench")
    report = harness.run(settings, None, RUN_HERE, out, quick=True, url=server.base_url, raw_url=server.engine_url)
    return out, report


def test_every_section_runs_and_writes_json_markdown_and_plots(quick_report):
    out, report = quick_report
    failed = {name: s["error"] for name, s in report["sections"].items() if "error" in s}
    assert not failed, failed
    assert json.loads((out / "bench.json").read_text())["sections"].keys() == set(RUN_HERE)
    markdown = (out / "bench.md").read_text()
    for name, section in report["sections"].items():
        assert section["rows"] and section["plots"], name
        assert f"## {name}" in markdown
        for plot in section["plots"]:
            width, height = Image.open(out / plot).size
            assert width > 500 and height > 300


def test_sections_measure_what_they_name(quick_report):
    _, report = quick_report
    sections = report["sections"]
    gateway = sections["gateway"]
    assert {(r["concurrency"], r["name"]) for r in gateway["rows"]} == {
        (c, n) for c in (1, 2) for n in ("servekit", "raw-vllm")
    }
    assert all(r["errors"] == 0 and r["output_tokens"] > 0 for r in gateway["rows"])
    assert sum("per pair" in note for note in gateway["notes"]) == 2  # one line of pairs per concurrency
    # the engine's own TTFT was read around every round: the time outside it is a real, positive figure
    assert all(math.isfinite(r["ttft_outside_engine_ms"]) and r["ttft_outside_engine_ms"] > 0 for r in gateway["rows"])
    assert [p.rsplit("/", 1)[-1] for p in gateway["plots"]] == ["gateway.png", "cpu.png"]
    assert sum("CPU per one-token streaming request" in note for note in gateway["notes"]) == 1
    assert all(r["errors"] == 0 and r["output_tokens"] > 0 for r in sections["lora"]["rows"])
    assert [r["name"] for r in sections["lora"]["rows"]] == ["base", "4 adapters", "merged"]
    batched, single, vllm = sections["triton"]["rows"]
    assert batched["executions"] <= batched["requests"]
    assert single["executions"] == single["requests"]  # batching off: one execution per request
    assert vllm["engine"] == "vllm" and vllm["output_tok_s"] > 0
    training = sections["training"]["rows"]
    assert [r["trainer"] for r in training] == ["servekit", "plain", "servekit-ddp", "servekit-fsdp"]
    assert [r["world_size"] for r in training] == [1, 1, 2, 2]
    assert all(r["steps"] == 3 and r["peak_rss_mib"] > 100 for r in training)
    ddp, fsdp = training[2:]
    assert fsdp["parameter_mib"] < 0.6 * ddp["parameter_mib"]  # the frozen base split across the two processes
    assert "step time min / median / max" in sections["training"]["notes"][-1]
    assert sections["baseline"]["targets"][0]["value"] > 0
    assert len(sections["router"]["targets"]) == 2


def test_baseline_takes_servekit_figures_from_the_gateway_rows_of_the_same_run(quick_report, settings, tmp_path):
    """A full run (not --quick) reuses the gateway section's servekit row instead of measuring again; the row has
    columns of its own (the engine TTFT read) that a summary must not choke on."""
    _, report = quick_report
    gateway = report["sections"]["gateway"]
    row = next(r for r in gateway["rows"] if r["name"] == "servekit" and r["concurrency"] == 2)
    earlier = SectionResult("gateway", gateway["rows"], [], [])
    ctx = BenchContext(settings, tmp_path, False, Progress(), session=None, results={"gateway": earlier})
    ours = baseline.servekit_at(ctx, 2, 8)  # no session: measuring again would fail
    assert asdict(ours) == {column: row[column] for column in asdict(ours)}
