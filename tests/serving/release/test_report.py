"""The release HTML: every section in order, filled or saying what is missing, nothing fetched."""

from __future__ import annotations

import re

from serving.release.report import SECTIONS, render, write
from serving.release.story import Release, gather
from tests.serving.release.test_story import HISTORY, server, trained_version

OBSERVED = {
    "primary": {"requests": 40, "server_errors": 0, "ttft_p95_s": 0.1, "latency_p95_s": 1.0},
    "canary": {"requests": 10, "server_errors": 1, "ttft_p95_s": 0.12, "latency_p95_s": 1.5},
    "window_s": 60,
}
TICK = {
    "at": 5.0, "event": "set_weight", "reason": "healthy", "phase": "progressing", "step": 1, "canary_weight": 50.0,
    "observation": OBSERVED, "gates": [{"gate": "load test", "passed": True, "detail": "SLOs held", "report": "r"}],
}  # fmt: skip


def sections(page: str) -> list[str]:
    return re.findall(r'<section id="(\w+)">', page)


def test_a_whole_release_fills_every_section_in_order(tmp_path):
    history = [*HISTORY[:5], TICK, *HISTORY[5:]]
    pages = {"/rollouts/ab/history": history, "/models": {"data": [{"id": "new", "root": "new:abc"}]}}
    release = gather("ab", server(pages), registry=lambda tag: trained_version(tmp_path))
    page = write(release, tmp_path / "out").read_text()
    assert sections(page) == list(SECTIONS)
    assert 'class="missing"' not in page
    assert "d" * 64 in page and "4096" in page and "base + adapter" in page  # lineage, evaluation
    assert "agreement&gt;=0.9" in page  # the shadow requirement the rollout was started with
    assert "REFUSED" in page and "SLOs held" in page  # gates, before the start and at a step
    assert "1.200" in page and "1.500" in page and "10.00%" in page  # the tick's ratios and canary error rate
    assert "PROMOTED" in page
    assert page.count("data:image/png;base64,") == 2  # loss curve and weights (this shadow run has no pairs)
    assert not re.search(r'(src|href)="(?!data:)', page)  # nothing fetched


def test_an_empty_release_says_what_is_missing_in_each_section():
    page = render(Release("ab", notes={"rollout": "Route `ab` has had no rollout on this server.",
                                       "shadow": "No shadow run of this candidate on this route."}))  # fmt: skip
    assert sections(page) == list(SECTIONS)
    assert page.count('class="missing"') == len(SECTIONS)
    assert "No shadow run of this candidate" in page and "has had no rollout" in page
