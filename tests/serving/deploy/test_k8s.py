"""`render`/`write`: every object valid for its schema, and the cluster shaped as the options and settings say."""

from __future__ import annotations

import copy

import jsonschema
import pytest
import yaml

from serving.deploy.engines import DeployError
from serving.deploy.k8s import DEFAULT_PROMETHEUS_URL, K8sOptions, render, write
from serving.protocol import CapacityProfile
from serving.settings import Settings
from tests.serving.deploy.cluster import container, env_of, fake_tag, of_kind, rendered, two_versions
from tests.serving.deploy.schema_check import is_custom, validate
from tests.serving.registry.test_capacity import measured

ENGINES = ("servekit-engine-base-a", "servekit-engine-model-b")


@pytest.mark.parametrize("gpu", [False, True])
def test_every_object_is_valid_for_its_schema(gpu):
    resources = rendered(gpu=gpu)
    assert {r["kind"] for r in resources if is_custom(r)} == {"ScaledObject", "PrometheusRule", "PodMonitor"}
    for resource in resources:
        validate(resource)


def test_the_schemas_refuse_a_misspelt_field():
    """The checks above could pass on anything if the validators ignored unknown fields."""
    resources = rendered()
    deployment = copy.deepcopy(of_kind(resources, "Deployment")["servekit-gateway"])
    deployment["spec"]["replica"] = 2
    scaler = copy.deepcopy(of_kind(resources, "ScaledObject")[ENGINES[0]])
    scaler["spec"]["minReplicas"] = 2
    for broken in (deployment, scaler):
        with pytest.raises(jsonschema.ValidationError, match="unexpected"):
            validate(broken)


def test_gateway_runs_n_replicas_with_probes_on_its_port():
    gateway = of_kind(rendered(replicas=3), "Deployment")["servekit-gateway"]
    assert gateway["spec"]["replicas"] == 3
    main = container(gateway)
    assert main["ports"] == [{"name": "http", "containerPort": 3000, "protocol": "TCP"}]
    assert main["livenessProbe"]["httpGet"] == {"path": "/health", "port": "http"}
    assert main["startupProbe"]["httpGet"] == {"path": "/health", "port": "http"}
    assert main["readinessProbe"]["httpGet"] == {"path": "/ready", "port": "http"}
    assert main["readinessProbe"]["initialDelaySeconds"] > 0


