"""NVIDIA Triton Inference Server as servekit's engine: a managed `tritonserver` child or a remote server.

Managed: servekit writes the model repository for the version (`repository`), links the Python backend out of
the `nvidia-pytriton` wheel in the Triton venv (`install`) and runs `tritonserver` as a `ManagedProcess`.
Remote (`triton.url`): the same client code against a server someone else runs (e.g. NVIDIA's container on a GPU).

Every generation goes over gRPC bidirectional streaming (the model is decoupled, which Triton's HTTP infer
endpoint cannot serve); a non-streaming completion is the same stream collected. Health, readiness and stats
use Triton's HTTP API, metrics its Prometheus port.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import grpc
import numpy as np
import tritonclient.grpc.aio as grpcclient
import tritonclient.http.aio as httpclient
from transformers import AutoTokenizer
from tritonclient.utils import InferenceServerException

from serving.backends.base import COMPLETION_ENDPOINTS, Backend, ChunkStream, Endpoint, endpoint_path
from serving.backends.process import ManagedProcess
from serving.backends.triton import install, openai_format
from serving.backends.triton.openai_format import PreparedRequest
from serving.backends.triton.repository import triton_model_name, write_repository
from serving.errors import (
    ContextLengthExceededError,
    EndpointNotServedError,
    EngineError,
    EngineUnavailableError,
    InvalidRequestError,
    ServekitError,
)
from serving.settings import EngineSettings, Settings, TritonSettings

ADAPTERS_UNSUPPORTED = "adapters are served by the vLLM engine; merge the adapter to serve it on Triton"
CONTEXT_LENGTH_MARKER = "maximum context length"
# Messages Triton (core or Python backend) sends when the model or its stub cannot take requests right now.
UNAVAILABLE_MARKERS = ("unknown model", "is not ready", "Stub process", "is not healthy", "unavailable")
GENERATION_FAILED_MARKER = "generation failed"
SHM_DIR = Path("/dev/shm")
STATISTICS_SETTLE_S = 10.0
"""How long Triton's statistics may lag behind the responses a client already has."""
INHERITED_ENV_TO_DROP = ("PROMETHEUS_MULTIPROC_DIR", "PYTHONPATH", "PYTHONHOME")


def translate_error(message: str) -> ServekitError:
    """Map a Triton error onto servekit's hierarchy. gRPC stream errors carry only a message, so the model
    answers rejected input with client-facing text and internal failures with `generation failed`."""
    if CONTEXT_LENGTH_MARKER in message:
        return ContextLengthExceededError(message, param="messages")
    if any(marker in message for marker in UNAVAILABLE_MARKERS):
        return EngineUnavailableError(f"Triton cannot serve the model now: {message}")
    if GENERATION_FAILED_MARKER in message:
        return EngineError(f"Triton failed the request: {message}")
    return InvalidRequestError(message)


def _text(result: grpcclient.InferResult, name: str) -> str | None:
    array = result.as_numpy(name)
    return None if array is None else array.reshape(-1)[0].decode("utf-8")


class _Generation:
    """One request on its own gRPC stream; the request iterator stays open until the final response, since
    half-closing the stream early is not needed and closing it is how a request is abandoned."""

    def __init__(
        self, client: grpcclient.InferenceServerClient, model_name: str, request: PreparedRequest, stream: bool
    ) -> None:
        self.request = request
        self._finished = False
        self._done = asyncio.Event()
        self._responses = client.stream_infer(self._requests(model_name, request, stream))

    async def _requests(self, model_name: str, request: PreparedRequest, stream: bool) -> AsyncIterator[dict]:
        """Tokens are sent one response each only when `stream`; otherwise one final response carries all."""
        inputs = [
            grpcclient.InferInput("text_input", [1, 1], "BYTES"),
            grpcclient.InferInput("stream", [1, 1], "BOOL"),
            grpcclient.InferInput("sampling_parameters", [1, 1], "BYTES"),
        ]
        inputs[0].set_data_from_numpy(np.array([[request.prompt.encode()]], dtype=np.object_))
        inputs[1].set_data_from_numpy(np.array([[stream]], dtype=bool))
        inputs[2].set_data_from_numpy(np.array([[json.dumps(request.sampling).encode()]], dtype=np.object_))
        yield {"model_name": model_name, "inputs": inputs, "request_id": request.request_id}
        await self._done.wait()

    async def responses(self) -> AsyncIterator[tuple[str, str | None, int | None]]:
        """(text delta, finish reason, completion tokens); the last one has the finish reason."""
        try:
            async for result, error in self._responses:
                if error is not None:
                    raise translate_error(error.message())
                finish_reason = _text(result, "finish_reason")
                tokens = result.as_numpy("num_output_tokens")
                if finish_reason is not None:
                    self._finished = True
                yield _text(result, "text_output") or "", finish_reason, None if tokens is None else int(tokens[0][0])
                if self._finished:
                    return
        except grpc.RpcError as exc:
            raise EngineUnavailableError(f"Triton unreachable: {exc.details() or exc.code()}") from exc
        except InferenceServerException as exc:
            raise translate_error(exc.message()) from exc
        finally:
            self.close()
        raise EngineError("Triton ended the stream without a final response")

    def close(self) -> None:
        """After the final response, end the request side so the call completes normally (cancelled streams kept
        the model from unloading on shutdown); before it, cancel the call: Triton marks the request cancelled
        and the model stops generating for it."""
        self._done.set()
        if not self._finished:
            self._responses.cancel()


