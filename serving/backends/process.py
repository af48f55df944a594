"""Child processes servekit owns: started in their own process group, logged to a file, stopped with SIGTERM
then SIGKILL for the whole group (vLLM forks engine-core workers that must not outlive it). `ManagedProcess`
for engines under the gateway's event loop; `spawn`/`wait_for_url`/`stop_child` for the CLI, bench and tests."""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import logging
import os
import signal
import subprocess
import time
from pathlib import Path

import httpx

logger = logging.getLogger(__name__)

PR_SET_PDEATHSIG = 1
FD_DIR = "/proc/self/fd"


def die_with_parent() -> None:
    """Runs in a child before exec: if servekit's process dies abruptly, the kernel sends the child SIGTERM
    instead of leaving an orphan holding its port (and, for an engine, gigabytes of KV cache)."""
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


def stop_fd_inheritance() -> None:
    """Mark every descriptor of this process close-on-exec. uvloop's `subprocess_exec` ignores `close_fds`, so a
    child would otherwise inherit whatever inheritable descriptors its parent holds: under BentoML, the listening
    socket its arbiter passed the worker (an engine kept the gateway's port bound)."""
    if not os.path.isdir(FD_DIR):
        return
    for name in os.listdir(FD_DIR):
        with contextlib.suppress(OSError):  # the listing's own descriptor is gone by now
            if int(name) > 2 and os.get_inheritable(int(name)):
                os.set_inheritable(int(name), False)


def tail_log(log_path: Path, lines: int = 20) -> str:
    """The last `lines` lines of a child's log file ("" when there is none yet), for error messages."""
    try:
        return "\n".join(log_path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


class ManagedProcess:
    def __init__(self, command: list[str], env: dict[str, str], log_path: Path, terminate_group: bool = True) -> None:
        """`terminate_group=False` sends SIGTERM to the leader only: tritonserver unloads its Python-backend stubs
        itself, and a stub killed first leaves Triton waiting out its exit timeout for a model that cannot unload.
        The group is swept with SIGKILL either way."""
        self.command = command
        self.env = env
        self.log_path = log_path
        self.terminate_group = terminate_group
        self._process: asyncio.subprocess.Process | None = None

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process else None

    def exited(self) -> bool:
        return self._process is not None and self._process.returncode is not None

    @property
    def returncode(self) -> int | None:
        return self._process.returncode if self._process else None

    async def start(self) -> None:
        if self._process is not None and self._process.returncode is None:
            return
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        stop_fd_inheritance()
        with self.log_path.open("ab") as log:
            self._process = await asyncio.create_subprocess_exec(
                *self.command,
                env=self.env,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=log,
                stderr=asyncio.subprocess.STDOUT,
                start_new_session=True,
                preexec_fn=die_with_parent,
            )
        logger.info("started engine pid=%s, log %s", self._process.pid, self.log_path)

    async def stop(self, timeout_s: float = 20.0) -> None:
        process = self._process
        if process is None:
            return
        if process.returncode is None:
            if self.terminate_group:
                self._signal_group(process.pid, signal.SIGTERM)
            else:
                with contextlib.suppress(ProcessLookupError):
                    process.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(process.wait(), timeout_s)
            except TimeoutError:
                logger.warning("engine pid=%s ignored SIGTERM for %.0fs; killing", process.pid, timeout_s)
        # The leader may be gone while its workers linger in the group: always sweep the group.
        self._signal_group(process.pid, signal.SIGKILL)
        with contextlib.suppress(ProcessLookupError):
            await process.wait()

    def tail_log(self, lines: int = 20) -> str:
        return tail_log(self.log_path, lines)

    @staticmethod
    def _signal_group(pid: int, sig: signal.Signals) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pid, sig)


class ChildExitedError(RuntimeError):
    """A child process ended while something waited for it to become ready."""


def spawn(
    command: list[str], log_path: Path | None, env: dict[str, str] | None = None, cwd: Path | None = None
) -> subprocess.Popen[bytes]:
    """Start a child (a server, a Prometheus) in its own process group, dying with its parent, its output
    appended to `log_path` (the parent's terminal when None). The blocking counterpart of `ManagedProcess`,
    for the CLI, the benchmark and tests."""
    if log_path is None:
        return subprocess.Popen(command, env=env, cwd=cwd, start_new_session=True, preexec_fn=die_with_parent)
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("ab") as log:
        return subprocess.Popen(
            command, env=env, cwd=cwd, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
            start_new_session=True, preexec_fn=die_with_parent,
        )  # fmt: skip


def wait_for_url(process: subprocess.Popen[bytes], url: str, timeout_s: float, poll_s: float = 0.5) -> bool:
    """Poll `url` until it answers 200 (True), the child exits (False) or `timeout_s` passes (TimeoutError)."""
    deadline = time.monotonic() + timeout_s
    with httpx.Client(timeout=2.0) as client:
        while time.monotonic() < deadline:
            if process.poll() is not None:
                return False
            try:
                if client.get(url).status_code == 200:
                    return True
            except httpx.HTTPError:
                pass
            time.sleep(poll_s)
    raise TimeoutError(f"{url} did not answer 200 within {timeout_s:.0f}s")


def stop_child(process: subprocess.Popen[bytes], timeout_s: float = 60.0, group: bool = True) -> None:
    """SIGTERM (to the whole group, or the leader only), then SIGKILL for the group if it lingers."""
    if process.poll() is None:
        if group:
            ManagedProcess._signal_group(process.pid, signal.SIGTERM)
        else:
            process.send_signal(signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(timeout_s)
    ManagedProcess._signal_group(process.pid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        process.wait(5)
