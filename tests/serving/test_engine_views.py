"""The engines as /ready, /admin/engines and /metrics show them, against in-memory engines."""

from __future__ import annotations

from prometheus_client.parser import text_string_to_metric_families

from serving import replica_sets
from serving.backends import vllm
from serving.engine_views import engine_report, engine_states, with_label
from serving.engines import Engines
from serving.metrics.prometheus import GatewayMetrics
from serving.registry.store import RegisteredModel
from serving.settings import EngineSettings, ReplicaSources, Settings
from serving.versions import ServedVersions
from tests.serving.fake_engine import served_version


def test_a_pools_replicas_are_named_apart_and_a_single_engine_keeps_its_name():
    engines = Engines(
        ServedVersions(), [served_version("solo"), served_version("pooled", replicas=2)], GatewayMetrics()
    )
    assert engine_states(engines) == {"solo": "stopped", "pooled/0": "stopped", "pooled/1": "stopped"}
    assert [status.version for status in engine_report(engines)] == ["solo:v1", "pooled:v1", "pooled:v1"]


def test_every_sample_gets_the_replica_label_and_stays_parseable():
    text = '# HELP vllm:x X\n# TYPE vllm:x counter\nvllm:x_total{model_name="m"} 3.0\nplain 1.0\n'
    parsed = text_string_to_metric_families(with_label(text, "replica", "m/1"))
    samples = {sample.name: sample.labels for family in parsed for sample in family.samples}
    assert samples == {"vllm:x_total": {"replica": "m/1", "model_name": "m"}, "plain": {"replica": "m/1"}}


def test_admin_engines_shows_the_cores_each_managed_cpu_replica_is_bound_to(tmp_path, monkeypatch):
    monkeypatch.setattr(replica_sets, "is_cpu_build", lambda: True)
    monkeypatch.setattr(vllm, "is_cpu_build", lambda: True)
    monkeypatch.setattr(replica_sets, "usable_cores", lambda: [0, 1, 2, 3])
    settings = Settings(home=tmp_path, engine=EngineSettings(replicas=2))
    model = RegisteredModel("m:v1", tmp_path, {"kind": "base"}, {})
    pooled = replica_sets.managed_engine(settings, "m", "vllm", model, None, settings.engine)
    remote = replica_sets.managed_engine(
        settings, "r", "vllm", model, None, ReplicaSources(urls=["http://gpu-box:8000"]), key="versions[r]"
    )
    report = engine_report(Engines(ServedVersions(), [pooled, remote], GatewayMetrics()))
    assert [(status.name, status.cores) for status in report] == [("m/0", "0-1"), ("m/1", "2-3"), ("r", None)]
