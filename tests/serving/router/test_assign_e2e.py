"""Sticky A/B assignment against the real server: a route over the base and an adapter on the session's engine,
one-token requests, the serving version read from `x-servekit-version`."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

BASE = "smollm2-135m-instruct"
ROUTE = "ab-sticky"


def put_route(base_url: str, weights: dict[str, int]) -> None:
    members = [{"version": version, "weight": weight} for version, weight in weights.items()]
    response = httpx.put(f"{base_url}/admin/routes/{ROUTE}", json={"members": members}, timeout=120)
    assert response.status_code == 200, response.text


def served_version(base_url: str, user: str) -> str:
    body = {"model": ROUTE, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 1, "user": user}
    response = httpx.post(f"{base_url}/v1/chat/completions", json=body, timeout=120)
    assert response.status_code == 200, response.text
    return response.headers["x-servekit-version"]


@pytest.fixture(scope="module")
def versions(server, random_adapters) -> Iterator[tuple[str, str]]:
    """The base's and a loaded adapter's registry versions; the route and the adapter are removed afterwards."""
    adapter = random_adapters["a"].tag
    assert httpx.post(f"{server.base_url}/admin/models/{adapter}/load", timeout=120).status_code == 200
    base = httpx.get(f"{server.base_url}/v1/models").json()["data"]
    base_version = next(card["root"] for card in base if card["id"] == BASE)
    try:
        yield base_version, adapter
    finally:
        httpx.delete(f"{server.base_url}/admin/routes/{ROUTE}")
        httpx.post(f"{server.base_url}/admin/models/{adapter}/unload", timeout=120)


def test_a_user_keeps_its_version_across_a_weight_change_that_keeps_it(server, versions):
    base_version, adapter = versions
    put_route(server.base_url, {BASE: 50, adapter: 50})
    first = served_version(server.base_url, "user-7")
    seen = [first, *(served_version(server.base_url, "user-7") for _ in range(49))]
    mine = adapter if first == adapter else BASE
    other = BASE if mine == adapter else adapter
    put_route(server.base_url, {mine: 80, other: 20})  # raising its weight only moves other users onto it
    seen += [served_version(server.base_url, "user-7") for _ in range(50)]
    assert first in {base_version, adapter}
    assert Counter(seen) == {first: 100}


def test_a_50_50_route_splits_400_users_within_ten_percent(server, versions):
    base_version, adapter = versions
    put_route(server.base_url, {BASE: 50, adapter: 50})
    with ThreadPoolExecutor(4) as pool:
        counts = Counter(pool.map(lambda i: served_version(server.base_url, f"user-{i}"), range(400)))
    assert set(counts) == {base_version, adapter}
    assert all(160 <= count <= 240 for count in counts.values()), counts
