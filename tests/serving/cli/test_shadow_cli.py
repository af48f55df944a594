"""`servekit shadow start|status|stop` against the whole app on fake engines (uvicorn in a thread)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi import FastAPI
from typer.testing import CliRunner

from serving.cli import app
from serving.router.routes import Route, RouteMember
from serving.settings import AccessLogSettings, Settings, ShadowSettings
from tests.serving.threaded_stack import threaded_stack

runner = CliRunner()


async def with_route(served: FastAPI) -> None:
    await served.state.gateway.set_route(Route(name="ab", members=[RouteMember(version="chat", weight=100)]))


@pytest.fixture
def url(tmp_path: Path) -> Iterator[list[str]]:
    settings = Settings(
        home=tmp_path, shadow=ShadowSettings(out_dir=tmp_path / "shadows"), access_log=AccessLogSettings(enabled=False)
    )
    with threaded_stack(tmp_path, settings, "chat", "new", ready=with_route) as (base_url, _):
        yield ["--url", base_url]


def test_start_status_stop(url, tmp_path):
    started = runner.invoke(app, ["shadow", "start", "ab", "--candidate", "new", "--percent", "25", *url])
    assert started.exit_code == 0, started.output
    assert "shadow of new on ab (primary chat): running, 25% of keys" in started.output
    assert "shadow of new on ab" in runner.invoke(app, ["shadow", "status", *url]).output
    assert '"max_in_flight": 8' in runner.invoke(app, ["shadow", "status", "ab", *url]).output
    stopped = runner.invoke(app, ["shadow", "stop", "ab", *url])
    assert stopped.exit_code == 0 and "finished" in stopped.output
    assert Path(stopped.output.split("report: ")[1].strip()).is_file()
    assert "no shadow run in progress" in runner.invoke(app, ["shadow", "status", *url]).output


def test_bad_input_exits_1_with_the_servers_message(url):
    percent = runner.invoke(app, ["shadow", "start", "ab", "--candidate", "new", "--percent", "150", *url])
    assert percent.exit_code == 1 and "error 400" in percent.output and "percent" in percent.output
    primary = runner.invoke(app, ["shadow", "start", "ab", "--candidate", "chat", "--percent", "5", *url])
    assert primary.exit_code == 1 and "is the primary" in primary.output
    assert (
        runner.invoke(
            app, ["shadow", "start", "ab", "--candidate", "new", "--percent", "5", "--duration", "10m", *url]
        ).exit_code
        == 0
    )
    again = runner.invoke(app, ["shadow", "start", "ab", "--candidate", "new", "--percent", "5", *url])
    assert again.exit_code == 1 and "error 409" in again.output
    assert runner.invoke(app, ["shadow", "stop", "nowhere", *url]).exit_code == 1


def test_rollout_start_with_require_shadow_is_refused_without_a_shadow_run(url):
    refused = runner.invoke(
        app,
        ["rollout", "start", "ab", "--canary", "new", "--require-shadow", "agreement>=0.9", "--interval", "60m", *url],
    )
    assert refused.exit_code == 1 and "error 409" in refused.output and "no shadow run on this route" in refused.output
