from __future__ import annotations

import httpx
import pytest
from typer.testing import CliRunner

from serving.cli import app
from serving.observe.config import write_config
from serving.observe.server import PrometheusNotFoundError, PrometheusServer
from serving.settings import Settings
from tests.conftest import free_port


def test_missing_binary_is_a_clear_error(tmp_path):
    settings = Settings(observe={"prometheus_binary": "/nonexistent/prometheus", "data_dir": tmp_path / "prom"})
    with pytest.raises(PrometheusNotFoundError) as error:
        PrometheusServer.for_target(settings, "http://127.0.0.1:3000")
    assert "/nonexistent/prometheus" in str(error.value)
    assert "apt-get install -y --no-install-recommends prometheus" in str(error.value)
    assert not (tmp_path / "prom").exists()


def test_observe_command_reports_the_missing_binary(monkeypatch, tmp_path):
    monkeypatch.setenv("SERVEKIT_OBSERVE__PROMETHEUS_BINARY", "/nonexistent/prometheus")
    monkeypatch.setenv("SERVEKIT_OBSERVE__DATA_DIR", str(tmp_path))
    result = CliRunner().invoke(app, ["observe"])
    assert result.exit_code == 1
    assert "prometheus binary not found" in result.output
    assert "apt-get install" in result.output


def test_starts_ready_and_stops_cleanly(tmp_path):
    """Ready by `/-/ready` alone (the scrape target may be down), and SIGTERM ends it with status 0."""
    config = write_config(tmp_path, f"http://127.0.0.1:{free_port()}", "2s")
    prometheus = PrometheusServer("prometheus", config, tmp_path, free_port(), "1d")
    with prometheus:
        assert httpx.get(f"{prometheus.url}/-/ready").status_code == 200
        rules = httpx.get(f"{prometheus.url}/api/v1/rules").json()["data"]["groups"]
        assert {group["name"] for group in rules} == {"servekit-recording", "servekit-alerts"}
    assert prometheus.process is not None
    assert prometheus.process.returncode == 0
