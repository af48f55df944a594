"""One run's three files, written from the same records."""

from __future__ import annotations

import csv
import json

from loadtest.metrics import RequestRecord
from loadtest.results import SCHEMA_VERSION, write_outputs
from loadtest.slo import parse_slo


def record(t: float, version: str, ttft: float, ok: bool = True) -> RequestRecord:
    return RequestRecord(
        started_at=t, endpoint="chat-stream", version=version, users=2, ok=ok, status=200 if ok else 503,
        latency_s=ttft + 0.5, ttft_s=ttft if ok else None, itl_s=0.02 if ok else None, output_tokens=16 if ok else 0,
        max_tokens=16, error="" if ok else "HTTP 503",
    )  # fmt: skip


def test_results_csv_and_report_describe_the_same_run(tmp_path):
    records = [record(100.0 + i, "v1" if i % 2 else "v2", ttft=0.1 * i) for i in range(8)]
    records.append(record(108.0, "v2", 0.0, ok=False))
    objectives = parse_slo("ttft_p95<0.5s,error_rate<0.05")
    results = write_outputs(tmp_path / "run", records, {"users": 2}, t0=100.0, wall_s=10.0, objectives=objectives)

    assert json.loads((tmp_path / "run" / "results.json").read_text()) == results
    assert results["schema_version"] == SCHEMA_VERSION and results["config"] == {"users": 2}
    assert (results["overall"]["requests"], results["overall"]["errors"]) == (9, 1)
    assert results["versions"] == ["v1", "v2"]
    assert {v: s["requests"] for v, s in results["by_version"].items()} == {"v1": 4, "v2": 5}
    assert results["slo"]["objectives"] == ["ttft_p95<0.5s", "error_rate<0.05"]
    assert not results["slo"]["passed"] and len(results["slo"]["breaches"]) == 2
    with (tmp_path / "run" / "requests.csv").open() as rows:
        assert len(list(csv.DictReader(rows))) == 9
    report = (tmp_path / "run" / "report.html").read_text()
    assert "ttft_p95&lt;0.5s" in report or "ttft_p95<0.5s" in report