class _TritonChunkStream(ChunkStream):
    def __init__(self, generation: _Generation, responses: AsyncIterator, first: tuple[str, str | None, int | None]):
        self._generation = generation
        self._responses = responses
        self._first = first

    async def __aiter__(self) -> AsyncIterator[bytes]:
        request = self._generation.request
        text, finish_reason, tokens = self._first
        yield openai_format.chunk(request, text, finish_reason, first=True)
        while finish_reason is None:
            text, finish_reason, tokens = await anext(self._responses)
            yield openai_format.chunk(request, text, finish_reason)
        yield openai_format.usage_chunk(request, tokens or 0)

    async def aclose(self) -> None:
        self._generation.close()


class TritonBackend(Backend):
    engine_name = "triton"
    ports_needed = 3
    """HTTP, gRPC and metrics, in that order."""

    def __init__(
        self, settings: TritonSettings, model_path: Path, served_name: str, log_path: Path, repository_dir: Path
    ) -> None:
        super().__init__(served_name)
        self.settings = settings
        self.model_path = model_path
        self.log_path = log_path
        self.repository_dir = repository_dir
        self.model_name = settings.model_name or triton_model_name(served_name)
        self.tokenizer = AutoTokenizer.from_pretrained(model_path)
        host = settings.url.host if settings.url else settings.host
        http_port = settings.url.port if settings.url else settings.http_port
        self.http_url = f"{host}:{http_port}"
        self.grpc_url = f"{host}:{settings.grpc_port}"
        self.metrics_url = f"http://{host}:{settings.metrics_port}/metrics"
        self.shm_prefix = f"servekit_{self.model_name}_{settings.grpc_port}_"
        self._clients: tuple[httpclient.InferenceServerClient, grpcclient.InferenceServerClient] | None = None

    @classmethod
    def from_settings(
        cls, settings: Settings, model_path: Path, served_name: str, log_path: Path, port: int | None
    ) -> TritonBackend:
        triton = settings.triton
        if port is not None:
            triton = triton.model_copy(
                update={"http_port": port, "grpc_port": port + 1, "metrics_port": port + 2, "url": None}
            )
        repository = settings.home.resolve() / "triton-repositories" / served_name.replace(":", "_")
        return cls(triton, model_path, served_name, log_path, repository)

    @classmethod
    def max_model_len(cls, settings: Settings) -> int:
        return settings.triton.max_model_len

    @classmethod
    def supervision_settings(cls, settings: Settings) -> EngineSettings:
        """Triton keeps its own start-up timeout."""
        return settings.engine.model_copy(update={"startup_timeout_s": settings.triton.startup_timeout_s})

    @property
    def managed(self) -> bool:
        return self.settings.url is None

    @property
    def models_dir(self) -> Path:
        return self.repository_dir / "models"

    @property
    def backends_dir(self) -> Path:
        return self.repository_dir / "backends"

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process else None

    def _http(self) -> httpclient.InferenceServerClient:
        return self._client_pair()[0]

    def _grpc(self) -> grpcclient.InferenceServerClient:
        return self._client_pair()[1]

    def _client_pair(self) -> tuple[httpclient.InferenceServerClient, grpcclient.InferenceServerClient]:
        """Created lazily: both clients must be born inside the running event loop."""
        if self._clients is None:
            self._clients = (
                httpclient.InferenceServerClient(self.http_url, conn_timeout=10.0),
                grpcclient.InferenceServerClient(self.grpc_url),
            )
        return self._clients

    def command(self, installation: install.TritonInstallation) -> list[str]:
        s = self.settings
        return [
            str(installation.server_binary),
            f"--model-repository={self.models_dir}",
            f"--backend-directory={self.backends_dir}",
            f"--backend-config=python,shm-region-prefix-name={self.shm_prefix}",
            "--disable-auto-complete-config",
            "--allow-gpu-metrics=false",
            "--pinned-memory-pool-byte-size=0",
            "--exit-timeout-secs=10",
            f"--http-address={s.host}",
            f"--http-port={s.http_port}",
            f"--grpc-address={s.host}",
            f"--grpc-port={s.grpc_port}",
            f"--metrics-address={s.host}",
            f"--metrics-port={s.metrics_port}",
        ]

    def environment(self, installation: install.TritonInstallation) -> dict[str, str]:
        """The stub runs the first `python3` on PATH (the Triton venv's) and needs that interpreter's libpython
        plus the wheel's bundled libraries (libcudart, even on CPU)."""
        env = {key: value for key, value in os.environ.items() if key not in INHERITED_ENV_TO_DROP}
        library_path = [str(installation.python_libdir), str(installation.libs_dir)]
        if env.get("LD_LIBRARY_PATH"):
            library_path.append(env["LD_LIBRARY_PATH"])
        env["LD_LIBRARY_PATH"] = ":".join(library_path)
        env["PATH"] = f"{installation.venv / 'bin'}:{env.get('PATH', '')}"
        env["VIRTUAL_ENV"] = str(installation.venv)
        return env

    def remove_stale_shm(self) -> None:
        """A crashed stub leaves its shared-memory region behind; only this server's prefix is touched, so
        other Triton servers on the machine keep theirs."""
        for region in SHM_DIR.glob(f"{self.shm_prefix}*"):
            with contextlib.suppress(FileNotFoundError):
                region.unlink()

    async def start(self) -> None:
        if not self.managed or (self._process and not self._process.exited()):
            return
        installation = await asyncio.to_thread(install.locate, self.settings.venv.resolve())
        write_repository(self.models_dir, self.model_name, self.settings, self.model_path)
        install.assemble_backends(installation, self.backends_dir)
        self.remove_stale_shm()
        self._process = ManagedProcess(
            self.command(installation), self.environment(installation), self.log_path, terminate_group=False
        )
        await self._process.start()

    async def stop(self) -> None:
        """Closes the clients first: Triton does not unload a model (and so does not exit within its timeout)
        while a gRPC stream to it is still open."""
        if self._process:
            await self.aclose()
            await self._process.stop()
            self.remove_stale_shm()

    async def is_healthy(self) -> bool:
        """Ready means the server answers `/v2/health/ready` and our model is loaded and READY."""
        if self.exited():
            return False
        try:
            return await self._http().is_server_ready() and await self._http().is_model_ready(self.model_name)
        except (InferenceServerException, aiohttp.ClientError, OSError, TimeoutError):
            return False

    def _prepare(self, endpoint: Endpoint, payload: dict[str, Any]) -> PreparedRequest:
        if endpoint not in COMPLETION_ENDPOINTS:  # servekit renders completions only, Triton serves no API
            raise EndpointNotServedError(self.served_name, self.engine_name, endpoint_path(endpoint))
        return openai_format.prepare(self.tokenizer, endpoint, payload, self.settings.max_model_len)

    async def complete(self, endpoint: Endpoint, payload: dict[str, Any]) -> dict[str, Any]:
        request = self._prepare(endpoint, payload)
        generation = _Generation(self._grpc(), self.model_name, request, stream=False)
        responses = [response async for response in generation.responses()]
        text = "".join(text for text, _, _ in responses)
        _, finish_reason, tokens = responses[-1]
        return openai_format.completion_body(request, text, finish_reason or "stop", tokens or 0)

    async def open_stream(self, endpoint: Endpoint, payload: dict[str, Any]) -> ChunkStream:
        """Waits for Triton's first response, so a request the model rejects fails here, before any byte."""
        request = self._prepare(endpoint, payload)
        generation = _Generation(self._grpc(), self.model_name, request, stream=True)
        responses = generation.responses()
        first = await anext(responses)  # on an error or cancellation the generator's `finally` ends the call
        return _TritonChunkStream(generation, responses, first)

    async def load_adapter(self, name: str, path: str) -> None:
        raise InvalidRequestError(ADAPTERS_UNSUPPORTED)

    async def unload_adapter(self, name: str) -> None:
        raise InvalidRequestError(ADAPTERS_UNSUPPORTED)

    async def metrics_text(self) -> str:
        try:
            async with (
                aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5.0)) as session,
                session.get(self.metrics_url) as response,
            ):
                return await response.text() if response.status == 200 else ""
        except (aiohttp.ClientError, TimeoutError):
            return ""

    async def inference_statistics(self) -> dict[str, Any]:
        """Triton's per-model statistics (`batch_stats` shows which batch sizes actually ran)."""
        return await self._http().get_inference_statistics(self.model_name)

    async def settled_statistics(self, inferences: int, timeout_s: float = STATISTICS_SETTLE_S) -> dict[str, Any]:
        """This model's statistics once they count `inferences` requests (or after `timeout_s`, as they are):
        Triton counts a batch when `execute` returns, a moment after its last response reached the client."""
        deadline = time.monotonic() + timeout_s
        while True:
            stats = (await self.inference_statistics())["model_stats"][0]
            if int(stats["inference_count"]) >= inferences or time.monotonic() > deadline:
                return stats
            await asyncio.sleep(0.05)

    async def aclose(self) -> None:
        if self._clients is not None:
            http, grpc_client = self._clients
            self._clients = None
            await http.close()
            await grpc_client.close()
