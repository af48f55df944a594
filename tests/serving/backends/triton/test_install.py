"""Locating tritonserver in its venv, and the command line and environment servekit starts it with."""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path

import pytest

from serving.backends.triton import install as triton_install
from serving.backends.triton.backend import TritonBackend
from serving.errors import EndpointNotServedError, InvalidRequestError
from serving.registry.store import get_model
from serving.settings import TritonSettings

FAKE = triton_install.TritonInstallation(
    venv=Path("/tv"), site_packages=Path("/tv/lib/python3.11/site-packages"), python_libdir=Path("/py/lib"),
    python_version="3.11",
)  # fmt: skip


def backend(tmp_path: Path, settings_name: str, **settings) -> TritonBackend:
    path = get_model(settings_name).path
    return TritonBackend(TritonSettings(**settings), path, "demo:v1", tmp_path / "triton.log", tmp_path / "repo")


def test_command_carries_ports_repository_and_recipe_flags(settings, tmp_path):
    triton = backend(tmp_path, settings.model.name, http_port=9100, grpc_port=9101, metrics_port=9102)
    command = triton.command(FAKE)
    assert command[0] == "/tv/lib/python3.11/site-packages/pytriton/tritonserver/bin/tritonserver"
    for flag in ["--http-port=9100", "--grpc-port=9101", "--metrics-port=9102", "--disable-auto-complete-config",
                 f"--model-repository={tmp_path / 'repo' / 'models'}", "--pinned-memory-pool-byte-size=0",
                 f"--backend-directory={tmp_path / 'repo' / 'backends'}"]:  # fmt: skip
        assert flag in command
    assert triton.model_name == "demo_v1"
    assert triton.managed


def test_environment_puts_the_triton_venv_first(settings, tmp_path, monkeypatch):
    monkeypatch.setenv("LD_LIBRARY_PATH", "/already")
    monkeypatch.setenv("PYTHONPATH", "/servekit/checkout")
    env = backend(tmp_path, settings.model.name).environment(FAKE)
    assert env["LD_LIBRARY_PATH"] == "/py/lib:/tv/lib/python3.11/site-packages/nvidia_pytriton.libs:/already"
    assert env["PATH"].startswith("/tv/bin:")
    assert "PYTHONPATH" not in env


def test_remote_url_means_no_child_process(settings, tmp_path):
    triton = backend(tmp_path, settings.model.name, url="http://gpu-box:8000", grpc_port=8001, metrics_port=8002)
    assert not triton.managed
    assert (triton.http_url, triton.grpc_url) == ("gpu-box:8000", "gpu-box:8001")
    assert triton.metrics_url == "http://gpu-box:8002/metrics"


def test_missing_venv_is_a_clear_start_error(settings, tmp_path):
    triton = backend(tmp_path, settings.model.name, venv=tmp_path / "nowhere")
    with pytest.raises(triton_install.TritonNotInstalledError, match=r"nowhere/bin/python does not exist.*setup"):
        asyncio.run(triton.start())
    assert not triton.exited()


def test_venv_without_pytriton_names_the_missing_binary(tmp_path):
    (tmp_path / "venv" / "bin").mkdir(parents=True)
    os.symlink(sys.executable, tmp_path / "venv" / "bin" / "python")
    with pytest.raises(triton_install.TritonNotInstalledError, match=r"pytriton/tritonserver/bin/tritonserver"):
        triton_install.locate(tmp_path / "venv")


async def test_adapters_are_refused_with_the_reason(settings, tmp_path):
    triton = backend(tmp_path, settings.model.name)
    with pytest.raises(InvalidRequestError, match="merge the adapter"):
        await triton.load_adapter("a", "/a")
    with pytest.raises(InvalidRequestError, match="served by the vLLM engine"):
        await triton.unload_adapter("a")


@pytest.mark.parametrize("endpoint", ["responses", "embeddings", "tokenize"])
async def test_what_only_vllm_serves_is_refused_in_openai_shape_before_triton_is_asked(settings, tmp_path, endpoint):
    triton = backend(tmp_path, settings.model.name)
    with pytest.raises(EndpointNotServedError) as refused:
        await triton.complete(endpoint, {"model": "demo:v1"})
    assert refused.value.status_code == 404 and refused.value.body()["error"]["code"] == "endpoint_not_served"
    assert "`demo:v1` (triton engine)" in refused.value.message and endpoint in refused.value.message
