from __future__ import annotations

import subprocess

import pytest
import yaml

from serving.observe.config import render_config, rule_files, write_config


def test_generated_config_passes_promtool_check(promtool, tmp_path):
    path = write_config(tmp_path, "http://127.0.0.1:3000", "2s")
    result = subprocess.run([promtool, "check", "config", str(path)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_config_scrapes_the_target_with_servekit_rules():
    config = yaml.safe_load(render_config("https://gw.example:8443/prefix/", "5s"))
    assert config["global"] == {"scrape_interval": "5s", "evaluation_interval": "5s"}
    assert config["rule_files"] == [str(path) for path in rule_files()]
    (job,) = config["scrape_configs"]
    assert job["scheme"] == "https"
    assert job["metrics_path"] == "/prefix/metrics"
    assert job["static_configs"] == [{"targets": ["gw.example:8443"]}]


def test_relative_target_is_refused():
    with pytest.raises(ValueError, match="not an absolute URL"):
        render_config("127.0.0.1:3000", "2s")
