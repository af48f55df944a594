"""Settings and look-ups shared by the deploy tests: two served versions, one key, no registry needed."""

from __future__ import annotations

from typing import Any

from serving.deploy.k8s import K8sOptions, render
from serving.settings import Settings

KEY_HASH = "ab" * 32


def fake_tag(ref: str) -> str:
    """The registry's answer without a registry: a bare name resolves to version v1."""
    return ref if ":" in ref else f"{ref}:v1"


def two_versions(**values: Any) -> Settings:
    return Settings(
        model={"name": "base-a"},
        versions=[{"name": "model-b", "model": "base-b:v7", "port": 8101}],
        auth={"keys": [{"id": "ops", "sha256": KEY_HASH, "role": "admin", "requests_per_minute": 30}]},
        **values,
    )


def rendered(
    settings: Settings | None = None, target_per_replica: dict[str, int] | None = None, **options: Any
) -> list[dict[str, Any]]:
    opts = {"engine_image": "vllm/vllm-openai:test", **options}
    return render(
        settings or two_versions(), K8sOptions(**opts), target_per_replica, resolve_tag=fake_tag, profile_of=no_profile
    )


def no_profile(tag: str) -> None:
    """Versions of these tests were never profiled."""


def of_kind(resources: list[dict[str, Any]], kind: str) -> dict[str, dict[str, Any]]:
    return {resource["metadata"]["name"]: resource for resource in resources if resource["kind"] == kind}


def container(workload: dict[str, Any]) -> dict[str, Any]:
    (only,) = workload["spec"]["template"]["spec"]["containers"]
    return only


def env_of(workload: dict[str, Any]) -> dict[str, str]:
    return {item["name"]: item["value"] for item in container(workload)["env"]}
