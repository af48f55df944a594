from __future__ import annotations

import os
import re

import pytest
from pydantic import ValidationError

from serving.settings import Settings, load_settings


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


def test_replica_sources_default_to_one_managed_engine_or_none_beside_remote_ones() -> None:
    assert Settings().engine.managed_replicas == 1
    assert Settings(engine={"urls": ["http://a:8000"]}).engine.managed_replicas == 0
    assert Settings(engine={"url": "http://a:8000"}).engine.managed_replicas == 0
    mixed = Settings(engine={"replicas": 2, "urls": ["http://a:8000"]}).engine
    assert (mixed.managed_replicas, len(mixed.urls)) == (2, 1)
    assert Settings().pool.policy == "prefix_affinity"


@pytest.mark.parametrize(
    ("engine", "message"),
    [
        ({"replicas": 0}, "replicas: 0 replicas and no `urls` or `discovery`"),
        ({"urls": ["http://a:8000", "http://a:8000/"]}, "urls: http://a:8000 is listed twice"),
        ({"url": "http://a:8000", "urls": ["http://a:8000"]}, "urls: http://a:8000 is listed twice"),
        ({"url": "http://a:8000", "replicas": 2}, "replicas: 2 managed replicas with `url` set"),
        ({"replicas": 2, "cpu_core_sets": ["0"]}, "cpu_core_sets: 1 core sets for 2 managed replicas"),
    ],
)
def test_replica_settings_errors_name_the_key(engine: dict, message: str) -> None:
    with pytest.raises(ValidationError, match=re.escape(message)) as raised:
        Settings(engine=engine)
    assert raised.value.errors()[0]["loc"] == ("engine",)


def test_a_version_may_have_its_own_replicas_and_pool() -> None:
    version = {"name": "b", "model": "b", "port": 8200, "replicas": 2, "pool": {"policy": "session"}}
    (parsed,) = Settings(versions=[version]).versions
    assert (parsed.managed_replicas, parsed.pool.policy) == (2, "session")
    discovered = Settings(versions=[{"name": "c", "model": "c", "port": 8300, "discovery": {"host": "engines"}}])
    assert discovered.versions[0].managed_replicas == 0
