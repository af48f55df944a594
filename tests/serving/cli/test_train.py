"""`servekit train`: resolves the base in the registry, trains, registers adapter and merged versions."""

from __future__ import annotations

import json

import bentoml
import yaml
from typer.testing import CliRunner

from serving.cli import app
from serving.registry.store import get_model, list_models
from tests.training.conftest import TINY

runner = CliRunner()


def delete_versions(*names: str) -> None:
    """Leave the local store as the test found it."""
    for name in names:
        for model in list_models(name):
            bentoml.models.delete(model.tag)


def test_train_registers_adapter_and_merged(tmp_path, settings, request):
    base_model = get_model(settings.model.name)
    config = tmp_path / "run.yaml"
    config.write_text(yaml.safe_dump({**TINY, "adapter_name": "cli-test", "output_dir": str(tmp_path / "out")}))
    result = runner.invoke(app, ["train", str(config), "--set", "max_steps=2", "--set", "batch_size=1", "--merge"])
    assert result.exit_code == 0, result.output
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    request.addfinalizer(lambda: delete_versions("cli-test", "cli-test-merged"))

    adapter = get_model("cli-test", manifest["version"])
    assert adapter.labels == {"kind": "adapter", "base": base_model.tag}
    stored = json.loads((adapter.path / "manifest.json").read_text())
    assert stored["base_model"] == base_model.tag and stored["kind"] == "adapter"
    assert (adapter.path / "adapter_model.safetensors").is_file()
    assert not (adapter.path / "checkpoints").exists()

    merged = get_model("cli-test-merged", manifest["version"])
    assert merged.labels == {"kind": "merged", "base": base_model.tag}
    assert (merged.path / "model.safetensors").is_file() and (merged.path / "tokenizer.json").is_file()

    again = runner.invoke(app, ["train", str(config), "--set", "max_steps=2", "--set", "batch_size=1", "--resume"])
    assert again.exit_code == 0, again.output
    assert "already registered" in again.output


def test_unknown_base_fails_clearly(tmp_path):
    config = tmp_path / "run.yaml"
    config.write_text(yaml.safe_dump({**TINY, "base_model": "nope:v1", "output_dir": str(tmp_path / "out")}))
    result = runner.invoke(app, ["train", str(config)])
    assert result.exit_code == 1
    assert "not in the registry" in result.output


def test_a_trained_adapter_is_served_by_the_vllm_engine(server, tmp_path):
    """What `servekit train` publishes is a PEFT adapter vLLM loads and serves under its own name."""
    import bentoml
    import httpx
    import openai

    config = tmp_path / "run.yaml"
    config.write_text(yaml.safe_dump({**TINY, "adapter_name": "served-test", "output_dir": str(tmp_path / "out")}))
    assert runner.invoke(app, ["train", str(config), "--set", "max_steps=2", "--set", "batch_size=1"]).exit_code == 0
    tag = f"served-test:{json.loads((tmp_path / 'out' / 'manifest.json').read_text())['version']}"
    try:
        loaded = httpx.post(f"{server.base_url}/admin/models/{tag}/load", timeout=120)
        assert loaded.status_code == 200, loaded.text
        client = openai.OpenAI(base_url=f"{server.base_url}/v1", api_key="unused", max_retries=0)
        raw = client.chat.completions.with_raw_response.create(
            model=tag, messages=[{"role": "user", "content": "Where is the treasure?"}], max_tokens=8, temperature=0
        )
        assert raw.headers["x-servekit-version"] == tag
        assert raw.parse().choices[0].message.content
        assert httpx.post(f"{server.base_url}/admin/models/{tag}/unload", timeout=120).status_code == 200
    finally:
        bentoml.models.delete(tag)


def test_fsdp_without_torchrun_fails_clearly(tmp_path):
    config = tmp_path / "run.yaml"
    config.write_text(yaml.safe_dump({**TINY, "output_dir": str(tmp_path / "out")}))
    result = runner.invoke(app, ["train", str(config), "--set", "parallel=fsdp"])
    assert result.exit_code == 1
    assert "parallel: fsdp" in result.output and "torchrun" in result.output
    assert not (tmp_path / "out").exists()  # nothing loaded, nothing written
