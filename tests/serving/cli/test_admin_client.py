"""The admin CLI against a gateway with auth on (fake engines, uvicorn in a thread): it sends the admin key from
SERVEKIT_API_KEY, and says how to give one when refused."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from serving.api.auth import key_digest
from serving.cli import app
from serving.settings import AccessLogSettings, ApiKey, AuthSettings, Settings
from tests.serving.threaded_stack import threaded_stack

runner = CliRunner()
ADMIN_KEY = "sk-admin-test"
USER_KEY = "sk-user-test"


@pytest.fixture
def url(tmp_path: Path) -> Iterator[list[str]]:
    keys = [
        ApiKey(id="ops", sha256=key_digest(ADMIN_KEY), role="admin"),
        ApiKey(id="alice", sha256=key_digest(USER_KEY)),
    ]
    settings = Settings(home=tmp_path, auth=AuthSettings(keys=keys), access_log=AccessLogSettings(enabled=False))
    with threaded_stack(tmp_path, settings, "chat") as (base_url, _):
        yield ["--url", base_url]


def test_routes_set_sends_the_admin_key_from_the_environment(url):
    result = runner.invoke(app, ["routes", "set", "ab", "chat=100", *url], env={"SERVEKIT_API_KEY": ADMIN_KEY})
    assert result.exit_code == 0, result.output
    listed = runner.invoke(app, ["routes", "list", *url], env={"SERVEKIT_API_KEY": ADMIN_KEY})
    assert "ab" in listed.output and "100%" in listed.output


def test_refused_without_a_key_says_how_to_give_one(url):
    result = runner.invoke(app, ["routes", "list", *url], env={"SERVEKIT_API_KEY": None})
    assert result.exit_code == 1
    assert "error 401" in result.output and "export SERVEKIT_API_KEY=" in result.output


def test_a_user_key_is_refused_with_403(url):
    result = runner.invoke(app, ["routes", "list", *url], env={"SERVEKIT_API_KEY": USER_KEY})
    assert result.exit_code == 1 and "error 403" in result.output
