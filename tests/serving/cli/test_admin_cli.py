"""The admin CLI (`servekit routes`, `servekit rollout`, `servekit models load`) against the real server."""

from __future__ import annotations

from typer.testing import CliRunner

from serving.cli import app

runner = CliRunner()
BASE = "smollm2-135m-instruct"


def test_routes_set_list_delete(server):
    url = ["--url", server.base_url]
    assert runner.invoke(app, ["routes", "set", "cli-route", f"{BASE}=100", *url]).exit_code == 0
    listed = runner.invoke(app, ["routes", "list", *url])
    assert "cli-route" in listed.output and "100%" in listed.output
    bad = runner.invoke(app, ["routes", "set", "cli-route", f"{BASE}=70", *url])
    assert bad.exit_code == 1 and "sum to 100" in bad.output
    assert runner.invoke(app, ["routes", "delete", "cli-route", *url]).exit_code == 0


def test_rollout_commands_report_server_errors(server):
    url = ["--url", server.base_url]
    missing = runner.invoke(app, ["rollout", "status", "nowhere", *url])
    assert missing.exit_code == 1 and "404" in missing.output
    assert runner.invoke(app, ["rollout", "abort", "nowhere", *url]).exit_code == 1


def test_models_load_unknown_version_fails(server):
    result = runner.invoke(app, ["models", "load", "ghost:123", "--url", server.base_url])
    assert result.exit_code == 1 and "404" in result.output
