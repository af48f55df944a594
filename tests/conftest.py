"""Shared fixtures. The real engine starts once per test session: `bentoml build` the project, then
`bentoml serve` the built bento (managed vLLM child from the bento's own weights). What the gateway answered
while the engine was still starting is recorded for the readiness tests."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import psutil
import pytest

from serving.bench.adapters import build_random_adapter
from serving.bench.session import free_port
from serving.bench.session import stop_gateway as stop
from serving.settings import load_settings

ROOT = Path(__file__).resolve().parent.parent
SHELL_ENV = dict(os.environ)
"""The environment the tests were started with, before servekit's settings touched it: what a user's shell has."""
ENGINE_READY_TIMEOUT_S = 900
GATEWAY_UP_TIMEOUT_S = 120
BUILD_TIMEOUT_S = 600
# pytest-timeout times a test's whole protocol, set-up included: the first test to use one of these session
# fixtures pays for its start-up, bounded by the fixture's own waits, on top of its own limit.
SESSION_START_BUDGET_S = {"built_bento": BUILD_TIMEOUT_S, "server": GATEWAY_UP_TIMEOUT_S + ENGINE_READY_TIMEOUT_S}


@dataclass
class RunningServer:
    base_url: str
    engine_port: int
    process: subprocess.Popen[bytes]
    bento_tag: str | None = None
    before_ready: dict[str, httpx.Response] = field(default_factory=dict)

    @property
    def engine_url(self) -> str:
        return f"http://127.0.0.1:{self.engine_port}"


def wait_for(url: str, process: subprocess.Popen[bytes], timeout_s: float, status: int = 200) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"server exited with {process.returncode} while waiting for {url}")
        try:
            if httpx.get(url, timeout=2.0).status_code == status:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.25)
    raise TimeoutError(f"{url} did not answer {status} within {timeout_s:.0f}s")


def listening_pid(port: int) -> int:
    """The process listening on `port` (the engine, for the engine's port)."""
    for conn in psutil.net_connections(kind="tcp"):
        if conn.laddr and conn.laddr.port == port and conn.status == psutil.CONN_LISTEN and conn.pid:
            return conn.pid
    raise LookupError(f"nothing listens on {port}")


def start_bentoml(
    target: str, env_overrides: dict[str, str], log_path: Path, port: int | None = None
) -> tuple[subprocess.Popen[bytes], str]:
    port = port or free_port()
    env = {**os.environ, **env_overrides}
    log = log_path.open("wb")
    process = subprocess.Popen(
        [sys.executable, "-m", "bentoml", "serve", target, "--host", "127.0.0.1", "--port", str(port)],
        cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )  # fmt: skip
    return process, f"http://127.0.0.1:{port}"


class ManualClock:
    """A clock tests move by hand (`clock.now = 10.0`) for time-based logic: buckets, breakers."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture(scope="session", autouse=True)
def settings():
    """Loaded before any test, so every test (also one that only reaches the registry through the gateway) sees
    the store the project's settings name (BentoML's own unless `bentoml_home` is set)."""
    return load_settings()


@pytest.fixture(scope="session")
def artifacts_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("servekit")


@pytest.fixture(scope="session")
def built_bento(settings) -> str:
    """`bentoml build` of this checkout; returns the bento tag."""
    result = subprocess.run(
        [sys.executable, "-m", "bentoml", "build", "--output", "tag"],
        cwd=ROOT, capture_output=True, text=True, check=False, timeout=BUILD_TIMEOUT_S,
    )  # fmt: skip
    assert result.returncode == 0, f"bentoml build failed:\n{result.stdout}\n{result.stderr}"
    tag = result.stdout.strip().splitlines()[-1].removeprefix("__tag__:")
    return tag


@pytest.fixture(scope="session")
def server(built_bento: str, artifacts_dir: Path) -> Iterator[RunningServer]:
    engine_port = free_port()
    env = {
        "SERVEKIT_ENGINE__PORT": str(engine_port),
        "SERVEKIT_HOME": str(artifacts_dir / "home"),
        "SERVEKIT_ENGINE__KV_CACHE_SPACE_GIB": "1",
        "SERVEKIT_FAULTS__ENABLED": "true",
    }
    process, base_url = start_bentoml(built_bento, env, artifacts_dir / "bento-serve.log")
    running = RunningServer(base_url, engine_port, process, bento_tag=built_bento)
    try:
        wait_for(f"{base_url}/health", process, GATEWAY_UP_TIMEOUT_S)
        running.before_ready["ready"] = httpx.get(f"{base_url}/ready")
        running.before_ready["chat"] = httpx.post(
            f"{base_url}/v1/chat/completions",
            json={"model": "smollm2-135m-instruct", "messages": [{"role": "user", "content": "hi"}]},
        )
        wait_for(f"{base_url}/ready", process, ENGINE_READY_TIMEOUT_S)
        yield running
    finally:
        stop(process)
        log = (artifacts_dir / "bento-serve.log").read_text(errors="replace")
        sys.stderr.write(f"\n--- bentoml serve log (tail) ---\n{log[-4000:]}\n")


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Tests that kill the engine run last, so the others see a steady server. Runs after deselection (`-k`), so
    the start-up budget goes to the first test that really runs with each session fixture."""
    items.sort(key=lambda item: item.get_closest_marker("disruptive") is not None)
    for fixture, budget_s in SESSION_START_BUDGET_S.items():
        first = next((item for item in items if fixture in item.fixturenames), None)
        if first is not None and (limit_s := timeout_limit_s(first)) > 0:  # 0: timeouts switched off
            first.add_marker(pytest.mark.timeout(limit_s + budget_s), append=False)


