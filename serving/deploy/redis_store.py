"""The shared state's Redis when `state.url` names none outside the cluster: one pod with an append-only file on
its own volume, so keys, routes and rollout state outlive a restart of the pod."""

from __future__ import annotations

from typing import Any

from serving.deploy.objects import REDIS, REDIS_PORT, metadata, selector

COMPONENT = "redis"
DATA_DIR = "/data"


def state_url(namespace: str) -> str:
    return f"redis://{REDIS}.{namespace}.svc.cluster.local:{REDIS_PORT}/0"


def redis_deployment(namespace: str, image: str) -> dict[str, Any]:
    ping = {"exec": {"command": ["redis-cli", "-p", str(REDIS_PORT), "ping"]}, "periodSeconds": 5, "timeoutSeconds": 3}
    container = {
        "name": "redis",
        "image": image,
        "args": ["redis-server", "--port", str(REDIS_PORT), "--appendonly", "yes", "--dir", DATA_DIR],
        "ports": [{"name": "redis", "containerPort": REDIS_PORT, "protocol": "TCP"}],
        "readinessProbe": ping,
        "livenessProbe": {**ping, "periodSeconds": 10, "failureThreshold": 3},
        "resources": {"requests": {"cpu": "250m", "memory": "256Mi"}, "limits": {"memory": "1Gi"}},
        "volumeMounts": [{"name": "data", "mountPath": DATA_DIR}],
    }
    labels = selector(COMPONENT)
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": metadata(REDIS, namespace, COMPONENT),
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": labels},
            # One writer on a ReadWriteOnce volume: the old pod must be gone before the new one mounts it.
            "strategy": {"type": "Recreate"},
            "template": {
                "metadata": {"labels": labels},
                "spec": {
                    "containers": [container],
                    "volumes": [{"name": "data", "persistentVolumeClaim": {"claimName": REDIS}}],
                },
            },
        },
    }


def redis_service(namespace: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": metadata(REDIS, namespace, COMPONENT),
        "spec": {
            "selector": selector(COMPONENT),
            "ports": [{"name": "redis", "port": REDIS_PORT, "targetPort": "redis", "protocol": "TCP"}],
        },
    }


def redis_claim(namespace: str, size: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "metadata": metadata(REDIS, namespace, COMPONENT),
        "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": size}}},
    }
