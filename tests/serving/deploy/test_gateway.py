"""The gateway's config and keys as the cluster hands them over: servekit.yaml without keys, keys as a Secret
the settings loader reads back unchanged."""

from __future__ import annotations

import yaml

from serving.deploy.gateway import CONFIG_HASH, KEYS_ENV
from serving.settings import load_settings
from tests.serving.deploy.cluster import KEY_HASH, container, of_kind, rendered, two_versions


def test_config_map_is_loadable_servekit_yaml_without_keys(tmp_path, monkeypatch):
    text = of_kind(rendered(), "ConfigMap")["servekit-config"]["data"]["servekit.yaml"]
    assert KEY_HASH not in text
    path = tmp_path / "servekit.yaml"
    path.write_text(text)
    loaded = load_settings(path)
    assert loaded.model.name == "base-a"
    assert [v.name for v in loaded.versions] == ["model-b"]
    assert str(loaded.home) == "/var/lib/servekit"
    assert loaded.auth.keys == []


def test_keys_secret_reads_back_as_the_configured_keys(tmp_path, monkeypatch):
    resources = rendered()
    secret = of_kind(resources, "Secret")["servekit-keys"]
    gateway = of_kind(resources, "Deployment")["servekit-gateway"]
    assert container(gateway)["envFrom"] == [{"secretRef": {"name": "servekit-keys"}}]
    (tmp_path / "servekit.yaml").write_text(of_kind(resources, "ConfigMap")["servekit-config"]["data"]["servekit.yaml"])
    monkeypatch.setenv(KEYS_ENV, secret["stringData"][KEYS_ENV])
    loaded = load_settings(tmp_path / "servekit.yaml")
    assert loaded.auth.keys == two_versions().auth.keys


def test_a_changed_key_rolls_the_gateways():
    def config_hash(settings):
        gateway = of_kind(rendered(settings), "Deployment")["servekit-gateway"]
        return gateway["spec"]["template"]["metadata"]["annotations"][CONFIG_HASH]

    other_key = two_versions()
    other_key.auth.keys[0].requests_per_minute = 60
    assert config_hash(two_versions()) == config_hash(two_versions())
    assert config_hash(other_key) != config_hash(two_versions())


def test_gateway_mounts_the_config_and_the_models_the_engines_load():
    resources = rendered()
    gateway = of_kind(resources, "Deployment")["servekit-gateway"]
    engine = of_kind(resources, "Deployment")["servekit-engine-base-a"]
    env = {item["name"]: item["value"] for item in container(gateway)["env"]}
    mounts = {m["name"]: m["mountPath"] for m in container(gateway)["volumeMounts"]}
    assert env["SERVEKIT_CONFIG"] == f"{mounts['config']}/servekit.yaml"
    engine_mounts = {m["name"]: m["mountPath"] for m in container(engine)["volumeMounts"]}
    assert mounts["models"] == engine_mounts["models"]
    assert yaml.safe_load(yaml.safe_dump(gateway)) == gateway
