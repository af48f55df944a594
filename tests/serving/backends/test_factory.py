from __future__ import annotations

import pytest

from serving.backends.factory import create_backend, max_model_len, supervision_settings
from serving.backends.triton.backend import TritonBackend
from serving.backends.vllm import VllmBackend
from serving.registry.store import get_model


@pytest.fixture(scope="module")
def model_path(settings):
    return get_model(settings.model.name).path


def test_vllm_on_its_configured_port_or_a_managed_port_given_at_run_time(settings, model_path):
    configured = create_backend(settings, "vllm", model_path, "base", None)
    assert isinstance(configured, VllmBackend) and configured.settings == settings.engine
    managed = create_backend(settings, "vllm", model_path, "other:v2", 41000)
    assert managed.base_url.endswith(":41000") and managed.settings.url is None  # a child of its own, not a remote
    assert managed.model_path == model_path and managed.served_name == "other:v2"


def test_triton_takes_three_consecutive_ports_and_a_repository_per_served_name(settings, model_path):
    backend = create_backend(settings, "triton", model_path, "other:v2", 42000)
    assert isinstance(backend, TritonBackend)
    assert (backend.http_url, backend.grpc_url) == ("127.0.0.1:42000", "127.0.0.1:42001")
    assert backend.metrics_url == "http://127.0.0.1:42002/metrics"
    assert backend.repository_dir.name == "other_v2"  # no ':' in a directory name


def test_an_unknown_engine_kind_is_refused(settings, model_path):
    with pytest.raises(ValueError, match="unknown engine 'tgi'"):
        create_backend(settings, "tgi", model_path, "base", None)


def test_triton_keeps_its_own_startup_timeout_and_context_length(settings):
    assert supervision_settings(settings, "triton").startup_timeout_s == settings.triton.startup_timeout_s
    assert supervision_settings(settings, "vllm") == settings.engine
    assert max_model_len(settings, "triton") == settings.triton.max_model_len
    assert max_model_len(settings, "vllm") == settings.engine.max_model_len
