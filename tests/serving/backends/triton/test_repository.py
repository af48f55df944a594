"""The generated Triton model repository (no server needed)."""

from __future__ import annotations

from pathlib import Path

from serving.backends.triton.repository import config_pbtxt, triton_model_name, write_repository
from serving.hardware import cpu_dtype
from serving.settings import TritonSettings


def test_config_has_batching_decoupled_mode_and_cpu_instances():
    settings = TritonSettings(max_batch_size=16, max_queue_delay_us=5000, instance_count=2, max_model_len=1024)
    config = config_pbtxt("m", settings, Path("/models/x"))
    assert 'name: "m"' in config
    assert 'backend: "python"' in config
    assert "max_batch_size: 16" in config
    assert "model_transaction_policy { decoupled: true }" in config
    assert "dynamic_batching { max_queue_delay_microseconds: 5000 }" in config
    assert "instance_group [ { kind: KIND_CPU count: 2 } ]" in config
    assert '{ key: "model_path" value: { string_value: "/models/x" } }' in config
    assert '{ key: "max_model_len" value: { string_value: "1024" } }' in config


def test_preferred_batch_sizes_are_optional():
    config = config_pbtxt("m", TritonSettings(preferred_batch_sizes=[4, 8]), Path("/m"))
    assert "preferred_batch_size: [ 4, 8 ]" in config
    assert "preferred_batch_size" not in config_pbtxt("m", TritonSettings(), Path("/m"))


def test_batch_size_one_turns_dynamic_batching_off():
    config = config_pbtxt("m", TritonSettings(max_batch_size=1), Path("/m"))
    assert "max_batch_size: 1" in config
    assert "dynamic_batching" not in config


def test_model_names_are_path_safe():
    assert triton_model_name("support-bot:3f2a9c") == "support-bot_3f2a9c"
    assert triton_model_name("smollm2-135m-instruct") == "smollm2-135m-instruct"


def test_repository_is_rewritten_from_current_settings(tmp_path):
    write_repository(tmp_path, "m", TritonSettings(max_batch_size=4), Path("/m"))
    (tmp_path / "m" / "1" / "stale.py").write_text("")
    model_dir = write_repository(tmp_path, "m", TritonSettings(max_batch_size=2), Path("/m"))
    assert "max_batch_size: 2" in (model_dir / "config.pbtxt").read_text()
    assert sorted(p.name for p in (model_dir / "1").iterdir()) == ["model.py"]
    assert "class TritonPythonModel" in (model_dir / "1" / "model.py").read_text()


def test_dtype_reaches_the_model_resolved():
    """The model runs in Triton's own venv without servekit: `auto` is resolved before it is written."""
    resolved = config_pbtxt("m", TritonSettings(dtype="auto"), Path("/m"))
    assert f'{{ key: "dtype" value: {{ string_value: "{cpu_dtype("auto")}" }} }}' in resolved
    assert cpu_dtype("auto") in {"bfloat16", "float32"}
    explicit = config_pbtxt("m", TritonSettings(dtype="float32"), Path("/m"))
    assert '{ key: "dtype" value: { string_value: "float32" } }' in explicit
