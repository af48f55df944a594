"""A version's capacity profile next to its files: read back, replaced, refused when malformed, turned into a cap."""

from __future__ import annotations

import json

import pytest

from loadtest.capacity import Point, build_profile
from serving.protocol import CapacityProfile
from serving.registry.capacity import (
    PROFILE_FILE,
    CapacityProfileError,
    capacity_profile,
    in_flight_cap,
    store_capacity_profile,
)
from serving.registry.store import RegisteredModel


@pytest.fixture
def model(tmp_path) -> RegisteredModel:
    return RegisteredModel(tag="unit-capacity:v1", path=tmp_path, labels={}, metadata={})


def measured(users: int) -> dict:
    curve = [Point("closed", n, None, 10, 2.0 * n, 2.0 * n, 0.0, 0.1, 0.01, 1.0) for n in (1, 2, users)]
    return build_profile("unit-capacity:v1", ["ttft_p95<1s"], curve, {"duration_s": 5}, {"engine": "vllm"},
                         {"cpu_cores": 2}, "2026-12-07T00:00:00+00:00")  # fmt: skip


def test_a_version_never_profiled_has_no_profile(model):
    assert capacity_profile(model) is None
    assert in_flight_cap(None, 0.9) is None


def test_a_stored_profile_reads_back_and_a_new_one_replaces_it(model):
    store_capacity_profile(model, measured(8))
    assert capacity_profile(model).knee.concurrency == 8
    path = store_capacity_profile(model, measured(16))
    assert path == model.path / PROFILE_FILE
    profile = capacity_profile(model)
    assert profile.knee.concurrency == 16 and [p.concurrency for p in profile.curve] == [1, 2, 16]
    assert profile.engine == {"engine": "vllm"} and profile.machine == {"cpu_cores": 2}


def test_a_malformed_profile_is_refused_on_store_and_on_read(model):
    with pytest.raises(ValueError):
        store_capacity_profile(model, {**measured(8), "curve": "not a list"})
    (model.path / PROFILE_FILE).write_text(json.dumps({"version": "x"}))
    with pytest.raises(CapacityProfileError, match="is not a capacity profile"):
        capacity_profile(model)


@pytest.mark.parametrize(("users", "margin", "cap"), [(16, 0.9, 14), (10, 1.0, 10), (1, 0.5, 1)])
def test_the_cap_is_the_knee_less_the_margin_never_below_one(users, margin, cap):
    assert in_flight_cap(CapacityProfile.model_validate(measured(users)), margin) == cap


def test_a_profile_without_a_knee_sets_no_cap():
    profile = CapacityProfile.model_validate({**measured(4), "knee": None})
    assert in_flight_cap(profile, 0.9) is None