def timeout_limit_s(item: pytest.Item) -> float:
    """The item's pytest-timeout limit: its own marker, else `--timeout`, else the ini default."""
    marker = item.get_closest_marker("timeout")
    if marker is not None and marker.args:
        return float(marker.args[0])
    return float(item.config.getoption("timeout") or item.config.getini("timeout") or 0)


@pytest.fixture(scope="session")
def random_adapters(settings, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict]:
    """Two servable adapters, one of too high a rank, one on layers the engine does not carry adapters on, and one
    registered for another base."""
    import bentoml

    from serving.registry.adapters import import_adapter
    from serving.registry.store import RegisteredModel, get_model

    base = get_model(settings.model.name)
    root = tmp_path_factory.mktemp("adapters")
    made = {}
    attention, mlp = ("q_proj", "v_proj"), ("gate_proj", "up_proj")
    for key, rank, seed, targets in [("a", 8, 1, attention), ("b", 8, 2, attention), ("wide", 32, 3, attention),
                                     ("mlp", 8, 4, mlp)]:  # fmt: skip
        path = build_random_adapter(base.path, root / key, rank, seed, targets)
        made[key] = import_adapter(path, f"test-adapter-{key}", base)[0]
    other_base = RegisteredModel(tag="other-base:v1", path=base.path, labels={}, metadata={})
    made["foreign"] = import_adapter(root / "a", "test-adapter-foreign", other_base)[0]
    yield made
    for model in made.values():
        bentoml.models.delete(model.tag)


@contextlib.contextmanager
def base_copy(settings, name: str) -> Iterator[str]:
    """The default model's weights pulled under another name (the registry path): a base version of its own,
    deleted afterwards. Yields its tag."""
    import bentoml
    from typer.testing import CliRunner

    from serving.cli import app as cli
    from serving.registry.store import get_model

    result = CliRunner().invoke(cli, ["models", "pull", str(get_model(settings.model.name).path), "--name", name])
    assert result.exit_code == 0, result.output
    tag = get_model(name).tag
    try:
        yield tag
    finally:
        bentoml.models.delete(tag)


@contextlib.contextmanager
def throwaway_adapter(settings, directory: Path, name: str, seed: int) -> Iterator[str]:
    """A random rank-8 adapter on the default model's attention layers, registered as `name`; deleted afterwards.
    Yields its tag."""
    import bentoml

    from serving.registry.adapters import import_adapter
    from serving.registry.store import get_model

    base = get_model(settings.model.name)
    path = build_random_adapter(base.path, directory / name, 8, seed, ("q_proj", "v_proj"))
    model = import_adapter(path, name, base)[0]
    try:
        yield model.tag
    finally:
        bentoml.models.delete(model.tag)