def test_gateway_drains_within_its_grace_period():
    """The pod's grace covers the preStop pause plus the longest request the gateway lets run."""
    settings = two_versions(server={"request_timeout_s": 120})
    gateway = of_kind(rendered(settings), "Deployment")["servekit-gateway"]
    pause = int(container(gateway)["lifecycle"]["preStop"]["exec"]["command"][-1])
    assert gateway["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] >= pause + 120
    budget = of_kind(rendered(settings), "PodDisruptionBudget")["servekit-gateway"]
    assert budget["spec"] == {"maxUnavailable": 1, "selector": gateway["spec"]["selector"]}


def test_one_engine_workload_and_headless_service_per_version():
    resources = rendered(engine_replicas=2)
    deployments, services = of_kind(resources, "Deployment"), of_kind(resources, "Service")
    for name in ENGINES:
        assert deployments[name]["spec"]["replicas"] == 2
        assert services[name]["spec"]["clusterIP"] == "None"
        assert services[name]["spec"]["selector"] == deployments[name]["spec"]["selector"]["matchLabels"]
    args = {name: container(deployments[name])["args"] for name in ENGINES}
    assert args[ENGINES[0]][args[ENGINES[0]].index("--model") + 1] == "/home/bentoml/models/base-a/v1"
    assert args[ENGINES[1]][args[ENGINES[1]].index("--served-model-name") + 1] == "model-b"
    assert args[ENGINES[1]][args[ENGINES[1]].index("--model") + 1] == "/home/bentoml/models/base-b/v7"


def test_gpu_resources_only_with_gpu():
    for gpu in (False, True):
        engines = [of_kind(rendered(gpu=gpu), "Deployment")[name] for name in ENGINES]
        for engine in engines:
            limits = container(engine)["resources"]["limits"]
            assert ("nvidia.com/gpu" in limits) is gpu
            assert ("--gpu-memory-utilization" in container(engine)["args"]) is gpu
            assert ("VLLM_CPU_KVCACHE_SPACE" in env_of(engine)) is not gpu
        gateway = of_kind(rendered(gpu=gpu), "Deployment")["servekit-gateway"]
        assert "nvidia.com/gpu" not in container(gateway)["resources"]["limits"]


def test_gateway_finds_engines_and_redis_in_the_namespace():
    resources = rendered(namespace="llm")
    env = env_of(of_kind(resources, "Deployment")["servekit-gateway"])
    assert "SERVEKIT_ENGINE__URL" not in env, "engines come from discovery alone (a URL would list them twice)"
    assert env["SERVEKIT_STATE__URL"] == "redis://servekit-redis.llm.svc.cluster.local:6379/0"
    assert env["SERVEKIT_OBSERVE__URL"] == DEFAULT_PROMETHEUS_URL
    config = yaml.safe_load(of_kind(resources, "ConfigMap")["servekit-config"]["data"]["servekit.yaml"])
    assert config["versions"][0]["discovery"]["host"] == "servekit-engine-model-b.llm.svc.cluster.local"
    assert config["engine"]["discovery"]["host"] == "servekit-engine-base-a.llm.svc.cluster.local"
    assert {"servekit-redis"} <= set(of_kind(resources, "Service")) & set(of_kind(resources, "Deployment"))
    assert all(r["metadata"]["namespace"] == "llm" for r in resources if r["kind"] != "Namespace")


def test_an_external_state_url_replaces_the_rendered_redis():
    resources = rendered(state_url="redis://redis.example.com:6379/2")
    assert "servekit-redis" not in of_kind(resources, "Deployment")
    assert "servekit-redis" not in of_kind(resources, "PersistentVolumeClaim")
    env = env_of(of_kind(resources, "Deployment")["servekit-gateway"])
    assert env["SERVEKIT_STATE__URL"] == "redis://redis.example.com:6379/2"


def test_a_loopback_observe_url_is_not_what_pods_query():
    local = rendered(two_versions(observe={"url": "http://127.0.0.1:9090"}))
    remote = rendered(two_versions(observe={"url": "http://prom.example.com:9090"}))
    for resources, expected in ((local, DEFAULT_PROMETHEUS_URL), (remote, "http://prom.example.com:9090/")):
        scaler = of_kind(resources, "ScaledObject")[ENGINES[0]]
        assert scaler["spec"]["triggers"][0]["metadata"]["serverAddress"] == expected


def test_autoscaler_per_version_on_waiting_requests_or_in_flight_at_a_target():
    resources = rendered(engine_replicas=2, max_engine_replicas=5, target_per_replica={"model-b": 7})
    scalers = of_kind(resources, "ScaledObject")
    assert set(scalers) == set(ENGINES)
    for name, target, series in ((ENGINES[0], "2", "waiting"), (ENGINES[1], "7", "running")):
        spec = scalers[name]["spec"]
        assert spec["scaleTargetRef"]["name"] == name
        assert (spec["minReplicaCount"], spec["maxReplicaCount"]) == (2, 5)
        (trigger,) = spec["triggers"]
        assert trigger["type"] == "prometheus"
        assert trigger["metadata"]["query"].startswith(f"sum(vllm:num_requests_{series}{{")
        assert trigger["metadata"]["threshold"] == target
    assert 'model_name="model-b"' in scalers[ENGINES[1]]["spec"]["triggers"][0]["metadata"]["query"]


def test_a_profiled_version_scales_on_in_flight_requests_at_its_knee_less_the_margin():
    profile = CapacityProfile.model_validate(measured(10))
    resources = render(
        two_versions(), K8sOptions(engine_image="vllm/vllm-openai:test"), resolve_tag=fake_tag,
        profile_of=lambda tag: profile if tag.startswith("base-b") else None,
    )  # fmt: skip
    scalers = of_kind(resources, "ScaledObject")
    profiled = scalers[ENGINES[1]]["spec"]["triggers"][0]["metadata"]
    assert profiled["threshold"] == "9" and "vllm:num_requests_running" in profiled["query"]
    assert "vllm:num_requests_running" not in scalers[ENGINES[0]]["spec"]["triggers"][0]["metadata"]["query"]


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"replicas": 0}, "at least 1"),
        ({"engine_replicas": 2, "max_engine_replicas": 1}, "below --engine-replicas"),
        ({"namespace": "Prod_1"}, "not a Kubernetes name"),
        ({"state_url": "http://redis:6379"}, "redis://"),
        ({"image": " "}, "--image"),
    ],
)
def test_invalid_options_are_refused(options, message):
    with pytest.raises(ValueError, match=message):
        K8sOptions(**options)


def test_settings_that_cannot_run_in_a_cluster_are_refused():
    with pytest.raises(DeployError, match="not served"):
        rendered(target_per_replica={"nope": 3})
    with pytest.raises(DeployError, match="at least 1"):
        rendered(target_per_replica={"model-b": 0})
    triton = Settings(versions=[{"name": "t", "model": "m:v1", "engine": "triton", "port": 8200}])
    with pytest.raises(DeployError, match="triton"):
        rendered(triton)


def test_write_puts_one_file_per_kind_and_removes_stale_ones(tmp_path):
    write(rendered(), tmp_path)
    assert (tmp_path / "deployment.yaml").is_file()
    documents = list(yaml.safe_load_all((tmp_path / "deployment.yaml").read_text()))
    assert {d["metadata"]["name"] for d in documents} == {"servekit-redis", "servekit-gateway", *ENGINES}
    assert all(d["kind"] == "Deployment" for d in documents)
    config = yaml.safe_load((tmp_path / "configmap.yaml").read_text())
    assert "engine:" in config["data"]["servekit.yaml"]

    written = write(rendered(state_url="redis://redis.example.com:6379/0"), tmp_path)
    assert sorted(path.name for path in tmp_path.iterdir()) == sorted(path.name for path in written)
    names = {d["metadata"]["name"] for d in yaml.safe_load_all((tmp_path / "deployment.yaml").read_text())}
    assert "servekit-redis" not in names
