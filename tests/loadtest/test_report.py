"""The HTML report: one self-contained file, verdict first, every plot inlined."""

from __future__ import annotations

import re

from loadtest.results import build_results
from loadtest.slo import parse_slo
from tests.loadtest.test_metrics import record


def test_report_has_verdict_first_and_every_plot_inline(tmp_path):
    from loadtest.report import write_report

    records = [record(100 + i / 4, 0.05 * (i % 7), users=1 if i < 20 else 2, version=f"v{i % 2}") for i in range(40)]
    results = build_results(records, {"shape": "sweep"}, 100.0, 10.0, parse_slo("ttft_p95<0.1s"))
    write_report(results, records, tmp_path / "report.html")
    page = (tmp_path / "report.html").read_text()
    assert page.index("SLO BREACHED") < page.index("<h2>")
    assert "ttft_p95&lt;0.1s: observed" in page
    images = re.findall(r'<img alt="plot" src="data:image/png;base64,([A-Za-z0-9+/=]{1000,})">', page)
    assert len(images) == 4  # over time, TTFT CDF, throughput vs concurrency, versions side by side
    assert "<script" not in page and "http" not in page  # nothing to fetch: it opens offline
    assert "<th>v0</th><th>v1</th>" in page
