from __future__ import annotations

import json
import os
from pathlib import Path

from serving.backends import vllm
from serving.backends.vllm import VllmBackend, cpu_bind_list, translate_error
from serving.errors import (
    ContextLengthExceededError,
    EndpointNotServedError,
    EngineError,
    EngineUnavailableError,
    InvalidRequestError,
)
from serving.settings import EngineSettings


def vllm_error(message: str, param: str | None = None) -> bytes:
    return json.dumps({"error": {"message": message, "type": "BadRequestError", "param": param, "code": 400}}).encode()


def test_command_carries_the_engine_knobs(tmp_path):
    settings = EngineSettings(
        port=8123, max_num_seqs=7, enforce_eager=True, stream_interval=4, extra_args=["--seed", "1"]
    )
    backend = VllmBackend(settings, Path("/models/x"), "public", tmp_path / "log")
    command = backend.command()
    assert command[1:3] == ["-m", "vllm.entrypoints.openai.api_server"]
    for flag, value in [
        ("--model", "/models/x"),
        ("--port", "8123"),
        ("--max-num-seqs", "7"),
        ("--stream-interval", "4"),
    ]:
        assert command[command.index(flag) + 1] == value
    assert "--enforce-eager" in command
    assert command[-2:] == ["--seed", "1"]
    assert backend.managed


def test_lora_layers_are_restricted_unless_null(tmp_path):
    def lora_args(**knobs) -> list[str]:
        command = VllmBackend(EngineSettings(**knobs), Path("/m"), "m", tmp_path / "log").command()
        return command[command.index("--enable-lora") :] if "--enable-lora" in command else []

    default = lora_args()
    assert default[default.index("--max-lora-rank") + 1] == "8"
    assert default[default.index("--lora-target-modules") + 1 :][:4] == ["q_proj", "k_proj", "v_proj", "o_proj"]
    assert "--lora-target-modules" not in lora_args(lora_target_modules=None)
    assert lora_args(enable_lora=False) == []


def test_auto_dtype_is_resolved_for_the_cpu_build_and_left_to_vllm_on_cuda(tmp_path, monkeypatch):
    def dtype_flag(setting: str) -> str:
        command = VllmBackend(EngineSettings(dtype=setting), Path("/m"), "m", tmp_path / "log").command()
        return command[command.index("--dtype") + 1]

    monkeypatch.setattr(vllm, "is_cpu_build", lambda: True)
    monkeypatch.setattr(vllm, "cpu_dtype", lambda setting: {"auto": "float32"}.get(setting, setting))
    assert dtype_flag("auto") == "float32"
    assert dtype_flag("bfloat16") == "bfloat16"
    monkeypatch.setattr(vllm, "is_cpu_build", lambda: False)
    assert dtype_flag("auto") == "auto"


def test_remote_url_means_no_child_process(tmp_path):
    backend = VllmBackend(EngineSettings(url="http://gpu-box:8000/"), Path("/m"), "m", tmp_path / "log")
    assert not backend.managed
    assert backend.base_url == "http://gpu-box:8000"
    assert not backend.exited()


def test_child_environment_drops_bentoml_prometheus_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", "/tmp/bentoml-prom")
    env = VllmBackend(EngineSettings(kv_cache_space_gib=1.5), Path("/m"), "m", tmp_path / "log").environment()
    assert "PROMETHEUS_MULTIPROC_DIR" not in env
    assert env["VLLM_CPU_KVCACHE_SPACE"] == "1.5"


def test_engine_keeps_idle_connections_longer_than_the_gateway_pool(tmp_path, monkeypatch):
    monkeypatch.setenv("VLLM_HTTP_TIMEOUT_KEEP_ALIVE", "5")
    env = VllmBackend(EngineSettings(), Path("/m"), "m", tmp_path / "log").environment()
    assert int(env["VLLM_HTTP_TIMEOUT_KEEP_ALIVE"]) == vllm.ENGINE_KEEP_ALIVE_S > vllm.POOL_IDLE_S


def test_cpu_binding_all_means_every_allowed_core():
    assert cpu_bind_list("all") == ",".join(str(c) for c in sorted(os.sched_getaffinity(0)))
    assert cpu_bind_list("0-3") == "0-3"


def test_engine_errors_are_translated():
    too_long = translate_error(400, vllm_error("This model's maximum context length is 2048 tokens.", "input_tokens"))
    assert isinstance(too_long, ContextLengthExceededError)
    assert "2048" in too_long.message
    assert isinstance(translate_error(400, vllm_error("bad stop")), InvalidRequestError)
    assert isinstance(translate_error(503, b"overloaded"), EngineUnavailableError)
    broken = translate_error(500, b"<html>Internal Server Error</html>")
    assert isinstance(broken, EngineError)
    assert broken.status_code == 502


def test_a_404_is_an_unknown_model_or_a_route_this_engine_does_not_serve(tmp_path):
    engine = VllmBackend(EngineSettings(), tmp_path, "base", tmp_path / "log")
    gone = vllm_error("The model `base:a1` does not exist.", "model").replace(b"400", b"404")
    assert engine._error("/v1/chat/completions", 404, gone).body()["error"] == {
        "message": "The model `base:a1` does not exist.", "type": "invalid_request_error", "param": "model",
        "code": "model_not_found",
    }  # fmt: skip
    refused = engine._error("/v1/embeddings", 404, b'{"detail":"Not Found"}')
    assert isinstance(refused, EndpointNotServedError) and refused.status_code == 404
    assert "`base` (vllm engine) does not serve /v1/embeddings" in refused.message
    assert "embedding model" in refused.message


async def test_a_raw_stream_carries_the_same_events_in_the_pieces_they_came(tmp_path):
    """Against the echo engine (a real HTTP server speaking vLLM's SSE): a shadow copy reads bytes, not events."""
    from serving.bench.router import start_echo

    process, url = start_echo(tmp_path)
    backend = VllmBackend(EngineSettings(url=url), Path("/m"), "m", tmp_path / "log")
    body = {"model": "m", "messages": [{"role": "user", "content": "one two three"}], "max_tokens": 8, "stream": True}
    try:
        events = [data async for data in await backend.open_stream("chat/completions", body)]
        raw = b"".join([block async for block in (await backend.open_stream("chat/completions", body)).raw()])
    finally:
        await backend.aclose()
        process.terminate()
        process.wait()
    framed = [line.removeprefix(b"data: ") for line in raw.split(b"\n\n") if line]
    assert len(events) > 2 and framed == [*events, b"[DONE]"]
