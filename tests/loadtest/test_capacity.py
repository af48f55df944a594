"""The knee finder and the sweep's rules on synthetic curves: no load is run here."""

from __future__ import annotations

import pytest

from loadtest.capacity import (
    Point,
    best_failing,
    build_profile,
    closed_levels,
    knee,
    open_loop_plan,
    sweep_is_over,
)


def point(users: int, goodput: float, *failed: str, mode: str = "closed", rate: float | None = None) -> Point:
    return Point(
        mode=mode, concurrency=users, offered_rate=rate, requests=100, request_rate=goodput + 1, goodput_rate=goodput,
        error_rate=0.0, ttft_p95=0.2, itl_p95=0.02, latency_p95=2.0,
        breaches=tuple(f"{clause}: observed x=1" for clause in failed),
    )  # fmt: skip


def test_the_knee_is_the_most_goodput_among_points_that_meet_every_clause():
    curve = [point(1, 2.0), point(2, 3.9), point(4, 7.5), point(8, 9.0, "ttft_p95<1s"), point(16, 4.0, "ttft_p95<1s")]
    assert knee(curve) == curve[2]  # 8 users carry more, but break the SLO


def test_a_tie_goes_to_the_lighter_load():
    assert knee([point(4, 5.0), point(8, 5.0)]).concurrency == 4


def test_no_point_meeting_the_slo_has_no_knee_and_the_closest_point_names_its_failed_clauses():
    curve = [
        point(1, 1.0, "ttft_p95<1s", "itl_p95<100ms"),
        point(2, 1.5, "itl_p95<100ms"),
        point(4, 3.0, "itl_p95<100ms"),
    ]
    assert knee(curve) is None
    closest = best_failing(curve)
    assert closest == curve[2] and closest.failed_clauses == ["itl_p95<100ms"]
    with pytest.raises(ValueError, match="no points"):
        best_failing([])


@pytest.mark.parametrize(
    ("curve", "over"),
    [
        ([point(1, 1.0)], False),
        ([point(1, 1.0), point(2, 0.9, "ttft_p95<1s")], True),
        ([point(1, 1.0, "ttft_p95<1s")], False),  # one failing level alone is not clear yet
        ([point(1, 1.0, "ttft_p95<1s"), point(2, 2.0, "ttft_p95<1s")], True),
        ([point(1, 1.0), point(2, 2.0), point(4, 2.5)], False),
    ],
)
def test_the_closed_loop_sweep_stops_once_the_slo_broke_clearly(curve, over):
    assert sweep_is_over(curve) is over


def test_a_failing_level_with_more_goodput_than_any_passing_one_does_not_end_the_sweep():
    assert not sweep_is_over([point(1, 1.0), point(2, 2.5, "itl_p95<100ms")])


def test_closed_levels_double_up_to_the_highest():
    assert closed_levels(1) == [1]
    assert closed_levels(8) == [1, 2, 4, 8]
    assert closed_levels(6) == [1, 2, 4, 6]
    with pytest.raises(ValueError):
        closed_levels(0)


def test_open_loop_rates_lie_around_the_closed_knee_and_the_pool_does_not_hold_arrivals_back():
    plan = open_loop_plan(point(4, 9.0), factors=(0.5, 1.0, 1.5))  # request_rate 10/s, latency p95 2 s
    assert plan == [(5.0, 20), (10.0, 40), (15.0, 60)]


def test_the_profile_takes_concurrency_from_the_closed_knee_and_the_rate_from_the_open_one():
    curve = [point(1, 2.0), point(2, 3.5), point(4, 3.0, "ttft_p95<1s"),
             point(8, 3.0, mode="open", rate=3.0), point(8, 3.4, mode="open", rate=4.0),
             point(8, 2.0, "ttft_p95<1s", mode="open", rate=5.0)]  # fmt: skip
    profile = build_profile("m:v1", ["ttft_p95<1s"], curve, {}, {}, {}, "2026-12-07T00:00:00+00:00")
    assert profile["knee"] == {"concurrency": 2, "request_rate": 4.5, "goodput_rate": 3.5, "ttft_p95": 0.2,
                               "itl_p95": 0.02, "max_arrival_rate": 4.0}  # fmt: skip
    assert [p["meets_slo"] for p in profile["curve"]] == [True, True, False, True, True, False]
    assert profile["curve"][2]["breaches"] == ["ttft_p95<1s: observed x=1"]
    assert build_profile("m:v1", ["ttft_p95<1s"], curve[2:3], {}, {}, {}, "t")["knee"] is None


def test_a_point_is_read_from_a_runs_results():
    results = {
        "duration_s": 10.0,
        "overall": {"requests": 50, "request_rate": 4.8, "goodput": 0.8, "error_rate": 0.04,
                    "ttft": {"p95": 0.3}, "itl": {"p95": 0.05}, "latency": {"p95": 1.2}},
        "slo": {"breaches": ["error_rate<0.01: observed error_rate=0.04"]},
    }  # fmt: skip
    read = Point.from_results(results, "closed", 4, None)
    assert (read.goodput_rate, read.failed_clauses, read.meets) == (4.0, ["error_rate<0.01"], False)
    assert Point.from_json({k: v for k, v in read.to_json().items() if k != "meets_slo"}) == read
    assert "fails error_rate<0.01" in read.describe() and "4 users" in read.describe()
