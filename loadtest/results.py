"""One run's outputs, all in one directory: results.json (schema in README), requests.csv, report.html.

Shared by `servekit loadtest run` and plain `locust -f loadtest/locustfile.py --loadtest-out DIR`, so both
write the same files from the same records."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from loadtest.metrics import RequestRecord, by_version, flat, stages, summarize, timeline, write_csv
from loadtest.report import write_report
from loadtest.slo import Objective, breaches

SCHEMA_VERSION = 1


def build_results(
    records: list[RequestRecord], config: dict[str, Any], t0: float, wall_s: float, objectives: list[Objective]
) -> dict[str, Any]:
    overall = summarize(records, wall_s, objectives)
    breached = breaches(objectives, flat(overall))
    return {
        "schema_version": SCHEMA_VERSION,
        "config": config,
        "started_at": t0,
        "duration_s": wall_s,
        "overall": overall,
        "by_version": by_version(records, wall_s, objectives),
        "versions": sorted({r.version for r in records}),
        "timeline": timeline(records, t0, wall_s),
        "stages": stages(records),
        "slo": {
            "objectives": [o.text for o in objectives],
            "passed": not breached,
            "breaches": breached,
        },
    }


def write_outputs(
    out: Path,
    records: list[RequestRecord],
    config: dict[str, Any],
    t0: float,
    wall_s: float,
    objectives: list[Objective],
) -> dict[str, Any]:
    """Write the three files into `out` and return the results dict."""
    out.mkdir(parents=True, exist_ok=True)
    results = build_results(records, config, t0, wall_s, objectives)
    (out / "results.json").write_text(json.dumps(results, indent=2))
    write_csv(records, out / "requests.csv")
    write_report(results, records, out / "report.html")
    return results
