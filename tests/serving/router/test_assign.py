"""Split accuracy, stickiness, minimal movement on weight changes (statistics over many keys)."""

from __future__ import annotations

from collections import Counter

import pytest
from pydantic import ValidationError

from serving.router.assign import choose_version
from serving.router.routes import Route, RouteMember

KEYS = [f"user-{i}" for i in range(10_000)]


def route(**weights: float) -> Route:
    return Route(name="assistant", members=[RouteMember(version=v, weight=w) for v, w in weights.items()])


def test_split_is_within_two_points_of_the_weights():
    counts = Counter(choose_version(route(a=70, b=20, c=10), key) for key in KEYS)
    for version, weight in {"a": 70, "b": 20, "c": 10}.items():
        assert abs(100 * counts[version] / len(KEYS) - weight) <= 2


def test_assignment_is_sticky():
    r = route(a=50, b=50)
    first = [choose_version(r, key) for key in KEYS]
    assert first == [choose_version(r, key) for key in KEYS]


def test_raising_the_canary_only_moves_users_onto_it():
    before = {key: choose_version(route(base=90, canary=10), key) for key in KEYS}
    after = {key: choose_version(route(base=75, canary=25), key) for key in KEYS}
    moved = [key for key in KEYS if before[key] != after[key]]
    assert all(before[key] == "base" and after[key] == "canary" for key in moved)
    assert abs(len(moved) / len(KEYS) - 0.15) <= 0.02


def test_zero_weight_members_get_nothing_and_random_choice_respects_weights():
    assert {choose_version(route(a=100, b=0), key) for key in KEYS[:500]} == {"a"}
    counts = Counter(choose_version(route(a=80, b=20), None) for _ in range(5000))
    assert 0.76 <= counts["a"] / 5000 <= 0.84


@pytest.mark.parametrize(
    "members",
    [
        [{"version": "a", "weight": 60}, {"version": "b", "weight": 30}],
        [{"version": "a", "weight": 110}, {"version": "b", "weight": -10}],
        [{"version": "a", "weight": 50}, {"version": "a", "weight": 50}],
        [],
    ],
)
def test_bad_weights_are_rejected(members):
    with pytest.raises(ValidationError):
        Route(name="r", members=members)
