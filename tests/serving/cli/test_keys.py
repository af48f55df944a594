"""`servekit keys` with and without a shared state (a real redis-server)."""

from __future__ import annotations

import re

import yaml
from typer.testing import CliRunner

from serving.api.auth import key_digest
from serving.cli import app

runner = CliRunner()


def test_without_state_url_create_prints_the_config_entry_and_revoke_points_there(tmp_path, monkeypatch):
    monkeypatch.delenv("SERVEKIT_STATE__URL", raising=False)
    config = tmp_path / "servekit.yaml"
    config.write_text("{}\n")
    created = runner.invoke(app, ["keys", "create", "--id", "ci", "--tokens-per-minute", "500", "-c", str(config)])
    assert created.exit_code == 0, created.output
    key = re.search(r"sk-\S+", created.output).group(0)
    (entry,) = yaml.safe_load(created.output.split("servekit.yaml:\n", 1)[1])
    assert entry == {"id": "ci", "sha256": key_digest(key), "role": "user", "models": [], "tokens_per_minute": 500}
    refused = runner.invoke(app, ["keys", "revoke", "--id", "ci", "-c", str(config)])
    assert refused.exit_code == 1 and "servekit.yaml" in refused.output
    assert "SERVEKIT_API_KEY" not in created.output, "a user key is no admin CLI key"


def test_with_state_url_keys_are_created_listed_and_revoked_in_redis(tmp_path, monkeypatch, redis_server):
    monkeypatch.setenv("SERVEKIT_STATE__URL", redis_server.url)
    config = tmp_path / "servekit.yaml"
    config.write_text(yaml.safe_dump({"auth": {"keys": [{"id": "from-yaml", "sha256": "0" * 64}]}}))
    args = ["-c", str(config)]
    created = runner.invoke(app, ["keys", "create", "--id", "team-a", "--role", "admin", "--model", "chat", *args])
    assert created.exit_code == 0, created.output
    assert "auth: keys" not in created.output  # nothing to paste: it is stored
    key = re.search(r"sk-\S+", created.output).group(0)
    assert f"export SERVEKIT_API_KEY={key}" in created.output, "an admin key says how the admin CLI sends it"
    listed = runner.invoke(app, ["keys", "list", *args])
    assert re.search(r"from-yaml .*config", listed.output)
    assert re.search(r"team-a .*admin .*chat .*redis", listed.output)
    duplicate = runner.invoke(app, ["keys", "create", "--id", "team-a", *args])
    assert duplicate.exit_code == 1 and "exists already" in duplicate.output
    assert runner.invoke(app, ["keys", "revoke", "--id", "team-a", *args]).exit_code == 0
    assert "team-a" not in runner.invoke(app, ["keys", "list", *args]).output
    missing = runner.invoke(app, ["keys", "revoke", "--id", "team-a", *args])
    assert missing.exit_code == 1 and "No key" in missing.output


def test_an_unreachable_state_url_fails_with_its_address(tmp_path, monkeypatch):
    monkeypatch.setenv("SERVEKIT_STATE__URL", "redis://127.0.0.1:9/0")
    config = tmp_path / "servekit.yaml"
    config.write_text("{}\n")
    result = runner.invoke(app, ["keys", "list", "-c", str(config)])
    assert result.exit_code == 1 and "cannot reach redis://127.0.0.1:9/0" in result.output
