"""Prometheus Operator objects (scrapes, servekit's rules) and the engines' autoscaler.

The autoscaler is a KEDA ScaledObject with a Prometheus trigger rather than an HPA on external metrics: the
query lives in the object itself, next to the workload it scales, while an HPA needs prometheus-adapter and a
rule in the adapter's own config (outside these manifests) to turn the series into an external metric.
"""

from __future__ import annotations

from typing import Any

import yaml

from serving.deploy.engines import ENGINE, EngineVersion
from serving.deploy.gateway import COMPONENT as GATEWAY_COMPONENT
from serving.deploy.objects import APP, GATEWAY, metadata, selector
from serving.observe.config import rule_files

WAITING_METRIC = "vllm:num_requests_waiting"
RUNNING_METRIC = "vllm:num_requests_running"
DEFAULT_WAITING_PER_REPLICA = 2
"""Requests waiting in an engine's queue per replica before KEDA adds one. A waiting request means the engine's
batch (engine.max_num_seqs) is full; a queue of one flickers at that edge with every finished request, a couple
per replica is a batch that stays full, and each further one adds a whole request's wait to TTFT."""
SCALE_DOWN_WINDOW_S = 300
"""An engine takes minutes to start: keep it five minutes after the queue empties instead of flapping."""


def waiting_query(engine: EngineVersion, namespace: str) -> str:
    """All requests queued on this version's engines (vLLM labels its series with the served model name)."""
    return f'sum({WAITING_METRIC}{{namespace="{namespace}",model_name="{engine.served_name}"}})'


def in_flight_query(engine: EngineVersion, namespace: str) -> str:
    """All requests running or queued on this version's engines: what a capacity knee is measured in."""
    labels = f'{{namespace="{namespace}",model_name="{engine.served_name}"}}'
    return f"sum({RUNNING_METRIC}{labels}) + sum({WAITING_METRIC}{labels})"


def scaled_object(
    engine: EngineVersion,
    namespace: str,
    min_replicas: int,
    max_replicas: int,
    prometheus_url: str,
    in_flight_target: int | None,
) -> dict[str, Any]:
    """Scaled on in-flight requests per replica at the version's capacity knee (x margin) where it was profiled
    (`servekit capacity`), else on DEFAULT_WAITING_PER_REPLICA queued requests per replica."""
    query, target = (
        (waiting_query(engine, namespace), DEFAULT_WAITING_PER_REPLICA)
        if in_flight_target is None
        else (in_flight_query(engine, namespace), in_flight_target)
    )
    return {
        "apiVersion": "keda.sh/v1alpha1",
        "kind": "ScaledObject",
        "metadata": metadata(engine.workload, namespace, ENGINE, engine.workload),
        "spec": {
            "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": engine.workload},
            "minReplicaCount": min_replicas,
            "maxReplicaCount": max_replicas,
            "pollingInterval": 15,
            "advanced": {
                "horizontalPodAutoscalerConfig": {
                    "behavior": {"scaleDown": {"stabilizationWindowSeconds": SCALE_DOWN_WINDOW_S}}
                }
            },
            "triggers": [
                {
                    "type": "prometheus",
                    "metricType": "AverageValue",
                    "metadata": {
                        "serverAddress": prometheus_url,
                        "query": query,
                        "threshold": str(target),
                    },
                }
            ],
        },
    }


def prometheus_rule(namespace: str) -> dict[str, Any]:
    """servekit's recording and alert rules as shipped (`serving/observe/rules`), group for group."""
    groups = [group for path in rule_files() for group in yaml.safe_load(path.read_text())["groups"]]
    return {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "PrometheusRule",
        "metadata": metadata(APP, namespace, GATEWAY_COMPONENT),
        "spec": {"groups": groups},
    }


def pod_monitors(namespace: str, interval: str) -> list[dict[str, Any]]:
    """Gateways and engines scraped apart. A gateway's /metrics repeats its engine's `vllm:*` series (handy with
    one engine); in a cluster each engine pod is scraped itself, so the gateways' copies are dropped, else every
    queue would be counted once per gateway."""
    endpoint = {"port": "http", "path": "/metrics", "interval": interval}
    drop_engine_series = {"sourceLabels": ["__name__"], "regex": "vllm:.*", "action": "drop"}
    return [
        pod_monitor(GATEWAY, namespace, GATEWAY_COMPONENT, {**endpoint, "metricRelabelings": [drop_engine_series]}),
        pod_monitor(f"{APP}-engines", namespace, ENGINE, endpoint),
    ]


def pod_monitor(name: str, namespace: str, component: str, endpoint: dict[str, Any]) -> dict[str, Any]:
    return {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "PodMonitor",
        "metadata": metadata(name, namespace, component),
        "spec": {"selector": {"matchLabels": selector(component)}, "podMetricsEndpoints": [endpoint]},
    }
