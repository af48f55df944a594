from __future__ import annotations

import pytest
from pydantic import ValidationError

from serving.settings import Settings, load_settings


def test_defaults_scrape_every_2s_on_port_9090():
    settings = Settings()
    assert settings.observe.scrape_interval == "2s"
    assert settings.observe.port == 9090
    assert settings.observe.url is None


def test_prometheus_dir_is_under_home_unless_set(tmp_path):
    assert Settings(observe={"data_dir": tmp_path}).prometheus_dir == tmp_path.resolve()
    settings = Settings()
    assert settings.prometheus_dir == (settings.home / "prometheus").resolve()


@pytest.mark.parametrize("key", ["SERVEKIT_OBSERVE__SCRAPE_INTERVAL", "SERVEKIT_OBSERVE__RETENTION"])
def test_durations_must_be_prometheus_durations(monkeypatch, key):
    monkeypatch.setenv(key, "2 seconds")
    with pytest.raises(ValidationError):
        load_settings()


def test_external_prometheus_url_is_validated(monkeypatch):
    monkeypatch.setenv("SERVEKIT_OBSERVE__URL", "not a url")
    with pytest.raises(ValidationError):
        load_settings()
