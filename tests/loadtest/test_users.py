"""The Locust user against a trivial local server (no model): Poisson pacing gives the asked arrival rate,
server errors are counted (never a crash), and the load generator's own ceiling stays far above a model's."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator

import pytest

from tests.conftest import ROOT
from tests.loadtest.conftest import load_env, start_fake


@pytest.fixture(scope="module")
def fake_url() -> Iterator[str]:
    process, url = start_fake()
    yield url
    process.terminate()
    process.wait(10)


def run(url: str, out, *args: str) -> dict:
    command = [sys.executable, "-m", "loadtest", "run", "--url", url, "--out", str(out), *args]
    finished = subprocess.run(command, cwd=ROOT, env=load_env(), capture_output=True, text=True, timeout=120)
    assert finished.returncode == 0, finished.stderr
    return json.loads((out / "results.json").read_text())


def test_poisson_shape_delivers_the_arrival_rate(fake_url, tmp_path):
    results = run(fake_url, tmp_path, "--model", "fake", "--shape", "poisson", "--rate", "40", "--users", "16",
                  "--duration", "6s")  # fmt: skip
    assert 0.7 * 40 * 6 <= results["overall"]["requests"] <= 1.3 * 40 * 6


def test_server_errors_are_counted_not_fatal(tmp_path):
    process, url = start_fake("--fail-every", "3")
    try:
        results = run(url, tmp_path, "--model", "fake", "--users", "2", "--duration", "3s", "--max-requests", "30")
    finally:
        process.terminate()
        process.wait(10)
    assert (results["overall"]["requests"], results["overall"]["errors"]) == (30, 10)
    assert "HTTP 500: " in (tmp_path / "requests.csv").read_text()


def test_a_constant_run_keeps_all_its_users_sending(fake_url, tmp_path):
    """The generator's ceiling is measured by the README's run, not asserted here: this checks that 32 users all
    ran at once and every request they sent was answered and counted."""
    results = run(fake_url, tmp_path, "--model", "fake", "--users", "32", "--duration", "5s")
    overall = results["overall"]
    assert overall["errors"] == 0 and overall["ok"] == overall["requests"] >= 32
    assert max(stage["users"] for stage in results["stages"]) == 32
    rows = (tmp_path / "requests.csv").read_text().splitlines()[1:]
    assert len(rows) == overall["requests"]


def test_without_model_the_servers_one_model_is_used_and_named(fake_url, tmp_path):
    command = [sys.executable, "-m", "loadtest", "run", "--url", fake_url, "--users", "1", "--duration", "1s",
               "--max-requests", "3", "--out", str(tmp_path)]  # fmt: skip
    finished = subprocess.run(command, cwd=ROOT, env=load_env(), capture_output=True, text=True, timeout=120)
    assert finished.returncode == 0, finished.stderr
    assert "--model not given: load-testing 'fake'" in finished.stderr
    results = json.loads((tmp_path / "results.json").read_text())
    assert results["config"]["model"] == "fake" and results["overall"]["ok"] == 3


def test_servekit_cli_hosts_the_same_run(fake_url, tmp_path):
    """`servekit loadtest run` imports Locust late, inside an already-started CLI process; it must still work."""
    command = [
        sys.executable, "-c", "from serving.cli import main; main()", "loadtest", "run", "--url", fake_url,
        "--model", "fake", "--users", "2", "--duration", "2s", "--slo", "ttft_p99<1us", "--out", str(tmp_path),
    ]  # fmt: skip
    finished = subprocess.run(command, cwd=ROOT, env=load_env(), capture_output=True, text=True, timeout=60)
    assert finished.returncode == 2 and "bad unit 'us'" in finished.stderr
    command[-3] = "ttft_p99<0.001ms"
    finished = subprocess.run(command, cwd=ROOT, env=load_env(), capture_output=True, text=True, timeout=60)
    assert finished.returncode == 1 and "ttft_p99<0.001ms: observed" in finished.stderr
    assert json.loads((tmp_path / "results.json").read_text())["overall"]["requests"] > 0
