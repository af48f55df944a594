"""`servekit models delete/prune`: registry hygiene that never removes what is in use."""

from __future__ import annotations

import json

import bentoml
from typer.testing import CliRunner

from serving.cli import app
from serving.registry.adapters import import_adapter
from serving.registry.store import RegisteredModel, list_models
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
