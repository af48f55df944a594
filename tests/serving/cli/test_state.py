"""`servekit state check` against a real redis-server, an unreachable one, and no state.url."""

from __future__ import annotations

import re

from typer.testing import CliRunner

from serving.cli import app

runner = CliRunner()


def config_file(tmp_path):
    path = tmp_path / "servekit.yaml"
    path.write_text("{}\n")
    return str(path)


def test_check_reports_ping_version_and_keys(tmp_path, monkeypatch, redis_server):
    monkeypatch.setenv("SERVEKIT_STATE__URL", redis_server.url)
    config = config_file(tmp_path)
    assert runner.invoke(app, ["keys", "create", "--id", "one", "-c", config]).exit_code == 0
    result = runner.invoke(app, ["state", "check", "-c", config])
    assert result.exit_code == 0, result.output
    assert re.search(r"ping: \d+\.\d+ ms, redis 7\.", result.output)
    assert "api keys: 1," in result.output


def test_check_fails_on_an_unreachable_server(tmp_path, monkeypatch):
    monkeypatch.setenv("SERVEKIT_STATE__URL", "redis://127.0.0.1:9/0")
    result = runner.invoke(app, ["state", "check", "-c", config_file(tmp_path)])
    assert result.exit_code == 1 and "cannot reach redis://127.0.0.1:9/0" in result.output


def test_check_without_state_url_says_the_state_is_embedded(tmp_path, monkeypatch):
    monkeypatch.delenv("SERVEKIT_STATE__URL", raising=False)
    result = runner.invoke(app, ["state", "check", "-c", config_file(tmp_path)])
    assert result.exit_code == 0 and "embedded" in result.output
