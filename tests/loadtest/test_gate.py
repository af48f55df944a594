"""The canary gate: a pinned short load test whose SLO decides whether a rollout step may proceed."""

from __future__ import annotations

from loadtest.gate import run_gate

MODEL = "smollm2-135m-instruct"


def test_gate_blocks_on_an_impossible_slo(server, tmp_path):
    result = run_gate(server.base_url, MODEL, "canary-v2", "ttft_p50<1ms", duration=4, users=2, out_dir=tmp_path)
    assert result.passed is False
    assert result.breaches and result.breaches[0].startswith("ttft_p50<1ms: observed")
    assert result.report_path == tmp_path / "report.html" and result.report_path.exists()
    assert "SLO BREACHED" in result.report_path.read_text()


def test_gate_fails_closed_when_the_target_is_down(tmp_path):
    result = run_gate("http://127.0.0.1:9", MODEL, "v", "ttft_p95<1s", duration=2, users=1, out_dir=tmp_path)
    assert result.passed is False and "cannot reach" in result.breaches[0]
