from __future__ import annotations

import os

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


def test_the_model_store_is_bentomls_own_unless_the_config_names_one(tmp_path, monkeypatch):
    monkeypatch.setenv("BENTOML_HOME", "recorded")  # so the teardown restores the variable as it was, set or not
    monkeypatch.delenv("BENTOML_HOME")
    plain = tmp_path / "plain.yaml"
    plain.write_text("home: .servekit\n")
    assert load_settings(plain).bentoml_home is None
    assert "BENTOML_HOME" not in os.environ, "servekit left BentoML's own home (~/bentoml) in place"
    chosen = tmp_path / "chosen.yaml"
    chosen.write_text(f"bentoml_home: {tmp_path / 'store'}\n")
    load_settings(chosen)
    assert os.environ["BENTOML_HOME"] == str(tmp_path / "store")
