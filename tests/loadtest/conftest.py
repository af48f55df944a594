"""Locust gevent-patches any process that imports it; pytest's must stay unpatched (the other suites run
asyncio and threads in it). Tests here import Locust's classes with patching off and run real load in child
processes (`python -m loadtest`, which patches itself), with `load_env()` as their environment."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import httpx

os.environ["LOCUST_SKIP_MONKEY_PATCH"] = "1"

from tests.conftest import ROOT, free_port


def load_env() -> dict[str, str]:
    """The environment for a child that runs load: patching back on."""
    return {k: v for k, v in os.environ.items() if k != "LOCUST_SKIP_MONKEY_PATCH"}


def start_fake(*args: str) -> tuple[subprocess.Popen[bytes], str]:
    """Start the trivial server and wait until it answers /v1/models."""
    port = free_port()
    process = subprocess.Popen([sys.executable, "-m", "loadtest.fake_server", "--port", str(port), *args], cwd=ROOT)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and process.poll() is None:
        try:
            httpx.get(f"{url}/v1/models", timeout=1).raise_for_status()
            return process, url
        except httpx.HTTPError:
            time.sleep(0.1)
    process.kill()
    raise RuntimeError("the fake server did not come up")
