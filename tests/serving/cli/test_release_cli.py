"""A short release on fake engines, driven through the CLI and the admin API as an operator would (shadow, gated
rollout, ticks on real requests, promotion), then `servekit release report`, rendered in headless Chromium."""

from __future__ import annotations

import asyncio
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI
from typer.testing import CliRunner

from serving.api.shadows import shadows_of
from serving.cli import app
from serving.router.routes import Route, RouteMember
from serving.settings import AccessLogSettings, Settings, ShadowSettings
from serving.shadow.answer import Answer
from tests.serving.threaded_stack import in_loop, threaded_stack

runner = CliRunner()
BROKEN_IMAGES = """<script>window.addEventListener("load", () => { const broken = [...document.images]
  .filter(i => !i.complete || i.naturalWidth === 0).length; document.body.dataset.images = document.images.length;
  document.body.dataset.broken = broken; });</script></body>"""


async def with_route(served: FastAPI) -> None:
    await served.state.gateway.set_route(Route(name="ab", members=[RouteMember(version="chat", weight=100)]))


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[tuple[str, FastAPI]]:
    settings = Settings(
        home=tmp_path, shadow=ShadowSettings(out_dir=tmp_path / "shadows"), access_log=AccessLogSettings(enabled=False)
    )
    with threaded_stack(tmp_path, settings, "chat", "new", ready=with_route) as served:
        yield served


async def mirrored_pairs(served: FastAPI, n: int) -> None:
    """What the request pipeline does for mirrored requests: copy, then report the primary's answer."""
    shadower = shadows_of(served)

    async def candidate() -> Answer:
        return Answer(200, 0.30, 0.05, "Arr, hello there", None, 0.0)

    for i in range(n):
        shadower.mirror("ab", f"req-{i}", candidate)
        shadower.primary_done("ab", f"req-{i}", Answer(200, 0.25, 0.04, "Arr, hello there", None, 0.0))
    while shadower.runs["ab"].busy:  # copies in flight or pairs being compared
        await asyncio.sleep(0.005)


def traffic(url: str, n: int) -> None:
    for i in range(n):
        body = {"model": "ab", "user": f"user-{i}", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2}
        assert httpx.post(f"{url}/v1/chat/completions", json=body, timeout=30).status_code == 200


def test_a_short_release_is_reported_from_shadow_to_promotion(stack, tmp_path):
    url, served = stack
    cli = ["--url", url]
    assert runner.invoke(app, ["shadow", "start", "ab", "--candidate", "new", "--percent", "100", *cli]).exit_code == 0
    in_loop(served, mirrored_pairs(served, 12))
    assert runner.invoke(app, ["shadow", "stop", "ab", *cli]).exit_code == 0
    started = runner.invoke(app, [
        "rollout", "start", "ab", "--canary", "new", "--steps", "50,100", "--interval", "60m", "--min-requests", "5",
        "--max-ttft-p95-ratio", "1000", "--max-latency-p95-ratio", "1000",
        "--require-shadow", "agreement>=0.9,error_rate<=0.01", *cli,
    ])  # fmt: skip
    assert started.exit_code == 0, started.output
    for _ in range(2):  # 50 % -> 100 % -> promoted, each step judged on the requests just sent
        traffic(url, 30)
        in_loop(served, served.state.rollouts.tick("ab"))
    assert runner.invoke(app, ["rollout", "status", "ab", *cli]).output.count('"promoted"') == 1

    written = runner.invoke(app, ["release", "report", "ab", "--out", str(tmp_path / "release"), *cli])
    assert written.exit_code == 0, written.output
    assert "missing: lineage" in written.output  # the fake engines' versions are in no registry
    page = (tmp_path / "release" / "release.html").read_text()
    assert re.findall(r'<section id="(\w+)">', page) == [
        "lineage",
        "training",
        "shadow",
        "gates",
        "timeline",
        "outcome",
    ]
    assert "not in the registry" in page and "PROMOTED: new on ab" in page
    assert "shadow: held (agreement&gt;=0.9,error_rate&lt;=0.01)" in page and "set_weight" in page

    probe = tmp_path / "release" / "probe.html"
    probe.write_text(page.replace("</body>", BROKEN_IMAGES))
    dom = subprocess.run(
        ["chromium", "--headless", "--no-sandbox", "--disable-gpu", "--virtual-time-budget=5000", "--dump-dom",
         probe.as_uri()], capture_output=True, text=True, timeout=120, check=True,
    ).stdout  # fmt: skip
    images = re.search(r'data-images="(\d+)" data-broken="(\d+)"', dom)
    assert images is not None, dom[-500:]
    assert int(images[1]) >= 2 and images[2] == "0"  # shadow plots and weights over time, every one decoded
