from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import yaml

from serving.observe.config import rule_files

DASHBOARD = Path(__file__).resolve().parents[3] / "serving" / "observe" / "grafana" / "servekit.json"


def load() -> dict:
    return json.loads(DASHBOARD.read_text())


def test_dashboard_uses_a_prometheus_datasource_variable():
    dashboard = load()
    assert dashboard["schemaVersion"] >= 36
    variables = {variable["name"]: variable for variable in dashboard["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    for panel in dashboard["panels"]:
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}
        assert all(target["datasource"]["uid"] == "${datasource}" for target in panel["targets"])


def test_panels_show_versions_side_by_side_from_the_recording_rules():
    panels = load()["panels"]
    exprs = " ".join(target["expr"] for panel in panels for target in panel["targets"])
    recorded = {rule["record"] for path in rule_files() for group in yaml.safe_load(path.read_text())["groups"]
                for rule in group["rules"] if "record" in rule}  # fmt: skip
    used = set(re.findall(r"servekit:[a-z0-9_:]+", exprs))
    assert used == recorded, "every recorded series on the dashboard, and no unknown one"
    assert "servekit_in_flight_requests" in exprs
    assert all("{{version}}" in target["legendFormat"] for panel in panels for target in panel["targets"])


def test_panel_queries_are_valid_promql(promtool, tmp_path):
    """promtool parses each panel query as a recording rule (Grafana variables filled in first)."""
    rules = [
        {"record": f"panel:{panel['id']}", "expr": target["expr"].replace("$route", ".*")}
        for panel in load()["panels"]
        for target in panel["targets"]
    ]
    path = tmp_path / "panels.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "panels", "rules": rules}]}))
    result = subprocess.run([promtool, "check", "rules", str(path)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
