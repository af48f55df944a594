from __future__ import annotations

import json

import yaml
from typer.testing import CliRunner

from serving.cli import app

runner = CliRunner()


def test_config_show_prints_the_effective_config(monkeypatch):
    monkeypatch.setenv("SERVEKIT_ENGINE__MAX_NUM_SEQS", "5")
    result = runner.invoke(app, ["config", "show"])
    assert result.exit_code == 0, result.output
    shown = yaml.safe_load(result.output.split("\n", 1)[1])
    assert shown["engine"]["max_num_seqs"] == 5
    assert shown["server"]["port"] == 3000


def test_models_show_prints_the_manifest(settings):
    result = runner.invoke(app, ["models", "show", settings.model.name])
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["kind"] == "base"


def test_models_show_unknown_fails_clearly():
    result = runner.invoke(app, ["models", "show", "nope:v1"])
    assert result.exit_code == 1
    assert "not in the registry" in result.output
