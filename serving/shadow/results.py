"""A finished run on disk: `<out_dir>/<route>/<run id>/results.json` beside its report.html. The files are the
shadow's own (samples of prompts and completions go here and nowhere else), and what the rollout gate and the
release report read after a restart."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any
from urllib.parse import quote

from serving.shadow.report import write_report

RESULTS = "results.json"


def route_dir(out_dir: Path, route: str) -> Path:
    """The route's folder: its name as one path component whatever it holds (`/`, `..`, NUL are escaped), so a
    route name never reaches outside `out_dir`."""
    component = quote(route, safe="-_.:")
    return out_dir / (component.replace(".", "%2E") if component in (".", "..") else component)


def write_results(results: dict[str, Any], directory: Path) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / RESULTS).write_text(json.dumps(results, indent=1, default=str))
    write_report(results, directory / "report.html")


def latest_results(out_dir: Path, route: str) -> dict[str, Any] | None:
    """The newest run's results for `route` (run ids sort by start time), None when it never had one."""
    folder = route_dir(out_dir, route)
    runs = sorted(folder.glob(f"*/{RESULTS}")) if folder.is_dir() else []
    return json.loads(runs[-1].read_text()) if runs else None
