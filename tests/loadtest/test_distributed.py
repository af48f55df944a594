"""Locust's master/worker mode against the trivial server: every request the server received is counted once in
the master's outputs, which have the same form as a single-process run's; remote workers join a `--master`."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from loadtest.cli import plan_distribution
from loadtest.distributed import budget_share
from tests.conftest import ROOT, free_port
from tests.loadtest.conftest import load_env, start_fake

SLO = "ttft_p95<1s,itl_p95<100ms,error_rate<0.01"


@pytest.fixture(scope="module")
def fake_url() -> Iterator[str]:
    process, url = start_fake("--tokens", "4")
    yield url
    process.terminate()
    process.wait(10)


def received(url: str) -> int:
    return httpx.get(f"{url}/stats").json()["generations"]


def loadtest(url: str, out: Path, *args: str) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "loadtest", "run", "--url", url, "--model", "fake", "--max-tokens", "4",
               "--slo", SLO, "--out", str(out), *args]  # fmt: skip
    return subprocess.run(command, cwd=ROOT, env=load_env(), capture_output=True, text=True, timeout=120)


def csv_rows(out: Path) -> list[dict[str, str]]:
    with (out / "requests.csv").open() as handle:
        return list(csv.DictReader(handle))


def test_two_local_workers_count_every_request_once(fake_url, tmp_path):
    before = received(fake_url)
    finished = loadtest(fake_url, tmp_path, "--workers", "2", "--users", "6", "--duration", "4s")
    assert finished.returncode == 0, finished.stderr
    results = json.loads((tmp_path / "results.json").read_text())
    sent = received(fake_url) - before
    assert sent > 6 and results["overall"]["requests"] == results["overall"]["ok"] == sent
    assert len(csv_rows(tmp_path)) == sent
    assert [stage["users"] for stage in results["stages"]] == [6]  # the run's level, not a worker's share
    assert "2 workers connected" in finished.stderr
    assert sorted(p.name for p in (tmp_path / "workers").iterdir()) == ["worker-0.log", "worker-1.log"]


def test_distributed_and_single_process_runs_have_the_same_form(fake_url, tmp_path):
    runs = {}
    for name, extra in (("single", ()), ("distributed", ("--workers", "2"))):
        finished = loadtest(fake_url, tmp_path / name, "--users", "2", "--duration", "2s", *extra)
        assert finished.returncode == 0, finished.stderr
        assert "SLO passed" in finished.stderr
        runs[name] = json.loads((tmp_path / name / "results.json").read_text())
    single, distributed = runs["single"], runs["distributed"]
    assert single.keys() == distributed.keys() and single["overall"].keys() == distributed["overall"].keys()
    assert single["slo"] == distributed["slo"] == {"objectives": SLO.split(","), "passed": True, "breaches": []}
    for name in runs:
        assert "SLO PASSED" in (tmp_path / name / "report.html").read_text()


def test_a_breached_slo_fails_a_distributed_run_as_it_fails_a_single_one(fake_url, tmp_path):
    for name, extra in (("single", ()), ("distributed", ("--workers", "2"))):
        out = tmp_path / name
        finished = loadtest(fake_url, out, "--users", "2", "--duration", "2s", "--slo", "ttft_p50<10s,ttft_p95<0.001ms",
                            *extra)  # fmt: skip
        assert finished.returncode == 1, finished.stderr
        breaches = json.loads((out / "results.json").read_text())["slo"]["breaches"]
        assert [line.split(":")[0] for line in breaches] == ["ttft_p95<0.001ms"]


def test_the_request_budget_is_split_over_the_workers(fake_url, tmp_path):
    before = received(fake_url)
    finished = loadtest(fake_url, tmp_path, "--workers", "2", "--users", "4", "--duration", "20s",
                        "--max-requests", "7")  # fmt: skip
    assert finished.returncode == 0, finished.stderr
    assert received(fake_url) - before == json.loads((tmp_path / "results.json").read_text())["overall"]["requests"]
    assert received(fake_url) - before == 7


def test_poisson_arrivals_split_over_workers_still_add_up_to_the_rate(fake_url, tmp_path):
    finished = loadtest(fake_url, tmp_path, "--workers", "2", "--shape", "poisson", "--rate", "40", "--users", "16",
                        "--duration", "6s")  # fmt: skip
    assert finished.returncode == 0, finished.stderr
    assert 0.7 * 40 * 6 <= json.loads((tmp_path / "results.json").read_text())["overall"]["requests"] <= 1.3 * 40 * 6


def test_a_master_runs_the_workers_that_connect_to_it(fake_url, tmp_path):
    """`--master --workers 1` binds a port and waits; `--worker --master-host H` joins from anywhere."""
    port = str(free_port())
    worker = subprocess.Popen(
        [sys.executable, "-m", "loadtest", "run", "--worker", "--master-host", "127.0.0.1", "--master-port", port],
        cwd=ROOT, env=load_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        before = received(fake_url)
        finished = loadtest(fake_url, tmp_path, "--master", "--workers", "1", "--master-port", port,
                            "--master-bind-host", "127.0.0.1", "--users", "2", "--duration", "2s")  # fmt: skip
        assert finished.returncode == 0, finished.stderr
        results = json.loads((tmp_path / "results.json").read_text())
        assert results["overall"]["requests"] == received(fake_url) - before > 0
        assert not (tmp_path / "workers").exists()  # no local workers were started
    finally:
        worker.terminate()
        worker.wait(30)


def test_budget_shares_add_up_to_the_limit():
    assert [budget_share(7, 3, i) for i in range(3)] == [3, 2, 2]
    assert sum(budget_share(1, 4, i) for i in range(4)) == 1
    assert budget_share(None, 2, 0) is None


def test_master_mode_needs_a_worker_count():
    with pytest.raises(ValueError, match="--workers must be >= 1 with --master"):
        plan_distribution(0, True, "*", 5557)
    assert plan_distribution(0, False, "*", 5557) is None
    local = plan_distribution(3, False, "*", 5557)
    assert local is not None and (local.workers, local.local, local.port) == (3, True, 0)
