from __future__ import annotations

import pytest
from pydantic import ValidationError

from serving.router.routes import Route, RouteMember


def route(*members: tuple[str, float]) -> Route:
    return Route(name="chat", members=[RouteMember(version=v, weight=w) for v, w in members])


def test_weights_must_sum_to_100_over_distinct_versions():
    assert route(("a", 90), ("b", 10)).versions == ["a", "b"]
    with pytest.raises(ValidationError, match="weights must sum to 100, got 95"):
        route(("a", 90), ("b", 5))
    with pytest.raises(ValidationError, match="a version appears twice"):
        route(("a", 50), ("a", 50))
    with pytest.raises(ValidationError):
        Route(name="chat", members=[])
    with pytest.raises(ValidationError):
        route(("a", 110), ("b", -10))


def test_weight_of_a_version_not_on_the_route_is_zero():
    chat = route(("a", 75), ("b", 25))
    assert (chat.weight_of("b"), chat.weight_of("c")) == (25, 0.0)


@pytest.mark.parametrize(
    ("canary_weight", "expected"),
    [(0, [("base", 100)]), (10, [("base", 90), ("new", 10)]), (100, [("new", 100)]), (150, [("new", 100)])],
)
def test_with_split_keeps_only_primary_and_canary(canary_weight, expected):
    split = route(("base", 60), ("other", 40)).with_split("base", "new", canary_weight)
    assert split.name == "chat"
    assert [(m.version, m.weight) for m in split.members] == expected
