"""A real short release, as an operator runs it: `servekit train` of the pirate example for two steps, the adapter
shadowed on a route of the session's server (real engine), rolled out to promotion under the `--require-shadow`
gate, then `servekit release report` rendered in headless Chromium: every section filled, every image decoded,
the page not blank."""

from __future__ import annotations

import base64
import io
import json
import re
import subprocess
import time
from pathlib import Path

import bentoml
import httpx
import pytest
from PIL import Image
from typer.testing import CliRunner

from serving.cli import app
from serving.release.report import SECTIONS
from tests.serving.cli.test_release_cli import BROKEN_IMAGES
from tests.serving.rollout.test_rollout_e2e import BASE, FAST
from tests.serving.rollout.traffic import Traffic, admin, wait_for_phase

ROOT = Path(__file__).resolve().parents[3]
PIRATE = ROOT / "training" / "examples" / "pirate.yaml"
# Two optimizer steps on short sequences, a small held-out split, one sample prompt: a real adapter with its
# manifest, loss curve and eval.json in well under a minute on a quiet 2-core CPU.
SHORT = ["max_steps=2", "batch_size=2", "max_seq_len=48", "eval_fraction=0.02", "sample_prompts=[Where is the gold]",
         "sample_max_new_tokens=4"]  # fmt: skip
pytestmark = pytest.mark.timeout(900)
runner = CliRunner()


def chromium(*args: str) -> subprocess.CompletedProcess[str]:
    command = ["chromium", "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=180, check=True)


def inlined_images(page: str) -> list[Image.Image]:
    """Every <img> of the page, decoded: each must be a data: URI holding a valid PNG."""
    sources = re.findall(r'<img[^>]*\ssrc="([^"]*)"', page)
    images = []
    for source in sources:
        assert source.startswith("data:image/png;base64,"), source[:80]
        image = Image.open(io.BytesIO(base64.b64decode(source.split(",", 1)[1], validate=True)))
        image.load()
        assert image.width > 100 and image.height > 100
        images.append(image)
    return images


def mirrored(url: str, route: str, count: int) -> None:
    """`count` distinct users at temperature 0, every other one streamed (TTFT is measured on streams): each
    request copied to the shadow candidate."""
    with httpx.Client(base_url=url, timeout=300) as client:
        for n in range(count):
            body = {"model": route, "user": f"release-{n}", "temperature": 0, "max_tokens": 8, "stream": n % 2 == 1,
                    "messages": [{"role": "user", "content": f"Where is treasure number {n}?"}]}  # fmt: skip
            assert client.post("/v1/chat/completions", json=body).status_code == 200


def settled(url: str, route: str) -> dict:
    deadline = time.monotonic() + 300
    while (run := admin(url, "GET", f"/shadows/{route}").json())["in_flight"] or (
        run["comparison"]["pairs"] + run["candidate_errors"] < run["mirrored"]
    ):
        assert time.monotonic() < deadline, f"copies never settled: {run}"
        time.sleep(0.5)
    return run


def test_a_trained_adapter_shadowed_and_promoted_is_reported_whole(server, tmp_path):
    url, route, name = server.base_url, f"release-{time.monotonic_ns()}", f"test-release-{time.monotonic_ns()}"
    overrides = [f"adapter_name={name}", f"output_dir={tmp_path / 'run'}", *SHORT]
    trained = runner.invoke(app, ["train", str(PIRATE), *(arg for o in overrides for arg in ("--set", o))])
    assert trained.exit_code == 0, trained.output
    candidate = f"{name}:{json.loads((tmp_path / 'run' / 'manifest.json').read_text())['version']}"
    members = {"members": [{"version": BASE, "weight": 100}]}
    try:
        assert admin(url, "PUT", f"/routes/{route}", json=members).status_code == 200
        cli = ["--url", url]
        shadow = runner.invoke(app, ["shadow", "start", route, "--candidate", candidate, "--percent", "100", *cli])
        assert shadow.exit_code == 0, shadow.output
        mirrored(url, route, 8)
        assert settled(url, route)["comparison"]["pairs"] == 8
        assert runner.invoke(app, ["shadow", "stop", route, *cli]).exit_code == 0

        body = {"canary": candidate, "config": FAST, "require_shadow": "error_rate<=0.01,ttft_p95_ratio<=10"}
        with Traffic(url, route):
            started = admin(url, "POST", f"/rollouts/{route}", json=body)
            assert started.status_code == 200, started.text
            assert wait_for_phase(url, route, {"promoted", "rolled_back"})["phase"] == "promoted"

        written = runner.invoke(app, ["release", "report", route, "--out", str(tmp_path / "release"), *cli])
        assert written.exit_code == 0 and "missing: none" in written.output, written.output
        page = (tmp_path / "release" / "release.html").read_text()
    finally:
        admin(url, "DELETE", f"/shadows/{route}")
        admin(url, "DELETE", f"/routes/{route}")
        admin(url, "POST", f"/models/{candidate}/unload")
        bentoml.models.delete(candidate)

    assert re.findall(r'<section id="(\w+)">', page) == list(SECTIONS)
    assert 'class="missing"' not in page
    assert candidate in page and "PROMOTED" in page and "set_weight" in page
    images = inlined_images(page)
    assert len(images) == 3  # the loss curve, the shadow's plots, the canary's weight over time
    assert not re.search(r'(src|href)="(?!data:|#)', page)  # nothing fetched

    probe = tmp_path / "release" / "probe.html"
    probe.write_text(page.replace("</body>", BROKEN_IMAGES))
    dom = chromium("--virtual-time-budget=5000", "--dump-dom", probe.as_uri()).stdout
    counted = re.search(r'data-images="(\d+)" data-broken="(\d+)"', dom)
    assert counted is not None, dom[-500:]
    assert int(counted[1]) == len(images) and counted[2] == "0", "every image decoded in the browser"

    shot = tmp_path / "release" / "release.png"
    chromium("--window-size=1280,6000", f"--screenshot={shot}", (tmp_path / "release" / "release.html").as_uri())
    pixels = Image.open(shot).convert("RGB")
    colours = pixels.getcolors(maxcolors=1 << 20) or []
    assert len(colours) > 200, "plots and text drawn, not a blank page"
    assert sum(n for n, rgb in colours if rgb != (255, 255, 255)) > 0.05 * pixels.width * pixels.height
