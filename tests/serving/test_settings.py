from __future__ import annotations

import pytest
from pydantic import ValidationError

from serving.settings import load_settings


def test_yaml_values_then_env_overrides(tmp_path, monkeypatch):
    config = tmp_path / "custom.yaml"
    config.write_text("model:\n  name: tiny\nengine:\n  max_num_seqs: 8\n  port: 9000\n")
    monkeypatch.setenv("SERVEKIT_ENGINE__PORT", "9100")
    settings = load_settings(config)
    assert settings.model.name == "tiny"
    assert settings.engine.max_num_seqs == 8
    assert settings.engine.port == 9100
    assert settings.engine.enforce_eager is True


def test_missing_config_file_is_an_error(tmp_path):
    with pytest.raises(FileNotFoundError):
        load_settings(tmp_path / "absent.yaml")


def test_unknown_keys_are_rejected(tmp_path):
    config = tmp_path / "typo.yaml"
    config.write_text("engnie:\n  port: 1\n")
    with pytest.raises(ValidationError):
        load_settings(config)


def test_remote_engine_url_is_validated(monkeypatch):
    monkeypatch.setenv("SERVEKIT_ENGINE__URL", "not a url")
    with pytest.raises(ValidationError):
        load_settings()
