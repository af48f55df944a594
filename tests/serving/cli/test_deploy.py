"""`servekit deploy k8s`: clear refusals for bad options, and the real command on the project's servekit.yaml."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from serving.cli import app
from serving.registry.store import get_model
from tests.serving.deploy.schema_check import validate

ROOT = Path(__file__).resolve().parents[3]
runner = CliRunner()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--replicas", "0"], "--replicas"),
        (["--engine-replicas", "3", "--max-engine-replicas", "2"], "below --engine-replicas"),
        (["--namespace", "Prod_1"], "not a Kubernetes name"),
        (["--state-url", "http://redis:6379"], "redis://"),
    ],
)
def test_bad_options_exit_2_with_a_clear_message(args, message, tmp_path):
    result = runner.invoke(app, ["deploy", "k8s", "--out", str(tmp_path / "out"), *args])
    assert result.exit_code == 2, result.output
    assert message in " ".join(result.output.split())
    assert not (tmp_path / "out").exists()


def test_renders_the_projects_config_into_valid_manifests(settings, tmp_path):
    out = tmp_path / "k8s"
    result = subprocess.run(
        [str(Path(sys.executable).parent / "servekit"), "deploy", "k8s", "--out", str(out), "--replicas", "3", "--gpu"],
        cwd=ROOT, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    files = sorted(out.iterdir())
    assert [str(path) for path in files] == sorted(result.stdout.split())
    resources = [doc for path in files for doc in yaml.safe_load_all(path.read_text())]
    for resource in resources:
        validate(resource)
    deployments = {r["metadata"]["name"]: r for r in resources if r["kind"] == "Deployment"}
    assert deployments["servekit-gateway"]["spec"]["replicas"] == 3
    (engine,) = [name for name in deployments if name.startswith("servekit-engine-")]
    (vllm,) = deployments[engine]["spec"]["template"]["spec"]["containers"]
    newest = get_model(settings.model.name)
    assert vllm["args"][vllm["args"].index("--model") + 1] == f"/home/bentoml/models/{newest.name}/{newest.version}"
    assert vllm["resources"]["limits"]["nvidia.com/gpu"] == 1
