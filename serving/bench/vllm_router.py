"""vLLM's own router (PyPI `vllm-router`, `make vllm-router-setup` installs it in `.venv-vllm-router`) in front of
given engines: the peer `servekit bench fleet` compares replica choice with. servekit only runs its binary."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

from serving.backends.process import spawn, wait_for_url
from serving.bench.session import free_port

VENV_BINARY = Path(__file__).resolve().parents[2] / ".venv-vllm-router" / "bin" / "vllm-router"
MISSING = "vllm-router is not installed (`make vllm-router-setup`)"


def binary() -> Path | None:
    """The venv's binary, else one on PATH; None when neither exists."""
    if VENV_BINARY.exists():
        return VENV_BINARY
    found = shutil.which("vllm-router")
    return Path(found) if found else None


def start(executable: Path, worker_urls: list[str], policy: str, log_path: Path) -> tuple[subprocess.Popen, str]:
    """The router on a free port with `--policy policy`, once it answers `/v1/models` (it needs a worker up)."""
    port = free_port()
    command = [
        str(executable), "--host", "127.0.0.1", "--port", str(port), "--worker-urls", *worker_urls,
        "--policy", policy, "--prometheus-port", str(free_port()), "--log-level", "warning",
    ]  # fmt: skip
    process = spawn(command, log_path)
    url = f"http://127.0.0.1:{port}"
    if not wait_for_url(process, f"{url}/v1/models", timeout_s=120):
        raise RuntimeError(f"vllm-router exited ({process.returncode}); log: {log_path}")
    return process, url
