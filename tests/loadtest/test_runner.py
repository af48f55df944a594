"""End to end against the real server (session fixture): `python -m loadtest run` in a child process, as a
user runs it; outputs, numbers, SLO exit codes, bad input."""

from __future__ import annotations

import csv
import json
import re
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from loadtest import runner
from loadtest.runner import LoadTestError
from tests.conftest import ROOT, free_port
from tests.loadtest.conftest import load_env

MODEL = "smollm2-135m-instruct"


def loadtest(*args: str) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "loadtest", "run", *args]
    return subprocess.run(command, cwd=ROOT, env=load_env(), capture_output=True, text=True, timeout=180)


@pytest.fixture(scope="module")
def sample_run(server, tmp_path_factory) -> tuple[Path, subprocess.CompletedProcess[str]]:
    """One ~18 s constant run of 8 streaming users with sampled lengths and an easy SLO."""
    out = tmp_path_factory.mktemp("run")
    finished = loadtest(
        "--url", server.base_url, "--model", MODEL, "--users", "8", "--duration", "18s", "--max-tokens", "16:48",
        "--slo", "ttft_p95<30s,error_rate<0.5,tokens_per_s>1", "--out", str(out),
    )  # fmt: skip
    return out, finished


def test_run_writes_sane_results(server, sample_run):
    out, finished = sample_run
    assert finished.returncode == 0, finished.stderr
    assert "SLO passed" in finished.stderr and "load test summary" in finished.stderr
    results = json.loads((out / "results.json").read_text())
    overall = results["overall"]
    assert overall["requests"] >= 8 and overall["errors"] == 0
    assert overall["tokens_per_s"] > 0 and overall["request_rate"] > 0 and overall["goodput"] == 1.0
    for metric in ("ttft", "itl", "latency"):
        stats = overall[metric]
        assert 0 < stats["p50"] <= stats["p95"] <= stats["p99"], metric
    assert overall["ttft"]["p50"] < overall["latency"]["p50"]
    served = httpx.post(
        f"{server.base_url}/v1/chat/completions",
        json={"model": MODEL, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 1},
        timeout=60,
    ).headers["x-servekit-version"]
    assert results["versions"] == [served] and list(results["by_version"]) == [served]
    assert results["slo"] == {"objectives": ["ttft_p95<30s", "error_rate<0.5", "tokens_per_s>1"], "passed": True,
                              "breaches": []}  # fmt: skip
    assert results["timeline"] and results["stages"][-1]["users"] == 8


def test_csv_has_one_row_per_request(sample_run):
    out, _ = sample_run
    with (out / "requests.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == json.loads((out / "results.json").read_text())["overall"]["requests"]
    assert all(16 <= int(r["output_tokens"]) <= 48 and r["output_tokens"] == r["max_tokens"] for r in rows)


def test_html_report_holds_the_plots(sample_run):
    out, _ = sample_run
    page = (out / "report.html").read_text()
    assert page.index("SLO PASSED") < page.index("<h2>")
    assert len(re.findall(r'src="data:image/png;base64,[A-Za-z0-9+/=]{1000,}"', page)) == 3  # no sweep: no curve
    assert "<script" not in page


def test_impossible_slo_exits_1_and_prints_the_breach(server, tmp_path):
    finished = loadtest(
        "--url", server.base_url, "--model", MODEL, "--users", "2", "--duration", "10m", "--max-requests", "4",
        "--max-tokens", "8", "--slo", "ttft_p50<1ms,error_rate<0.5", "--out", str(tmp_path),
    )  # fmt: skip
    assert finished.returncode == 1, finished.stderr
    assert "SLO breached" in finished.stderr and "ttft_p50<1ms: observed ttft_p50=" in finished.stderr
    assert "error_rate<0.5" not in finished.stderr.split("SLO breached")[1]
    assert json.loads((tmp_path / "results.json").read_text())["overall"]["requests"] == 4


@pytest.mark.parametrize("endpoint", ["chat", "completions"])
def test_other_endpoints(server, tmp_path, endpoint):
    finished = loadtest(
        "--url", server.base_url, "--model", MODEL, "--users", "2", "--duration", "10s", "--max-requests", "2",
        "--max-tokens", "8", "--endpoint", endpoint, "--out", str(tmp_path),
    )  # fmt: skip
    assert finished.returncode == 0, finished.stderr
    overall = json.loads((tmp_path / "results.json").read_text())["overall"]
    assert (overall["ok"], overall["output_tokens"]) == (2, 16)
    assert (overall["ttft"]["p50"] is None) == (endpoint == "chat")  # no stream, no first token to time


def test_unreachable_url_fails_before_any_load(tmp_path):
    finished = loadtest("--url", f"http://127.0.0.1:{free_port()}", "--model", MODEL, "--out", str(tmp_path / "x"))
    assert finished.returncode == 2
    assert "cannot reach" in finished.stderr and "/v1/models" in finished.stderr
    assert not (tmp_path / "x").exists()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--shape", "zigzag"], "valid shapes: constant, step, sweep, poisson"),
        (["--slo", "ttft_p95<fast"], "'ttft_p95<fast'"),
        (["--url", "http://192.0.2.1:3000"], "--allow-remote"),
    ],
)
def test_bad_input_is_refused_with_a_clear_message(tmp_path, args, message):
    base = {"--url": "http://127.0.0.1:9", "--model": MODEL, "--out": str(tmp_path)}
    base.update(dict(zip(args[::2], args[1::2], strict=True)))
    finished = loadtest(*[item for pair in base.items() for item in pair])
    assert finished.returncode == 2 and message in finished.stderr.replace("\n", " ")


