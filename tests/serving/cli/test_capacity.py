"""`servekit capacity` as a user runs it: against the trivial server (a throwaway version in a private BentoML
store: profile written, plot drawn, profile stored, `models show` prints it; exit 1 and 2), and one short sweep
against the real engine."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator

import pytest

from tests.conftest import ROOT
from tests.loadtest.conftest import load_env, start_fake

TAG = "capacity-fake:v1"
SLO = "ttft_p95<1s,itl_p95<100ms,error_rate<0.01"


def servekit(*args: str, env: dict[str, str], timeout: float = 300) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-c", "from serving.cli import main; main()", *args]
    return subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def store_env(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """A private BentoML store holding one throwaway version, TAG (the project's store is never touched)."""
    home = tmp_path_factory.mktemp("bentoml")
    weights = tmp_path_factory.mktemp("weights")
    (weights / "config.json").write_text("{}")
    env = {**load_env(), "BENTOML_HOME": str(home), "COLUMNS": "200"}
    name, version = TAG.split(":")
    register = (
        "from pathlib import Path; from serving.registry.store import import_directory; "
        f"import_directory({name!r}, {version!r}, Path({str(weights)!r}), {{}}, {{'kind': 'base'}})"
    )
    subprocess.run([sys.executable, "-c", register], cwd=ROOT, env=env, check=True, timeout=120)
    return env


@pytest.fixture(scope="module")
def fake_url() -> Iterator[str]:
    process, url = start_fake("--tokens", "4", "--serves", TAG)
    yield url
    process.terminate()
    process.wait(10)


def test_a_sweep_writes_the_profile_and_plot_and_stores_the_profile_with_the_version(store_env, fake_url, tmp_path):
    finished = servekit("capacity", TAG, "--url", fake_url, "--slo", SLO, "--duration", "2s", "--max-concurrency",
                        "2", "--max-tokens", "4", "--out", str(tmp_path), env=store_env)  # fmt: skip
    assert finished.returncode == 0, finished.stdout + finished.stderr
    assert "closed                1 users:" in finished.stdout and "closed                2 users:" in finished.stdout
    profile = json.loads((tmp_path / "profile.json").read_text())
    assert profile["version"] == TAG and profile["slo"] == SLO.split(",")
    assert profile["engine"]["engine"] == "fake" and profile["machine"]["cpu_cores"] == os.cpu_count()
    closed = [p for p in profile["curve"] if p["mode"] == "closed"]
    opened = [p for p in profile["curve"] if p["mode"] == "open"]
    assert [p["concurrency"] for p in closed] == [1, 2] and opened
    assert profile["knee"]["concurrency"] in {p["concurrency"] for p in closed if p["meets_slo"]}
    assert profile["knee"]["goodput_rate"] == max(p["goodput_rate"] for p in closed if p["meets_slo"])
    assert (tmp_path / "capacity.png").read_bytes()[:4] == b"\x89PNG"
    assert "knee:" in (tmp_path / "capacity.html").read_text()
    assert len(list((tmp_path / "points").iterdir())) == len(profile["curve"])

    shown = servekit("models", "show", TAG, env=store_env)
    assert shown.returncode == 0, shown.stderr
    assert f"capacity (SLO {', '.join(SLO.split(','))}" in shown.stdout
    assert f'"concurrency": {profile["knee"]["concurrency"]}' in shown.stdout


def test_an_slo_no_load_meets_exits_1_with_the_closest_point_and_its_failed_clause(store_env, fake_url, tmp_path):
    slo = "ttft_p95<0.001ms,error_rate<0.5"
    finished = servekit("capacity", TAG, "--url", fake_url, "--slo", slo, "--duration", "1s", "--max-concurrency", "2",
                        "--no-store", "--out", str(tmp_path), env=store_env)  # fmt: skip
    assert finished.returncode == 1, finished.stdout + finished.stderr
    assert "no load level met the SLO" in finished.stdout
    assert "failed ttft_p95<0.001ms: observed ttft_p95=" in finished.stdout
    assert "error_rate<0.5" not in finished.stdout.split("closest:")[1]
    assert json.loads((tmp_path / "profile.json").read_text())["knee"] is None
    assert not any(p["mode"] == "open" for p in json.loads((tmp_path / "profile.json").read_text())["curve"])


def test_an_unknown_version_exits_2_naming_what_is_served(store_env, fake_url, tmp_path):
    finished = servekit("capacity", "nope:v9", "--url", fake_url, "--slo", SLO, "--out", str(tmp_path / "x"),
                        env=store_env)  # fmt: skip
    assert finished.returncode == 2
    assert f"'nope:v9' is not served by {fake_url}; it serves: {TAG}" in finished.stdout
    assert not (tmp_path / "x").exists()


def test_a_malformed_slo_exits_2(store_env, fake_url, tmp_path):
    finished = servekit("capacity", TAG, "--url", fake_url, "--slo", "ttft_p95<fast", env=store_env)
    assert finished.returncode == 2 and "'ttft_p95<fast'" in finished.stdout


def test_a_short_sweep_against_the_real_engine(server, tmp_path):
    """Three levels of a few seconds each: the shape of the profile, not the engine's speed."""
    env = {**load_env(), "COLUMNS": "200"}
    finished = servekit("capacity", "smollm2-135m-instruct", "--url", server.base_url, "--slo",
                        "ttft_p95<60s,error_rate<0.5", "--duration", "4s", "--max-concurrency", "4", "--max-tokens",
                        "8", "--no-open-loop", "--no-store", "--out", str(tmp_path), env=env, timeout=600)  # fmt: skip
    assert finished.returncode == 0, finished.stdout + finished.stderr
    profile = json.loads((tmp_path / "profile.json").read_text())
    assert profile["version"].startswith("smollm2-135m-instruct:") and profile["engine"]["engine"] == "vllm"
    assert [p["concurrency"] for p in profile["curve"]] == [1, 2, 4]
    assert all(p["requests"] > 0 and p["ttft_p95"] > 0 for p in profile["curve"])
    assert profile["knee"]["concurrency"] in {1, 2, 4}
    assert (tmp_path / "capacity.png").is_file()
