"""The canary load-test gate: a short load test pinned to one version; the rollout step proceeds only if its
SLOs hold. The rollout's load-test gate calls `run_gate` and records `report_path` in its audit log.

The test runs in a child process (`python -m loadtest run`): Locust gevent-patches whatever process imports
it, and the rollout controller lives in an asyncio server that must stay unpatched."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

GATE_MAX_TOKENS = "32"


@dataclass(frozen=True)
class GateRun:
    passed: bool
    breaches: list[str]  # the SLO lines that failed, or why the load test could not run
    report_path: Path  # report.html of the gate run (absent only when the test could not start)


def run_gate(url: str, model: str, version: str, slo: str, duration: float, users: int, out_dir: Path) -> GateRun:
    """Run a `duration`-second constant load of `users` users against `model`, pinned to `version`."""
    command = [
        sys.executable, "-m", "loadtest", "run", "--url", url, "--model", model, "--version", version,
        "--slo", slo, "--duration", f"{duration}s", "--users", str(users), "--shape", "constant",
        "--max-tokens", GATE_MAX_TOKENS, "--out", str(out_dir),
    ]  # fmt: skip
    env = {k: v for k, v in os.environ.items() if k != "LOCUST_SKIP_MONKEY_PATCH"}
    finished = subprocess.run(command, capture_output=True, text=True, env=env, check=False)
    report = out_dir / "report.html"
    results_path = out_dir / "results.json"
    if finished.returncode not in (0, 1) or not results_path.exists():
        tail = (finished.stderr or finished.stdout).strip().splitlines()[-3:]
        return GateRun(False, [f"load test failed (exit {finished.returncode}): {' '.join(tail)}"], report)
    slo_result = json.loads(results_path.read_text())["slo"]
    return GateRun(slo_result["passed"], slo_result["breaches"], report)
