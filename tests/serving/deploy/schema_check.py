"""Offline validation of rendered manifests: core kinds with kubernetes-validate against a pinned Kubernetes,
custom resources against the CRD schemas shipped in `schemas/` (see its README for sources and versions)."""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate

KUBERNETES_VERSION = "1.30"
SCHEMAS = Path(__file__).resolve().parent / "schemas"
CRD_GROUPS = ("keda.sh", "monitoring.coreos.com")


def is_custom(resource: dict[str, Any]) -> bool:
    return resource["apiVersion"].split("/", 1)[0] in CRD_GROUPS


def validate_core(resource: dict[str, Any]) -> None:
    """Strict: an unknown field (a typo the API server would silently drop) fails too."""
    kubernetes_validate.validate(resource, KUBERNETES_VERSION, strict=True)


def closed(schema: Any) -> Any:
    """The CRD schema with unknown fields refused wherever it lists its fields, as the strict core check does
    (an API server prunes them silently, so a misspelt field would simply vanish)."""
    if isinstance(schema, list):
        return [closed(item) for item in schema]
    if not isinstance(schema, dict):
        return schema
    result = {key: closed(value) for key, value in schema.items()}
    if (
        "properties" in schema
        and "additionalProperties" not in schema
        and not schema.get("x-kubernetes-preserve-unknown-fields")
    ):
        result["additionalProperties"] = False
    return result


@cache
def crd_validator(api_version: str, kind: str) -> jsonschema.Draft7Validator:
    group, version = api_version.split("/", 1)
    schema = json.loads((SCHEMAS / f"{group}-{version}-{kind}.json").read_text())
    schema = closed(schema)
    # Every object also has apiVersion, kind and metadata; the CRD schema leaves metadata open.
    return jsonschema.Draft7Validator(schema)


def validate_custom(resource: dict[str, Any]) -> None:
    crd_validator(resource["apiVersion"], resource["kind"]).validate(resource)


def validate(resource: dict[str, Any]) -> None:
    (validate_custom if is_custom(resource) else validate_core)(resource)
