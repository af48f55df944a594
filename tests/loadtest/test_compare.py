"""Comparing two runs: an injected regression is flagged (table, compare.html, exit 1); noise within the
tolerance is not."""

from __future__ import annotations

import copy
import json

from typer.testing import CliRunner

from loadtest.cli import app
from loadtest.compare import compare
from loadtest.results import build_results
from tests.loadtest.test_metrics import record


def baseline() -> dict:
    return build_results([record(100 + i, 0.1 + 0.01 * i) for i in range(20)], {}, 100.0, 20.0, [])


def test_injected_regression_is_flagged_and_noise_is_not():
    a = baseline()
    b = copy.deepcopy(a)
    b["overall"]["ttft"]["p95"] *= 1.05  # noise, within 10 %
    assert not any(d.regression for d in compare(a, b, 0.1))
    b["overall"]["ttft"]["p95"] *= 1.5
    b["overall"]["tokens_per_s"] *= 0.5
    assert {d.metric for d in compare(a, b, 0.1) if d.regression} == {"ttft_p95", "tokens_per_s"}
    b["overall"]["error_rate"] = 0.2
    assert "error_rate" in {d.metric for d in compare(a, b, 0.1) if d.regression}


def test_cli_compare_writes_html_and_exits_1_on_regression(tmp_path):
    a = baseline()
    b = copy.deepcopy(a)
    b["overall"]["latency"]["p99"] *= 2
    for name, results in (("a", a), ("b", b)):
        (tmp_path / name).mkdir()
        (tmp_path / name / "results.json").write_text(json.dumps(results))
    result = CliRunner().invoke(app, ["compare", str(tmp_path / "a"), str(tmp_path / "b"), "--tolerance", "0.1"])
    assert result.exit_code == 1, result.output
    assert "REGRESSION" in result.output
    page = (tmp_path / "b" / "compare.html").read_text()
    assert 'class="regression"><td>latency_p99' in page and "1 regression(s)" in page
    same = CliRunner().invoke(app, ["compare", str(tmp_path / "a"), str(tmp_path / "a")])
    assert same.exit_code == 0, same.output
