"""The servekit that sections measure: `bentoml serve` of this project with its managed vLLM engine, started
once per `servekit bench` run (an engine start costs 30-120 s on a CPU) and stopped at the end."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import httpx

from serving.backends.process import spawn, stop_child, wait_for_url
from serving.settings import CONFIG_ENV_VAR, Settings

SERVICE = "bentos.service:Servekit"
READY_TIMEOUT_S = 900.0


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_gateway(
    env: dict[str, str | None], log_path: Path, config: Path | None = None
) -> tuple[subprocess.Popen, str]:
    """`bentoml serve` this project on a free port with `SERVEKIT_*` overrides (None removes one); returns it and
    its URL. The access log is off: a line per request is work the raw engine does not do."""
    port = free_port()
    merged = {**os.environ, **env, "SERVEKIT_ACCESS_LOG__ENABLED": "false"}
    full_env = {key: value for key, value in merged.items() if value is not None}
    if config is not None:
        full_env[CONFIG_ENV_VAR] = str(config.resolve())
    command = [sys.executable, "-m", "bentoml", "serve", SERVICE, "--host", "127.0.0.1", "--port", str(port)]
    return spawn(command, log_path, full_env), f"http://127.0.0.1:{port}"


def wait_ready(process: subprocess.Popen, url: str, log_path: Path, timeout_s: float = READY_TIMEOUT_S) -> None:
    try:
        if not wait_for_url(process, f"{url}/ready", timeout_s):
            raise RuntimeError(f"servekit exited ({process.returncode}); log: {log_path}")
    except TimeoutError as exc:
        raise TimeoutError(f"servekit at {url} was not ready after {timeout_s:.0f}s; log: {log_path}") from exc


def stop_gateway(process: subprocess.Popen) -> None:
    """SIGTERM to the whole group (BentoML's workers and the engine), SIGKILL if it lingers."""
    stop_child(process, 60)


class ServekitSession:
    """Starts its own servekit on first use, or measures a running one (`url` and its engine's `raw_url`)."""

    def __init__(
        self, settings: Settings, config: Path | None, log_dir: Path, url: str | None = None, raw_url: str | None = None
    ) -> None:
        self.settings = settings
        self.config = config
        self.log_path = log_dir / "servekit.log"
        self.engine_port = free_port()
        self._process: subprocess.Popen | None = None
        self._url = url.rstrip("/") if url else ""
        self._raw_url = raw_url.rstrip("/") if raw_url else f"http://127.0.0.1:{self.engine_port}"

    @property
    def model(self) -> str:
        return self.settings.model.name

    @property
    def raw_url(self) -> str:
        """The vLLM OpenAI server servekit manages: same process, same engine args."""
        return self._raw_url

    def url(self) -> str:
        """servekit's base URL; starts it (and waits for the engine's warm-up) on first use."""
        if not self._url:
            env = {"SERVEKIT_ENGINE__PORT": str(self.engine_port), "SERVEKIT_ENGINE__URL": None}
            self._process, self._url = start_gateway(env, self.log_path, self.config)
            wait_ready(self._process, self._url, self.log_path)
        return self._url

    def admin(self, method: str, path: str, **kwargs) -> httpx.Response:
        response = httpx.request(method, f"{self.url()}{path}", timeout=900.0, **kwargs)
        response.raise_for_status()
        return response

    def stop(self) -> None:
        if self._process is not None:
            stop_gateway(self._process)
            self._process = None
