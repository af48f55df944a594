"""The sweep's order of runs, each run's measurement stubbed (the real runs: tests/serving/cli/test_capacity.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from loadtest import sweep as sweep_module
from loadtest.capacity import Point
from loadtest.sweep import SweepConfig, sweep


def stub(monkeypatch: pytest.MonkeyPatch, closed: dict[int, float], open_ok_below: float) -> list[tuple]:
    """Closed level N yields goodput closed[N] (failing ttft where negative); open rates fail from `open_ok_below`."""
    calls: list[tuple] = []

    def measure(config, mode, users, rate=None):
        calls.append((mode, users, rate))
        goodput = abs(closed[users]) if mode == "closed" else rate
        failed = (mode == "closed" and closed[users] < 0) or (mode == "open" and rate >= open_ok_below)
        return Point(mode, users, rate, 10, goodput, goodput, 0.0, 0.1, 0.01, 1.0,
                     ("ttft_p95<1s: observed ttft_p95=2",) if failed else ())  # fmt: skip

    monkeypatch.setattr(sweep_module, "measure", measure)
    return calls


def test_closed_levels_stop_when_the_slo_broke_then_open_rates_rise_until_one_fails(monkeypatch):
    calls = stub(monkeypatch, {1: 1.0, 2: 2.0, 4: 3.0, 8: -2.5, 16: 9.0}, open_ok_below=3.5)
    seen: list[Point] = []
    points = sweep(SweepConfig(url="u", model="m", slo="ttft_p95<1s", out=Path("o"), max_concurrency=16), seen.append)
    assert [c for c in calls if c[0] == "closed"] == [("closed", n, None) for n in (1, 2, 4, 8)]  # 16 never runs
    assert [c[2] for c in calls if c[0] == "open"] == [1.5, 2.25, 3.0, 3.75]  # 0.5x..1.25x of 3 req/s, then stop
    assert seen == points and len(points) == 8


def test_no_closed_level_meeting_the_slo_runs_no_open_loop(monkeypatch):
    calls = stub(monkeypatch, {1: -1.0, 2: -2.0, 4: -3.0}, open_ok_below=0)
    sweep(SweepConfig(url="u", model="m", slo="ttft_p95<1s", out=Path("o"), max_concurrency=4), lambda _: None)
    assert calls == [("closed", 1, None), ("closed", 2, None)]
