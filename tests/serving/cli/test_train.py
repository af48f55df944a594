"""`servekit train`: resolves the base in the registry, trains, registers adapter and merged versions."""

from __future__ import annotations

import json

import yaml
from typer.testing import CliRunner

from serving.cli import app
from serving.registry.store import get_model
from tests.training.conftest import TINY

runner = CliRunner()


def test_train_registers_adapter_and_merged(tmp_path, settings):
    base_model = get_model(settings.model.name)
    config = tmp_path / "run.yaml"
    config.write_text(yaml.safe_dump({**TINY, "adapter_name": "cli-test", "output_dir": str(tmp_path / "out")}))
    result = runner.invoke(app, ["train", str(config), "--set", "max_steps=2", "--set", "batch_size=1", "--merge"])
    assert result.exit_code == 0, result.output
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())

    adapter = get_model("cli-test", manifest["version"])
    assert adapter.labels == {"kind": "adapter", "base": base_model.tag}
    stored = json.loads((adapter.path / "manifest.json").read_text())
    assert stored["base_model"] == base_model.tag and stored["kind"] == "adapter"
    assert (adapter.path / "adapter_model.safetensors").is_file()
    assert not (adapter.path / "checkpoints").exists()

    merged = get_model("cli-test-merged", manifest["version"])
    assert merged.labels == {"kind": "merged", "base": base_model.tag}
    assert (merged.path / "model.safetensors").is_file() and (merged.path / "tokenizer.json").is_file()

    again = runner.invoke(app, ["train", str(config), "--set", "max_steps=2", "--set", "batch_size=1", "--resume"])
    assert again.exit_code == 0, again.output
    assert "already registered" in again.output


def test_unknown_base_fails_clearly(tmp_path):
    config = tmp_path / "run.yaml"
    config.write_text(yaml.safe_dump({**TINY, "base_model": "nope:v1", "output_dir": str(tmp_path / "out")}))
    result = runner.invoke(app, ["train", str(config)])
    assert result.exit_code == 1
    assert "not in the registry" in result.output
