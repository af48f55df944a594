"""Building a base version's replicas from the settings, and the configuration errors found then (one line,
naming the key)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from serving.backends.vllm import is_cpu_build
from serving.pool.cores import parse_cpu_list, usable_cores
from serving.registry.store import RegisteredModel
from serving.replica_sets import managed_engine
from serving.settings import Settings

MODEL = RegisteredModel("base:v1", Path("/m/base"), {"kind": "base"}, {})


def build(settings: Settings, key: str = "engine", sources=None):
    return managed_engine(settings, "base", "vllm", MODEL, None, sources or settings.engine, key)


def test_managed_replicas_remote_urls_and_discovery_mix() -> None:
    settings = Settings(engine={"replicas": 2, "urls": ["http://10.0.0.9:8000"], "discovery": {"host": "engines.test"}})
    served = build(settings)
    urls = [replica.backend.base_url for replica in served.replicas]
    assert urls[2] == "http://10.0.0.9:8000" and len(set(urls)) == 3, "each replica on its own port"
    assert [replica.backend.managed for replica in served.replicas] == [True, True, False]
    assert served.discovery is not None and served.discovery.dns.key == "engine.discovery"
    found = served.discovery.supervise("http://10.0.0.7:8000")
    assert (found.backend.base_url, found.backend.managed) == ("http://10.0.0.7:8000", False)
    if is_cpu_build():
        binds = [replica.backend.settings.cpu_threads_bind for replica in served.replicas[:2]]
        cores = [set(parse_cpu_list(bind)) for bind in binds]
        assert not cores[0] & cores[1] and cores[0] | cores[1] <= set(usable_cores()), f"disjoint: {binds}"


def test_a_version_found_by_discovery_alone_starts_with_no_engine() -> None:
    served = build(Settings(engine={"discovery": {"host": "engines.test"}}))
    assert (served.supervisor, served.replicas, served.engine_name) == (None, [], "vllm")


@pytest.mark.parametrize(
    ("engine", "versions", "message"),
    [
        ({"cpu_core_sets": ["4096"]}, [], "engine.cpu_core_sets: `4096` names cores 4096 this machine does not offer"),
        (
            {"urls": ["http://a:8000"]},
            [{"name": "b", "model": "b", "urls": ["http://a:8000/"]}],
            "engine.urls: http://a:8000 is also a replica of `versions[b]`",
        ),
        (
            {"cpu_core_sets": ["0"]},
            [{"name": "b", "model": "b", "cpu_core_sets": ["0"]}],
            "engine.cpu_core_sets: core 0 is also in `versions[b].cpu_core_sets`",
        ),
    ],
)
def test_config_errors_found_when_building_are_one_line_naming_the_key(engine, versions, message) -> None:
    settings = Settings(engine=engine, versions=versions)
    with pytest.raises(ValueError, match=f"^{re.escape(message)}$"):
        build(settings)
