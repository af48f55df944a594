"""Schemathesis fuzz of every route in the OpenAPI schema, against a real gateway (its own state directory, so
admin calls cannot disturb other tests) in front of the session's engine: no 5xx, every error in OpenAI's shape.

Generation is kept cheap: completion requests that would ask for many tokens are capped at 4 (invalid values
are left as generated, so validation is still fuzzed)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings

from tests.conftest import GATEWAY_UP_TIMEOUT_S, start_bentoml, stop, wait_for

TOKEN_FIELDS = ("max_tokens", "max_completion_tokens", "max_output_tokens")
ERROR_FIELDS = {"message", "type", "param", "code"}
EXAMPLES = 20


@pytest.fixture(scope="module")
def fuzz_gateway(server, artifacts_dir) -> Iterator[str]:
    env = {
        "SERVEKIT_ENGINE__URL": server.engine_url,
        "SERVEKIT_HOME": str(artifacts_dir / "fuzz"),
        "SERVEKIT_FAULTS__ENABLED": "true",
    }
    process, base_url = start_bentoml("bentos.service:Servekit", env, artifacts_dir / "fuzz.log")
    try:
        wait_for(f"{base_url}/ready", process, GATEWAY_UP_TIMEOUT_S)
        yield base_url
    finally:
        stop(process)


@pytest.fixture(scope="module")
def api_schema(fuzz_gateway):
    return schemathesis.openapi.from_url(f"{fuzz_gateway}/openapi.json")


def cap_generation(body: object) -> None:
    if isinstance(body, dict):
        for name in TOKEN_FIELDS:
            value = body.get(name)
            if value is None or (isinstance(value, int) and not isinstance(value, bool) and value > 4):
                body[name] = 4


def check(case) -> None:
    cap_generation(case.body)
    response = case.call(timeout=120)
    where = f"{case.method} {case.formatted_path} -> {response.status_code}: {response.text[:300]}"
    assert response.status_code < 500, where
    if response.status_code >= 400:
        content_type = response.headers.get("content-type") or [""]  # schemathesis keeps every header as a list
        assert content_type[0].startswith("application/json"), where
        error = response.json().get("error")
        assert isinstance(error, dict) and error.keys() >= ERROR_FIELDS, where
        assert isinstance(error["message"], str) and error["message"], where


def test_no_5xx_and_errors_in_openai_shape(api_schema):
    """Each operation of the schema in turn (schemathesis' pytest plugin does not support this pytest yet)."""
    operations = [result.ok() for result in api_schema.get_all_operations()]
    assert len(operations) >= 15
    budget = settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
    for operation in operations:
        budget(given(case=operation.as_strategy())(check))()