def listing(monkeypatch: pytest.MonkeyPatch, *cards: dict) -> None:
    """`/v1/models` answers `cards` (the probe's only network call)."""
    answer = httpx.Response(200, json={"object": "list", "data": list(cards)}, request=httpx.Request("GET", "http://x"))
    monkeypatch.setattr(runner.httpx, "get", lambda *_, **__: answer)


def test_without_model_the_one_served_model_is_load_tested_and_routes_do_not_count(monkeypatch):
    base = {"id": MODEL, "root": f"{MODEL}:abc", "engine": "vllm"}
    listing(monkeypatch, base, {"id": "assistant", "root": "assistant", "engine": "route"})
    assert runner.probe("http://127.0.0.1:9", None) == MODEL
    listing(monkeypatch, {"id": "plain-vllm-model", "root": "/models/x"})  # any OpenAI server: no `engine`
    assert runner.probe("http://127.0.0.1:9", None) == "plain-vllm-model"


def test_without_model_several_served_models_are_refused_and_listed(monkeypatch):
    listing(monkeypatch, {"id": MODEL, "engine": "vllm"}, {"id": "support-bot:a1", "engine": "vllm"})
    with pytest.raises(LoadTestError, match=rf"serves 2 models \({MODEL}, support-bot:a1\); name one with --model"):
        runner.probe("http://127.0.0.1:9", None)
    listing(monkeypatch)
    with pytest.raises(LoadTestError, match=r"serves 0 models \(none\)"):
        runner.probe("http://127.0.0.1:9", None)


def test_the_probe_sends_openai_api_key_and_a_refused_key_says_which_variable(monkeypatch):
    sent: list[dict] = []

    def answer(url: str, headers: dict, **_: object) -> httpx.Response:
        sent.append(headers)
        status = 200 if headers.get("Authorization") == "Bearer sk-good" else 401
        return httpx.Response(status, json={"data": [{"id": MODEL}]}, request=httpx.Request("GET", url))

    monkeypatch.setattr(runner.httpx, "get", answer)
    monkeypatch.setenv("OPENAI_API_KEY", "sk-good")
    assert runner.probe("http://127.0.0.1:9", None) == MODEL
    monkeypatch.delenv("OPENAI_API_KEY")
    with pytest.raises(LoadTestError, match=r"refused the API key \(401\): set OPENAI_API_KEY"):
        runner.probe("http://127.0.0.1:9", None)
    assert sent == [{"Authorization": "Bearer sk-good"}, {}]
