"""The shared state's Redis when `state.url` names none outside the cluster: one pod with an append-only file on
its own volume, so keys, routes and rollout state outlive a restart of the pod."""

from __future__ import annotations

from typing import Any

from serving.deploy.objects import REDIS, REDIS_PORT, deployment, metadata, service

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
    pod = {"containers": [container], "volumes": [{"name": "data", "persistentVolumeClaim": {"claimName": REDIS}}]}
    # One writer on a ReadWriteOnce volume: the old pod must be gone before the new one mounts it.
    return deployment(REDIS, namespace, COMPONENT, pod, replicas=1, strategy={"type": "Recreate"})


def redis_service(namespace: str) -> dict[str, Any]:
    return service(REDIS, namespace, COMPONENT, "redis", REDIS_PORT)


def redis_claim(namespace: str, size: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "metadata": metadata(REDIS, namespace, COMPONENT),
        "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": size}}},
    }
