"""Load shapes: the user counts and spawn rates they ask for over time, and the end of every run."""

from __future__ import annotations

import pytest

from loadtest.shapes import SHAPES, PoissonShape, doubling_levels, make_shape


def ticks(shape, times: list[float]) -> list:
    out = []
    for t in times:
        shape.get_run_time = lambda t=t: t
        out.append(shape.tick())
    return out


def test_constant_holds_then_stops():
    assert ticks(make_shape("constant", 8, 10), [0, 5, 9.9, 10]) == [(8, 8.0), (8, 8.0), (8, 8.0), None]


def test_step_ramps_in_equal_steps():
    assert ticks(make_shape("step", 8, 20), [0, 4.9, 5, 10, 15, 19.9, 20]) == [
        (2, 2.0), (2, 2.0), (4, 4.0), (6, 6.0), (8, 8.0), (8, 8.0), None,
    ]  # fmt: skip


def test_sweep_doubles_concurrency_per_slice():
    assert doubling_levels(16) == [1, 2, 4, 8, 16]
    assert doubling_levels(12) == [1, 2, 4, 8, 12]
    assert ticks(make_shape("sweep", 16, 50), [0, 10, 20, 30, 40, 49, 50]) == [
        (1, 1.0), (2, 2.0), (4, 4.0), (8, 8.0), (16, 16.0), (16, 16.0), None,
    ]  # fmt: skip


def test_poisson_keeps_a_pool_and_carries_the_rate():
    shape = make_shape("poisson", 16, 10, rate=5.0)
    assert isinstance(shape, PoissonShape) and shape.rate == 5.0
    assert ticks(shape, [0, 9, 10]) == [(16, 16.0), (16, 16.0), None]
    with pytest.raises(ValueError, match="--rate"):
        make_shape("poisson", 16, 10)


def test_unknown_shape_lists_the_valid_ones():
    with pytest.raises(ValueError, match="valid shapes: constant, step, sweep, poisson"):
        make_shape("zigzag", 4, 10)
    assert SHAPES == ("constant", "step", "sweep", "poisson")
