"""servekit's rules and scrapes in Prometheus Operator form."""

from __future__ import annotations

import yaml

from serving.observe.config import rule_files
from tests.serving.deploy.cluster import of_kind, rendered


def rule_names(groups):
    return [
        (group["name"], rule.get("record") or rule["alert"], rule["expr"])
        for group in groups
        for rule in group["rules"]
    ]


def test_prometheus_rule_carries_every_rule_of_the_rules_files():
    shipped = [group for path in rule_files() for group in yaml.safe_load(path.read_text())["groups"]]
    rule = of_kind(rendered(), "PrometheusRule")["servekit"]
    assert rule_names(rule["spec"]["groups"]) == rule_names(shipped)
    assert len(rule_names(shipped)) >= 9
    assert rule["spec"]["groups"] == shipped  # labels, annotations and `for:` included


def test_engines_are_scraped_directly_and_gateways_without_their_engine_copies():
    monitors = of_kind(rendered(), "PodMonitor")
    gateway, engines = monitors["servekit-gateway"], monitors["servekit-engines"]
    assert engines["spec"]["selector"]["matchLabels"]["app.kubernetes.io/component"] == "engine"
    assert gateway["spec"]["selector"]["matchLabels"]["app.kubernetes.io/component"] == "gateway"
    (gateway_endpoint,) = gateway["spec"]["podMetricsEndpoints"]
    assert gateway_endpoint["metricRelabelings"] == [
        {"sourceLabels": ["__name__"], "regex": "vllm:.*", "action": "drop"}
    ]
    (engine_endpoint,) = engines["spec"]["podMetricsEndpoints"]
    assert (engine_endpoint["port"], engine_endpoint["path"], engine_endpoint["interval"]) == ("http", "/metrics", "2s")
    assert "metricRelabelings" not in engine_endpoint
