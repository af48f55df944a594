from __future__ import annotations

import hashlib

import pytest

from serving.api.auth import key_digest
from serving.errors import PermissionDeniedError
from serving.pipeline.principal import Principal


def test_keys_are_compared_by_sha256():
    assert key_digest("sk-x") == hashlib.sha256(b"sk-x").hexdigest()


def test_model_limits():
    Principal("k", "user").check_model("anything")
    limited = Principal("k", "user", ("assistant",))
    limited.check_model("assistant")
    with pytest.raises(PermissionDeniedError):
        limited.check_model("other")
