"""A real `prometheus` binary as a child process: started with servekit's config, ready when `/-/ready`
answers 200, stopped with SIGTERM (then SIGKILL) so its TSDB closes cleanly."""

from __future__ import annotations

import shutil
import subprocess
import time
from pathlib import Path
from types import TracebackType

from serving.backends.process import spawn, stop_child, tail_log, wait_for_url
from serving.observe.config import write_config
from serving.settings import Settings

INSTALL_COMMAND = "apt-get install -y --no-install-recommends prometheus"
READY_TIMEOUT_S = 60.0
READY_POLL_S = 0.1
STOP_TIMEOUT_S = 15.0


class PrometheusNotFoundError(RuntimeError):
    """The configured `prometheus` executable is not installed or not on PATH."""


class PrometheusStartError(RuntimeError):
    """Prometheus exited or never became ready; the message carries its log tail."""


def resolve_binary(binary: str) -> str:
    """Absolute path of `binary` (a name on PATH, or a path), or an error that says how to install it."""
    found = shutil.which(binary)
    if found is None:
        raise PrometheusNotFoundError(
            f"prometheus binary not found: {binary!r} (observe.prometheus_binary). "
            f"Install it with `sudo {INSTALL_COMMAND}` (or `make setup`), or set "
            "SERVEKIT_OBSERVE__PROMETHEUS_BINARY to its path."
        )
    return found


class PrometheusServer:
    """One Prometheus on 127.0.0.1:`port`, storing its TSDB and log under `data_dir`."""

    def __init__(self, binary: str, config_file: Path, data_dir: Path, port: int, retention: str) -> None:
        self.binary = resolve_binary(binary)
        self.config_file = config_file
        self.data_dir = data_dir
        self.port = port
        self.retention = retention
        self.log_path = data_dir / "prometheus.log"
        self._process: subprocess.Popen[bytes] | None = None

    @classmethod
    def for_target(cls, settings: Settings, target_url: str, port: int | None = None) -> PrometheusServer:
        """A Prometheus scraping the servekit server at `target_url`, configured from `settings.observe`."""
        observe = settings.observe
        data_dir = settings.prometheus_dir
        binary = resolve_binary(observe.prometheus_binary)  # fail before writing anything
        config_file = write_config(data_dir, target_url, observe.scrape_interval)
        return cls(binary, config_file, data_dir, port or observe.port, observe.retention)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def process(self) -> subprocess.Popen[bytes] | None:
        return self._process

    def command(self) -> list[str]:
        return [
            self.binary,
            f"--config.file={self.config_file}",
            f"--storage.tsdb.path={self.data_dir / 'data'}",
            f"--storage.tsdb.retention.time={self.retention}",
            f"--web.listen-address=127.0.0.1:{self.port}",
            "--web.enable-lifecycle",
        ]

    def start(self, timeout_s: float = READY_TIMEOUT_S) -> float:
        """Start Prometheus and block until it is ready; returns the seconds that took."""
        self.data_dir.mkdir(parents=True, exist_ok=True)
        started = time.monotonic()
        self._process = spawn(self.command(), self.log_path)
        try:
            if not wait_for_url(self._process, f"{self.url}/-/ready", timeout_s, READY_POLL_S):
                raise PrometheusStartError(
                    f"prometheus exited with {self._process.returncode}; "
                    f"log {self.log_path}:\n{tail_log(self.log_path)}"
                )
        except TimeoutError as exc:
            self.stop()
            raise PrometheusStartError(
                f"prometheus at {self.url} not ready in time; log {self.log_path}:\n{tail_log(self.log_path)}"
            ) from exc
        except BaseException:
            self.stop()
            raise
        return time.monotonic() - started

    def stop(self, timeout_s: float = STOP_TIMEOUT_S) -> None:
        if self._process is not None:
            stop_child(self._process, timeout_s)

    def __enter__(self) -> PrometheusServer:
        self.start()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self.stop()
