"""`servekit models delete/prune`: registry hygiene that never removes what is in use."""

from __future__ import annotations

import json

import bentoml
from typer.testing import CliRunner

from serving.cli import app
from serving.registry.adapters import import_adapter
from serving.registry.store import RegisteredModel, get_model, list_models
from tests.conftest import free_port

runner = CliRunner()
NOBODY = ["--url", f"http://127.0.0.1:{free_port()}"]


def make_versions(tmp_path, name: str, count: int, base: RegisteredModel) -> list[RegisteredModel]:
    made = []
    for i in range(count):
        path = tmp_path / f"{name}-{i}"
        path.mkdir()
        (path / "adapter_config.json").write_text(json.dumps({"r": 8}))
        (path / "adapter_model.safetensors").write_bytes(f"weights {i}".encode())
        made.append(import_adapter(path, name, base)[0])
    return made


def test_prune_keeps_the_newest_and_delete_refuses_a_base(tmp_path, settings):
    base = RegisteredModel(tag="prune-base:v1", path=tmp_path, labels={}, metadata={})
    versions = make_versions(tmp_path, "prune-test", 3, base)
    (tmp_path / "child").mkdir()
    child = make_versions(tmp_path / "child", "prune-child", 1, versions[0])[0]
    try:
        refused = runner.invoke(app, ["models", "delete", versions[0].tag, *NOBODY])
        assert refused.exit_code == 1 and "is the base of" in refused.output and child.tag in refused.output

        pruned = runner.invoke(app, ["models", "prune", "--keep", "1", *NOBODY])
        assert pruned.exit_code == 0, pruned.output
        left = {m.tag for m in list_models("prune-test")}
        assert left == {versions[0].tag, versions[2].tag}, "newest kept, the base of another version kept"

        assert runner.invoke(app, ["models", "delete", child.tag, *NOBODY]).exit_code == 0
        assert runner.invoke(app, ["models", "delete", versions[0].tag, *NOBODY]).exit_code == 0
    finally:
        for model in list_models("prune-test") + list_models("prune-child"):
            bentoml.models.delete(model.tag)


def test_delete_refuses_a_served_version(server, settings):
    served = runner.invoke(app, ["models", "delete", settings.model.name, "--url", server.base_url])
    assert served.exit_code == 1 and "served or routed" in served.output


def test_list_shows_whole_tags_and_an_adapters_base_and_trainable_parameters(random_adapters, settings):
    adapter = random_adapters["a"]
    config = json.loads((get_model(settings.model.name).path / "config.json").read_text())
    hidden, layers = config["hidden_size"], config["num_hidden_layers"]
    kv = hidden * config["num_key_value_heads"] // config["num_attention_heads"]
    rank = 8  # the fixture's adapter "a": rank 8 on q_proj (hidden -> hidden) and v_proj (hidden -> kv)
    expected = layers * rank * ((hidden + hidden) + (hidden + kv))

    listed = runner.invoke(app, ["models", "list"], env={"COLUMNS": "80"})
    assert listed.exit_code == 0, listed.output
    assert adapter.tag in listed.output and "…" not in listed.output, "tags are never cut"
    assert f"{expected:,} trainable" in listed.output and f"base {adapter.labels['base']}" in listed.output

    rows = {row["tag"]: row for row in json.loads(runner.invoke(app, ["models", "list", "--json"]).output)}
    assert rows[adapter.tag]["kind"] == "adapter" and rows[adapter.tag]["parameters"] == expected
    assert rows[adapter.tag]["base"] == adapter.labels["base"]
    base = rows[get_model(settings.model.name).tag]
    assert base["kind"] == "base" and base["source"] == settings.model.source and base["parameters"] > expected
