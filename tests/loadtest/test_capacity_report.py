"""The capacity plot and page are written from a profile, with or without a knee."""

from __future__ import annotations

from loadtest.capacity import Point, build_profile
from loadtest.capacity_report import slo_limit, write_page, write_plot


def profile(meets: bool) -> dict:
    breaches = () if meets else ("ttft_p95<1s: observed ttft_p95=2",)
    curve = [Point("closed", n, None, 10, 2.0 * n, 2.0 * n, 0.0, 0.1 * n, 0.01, 1.0, breaches) for n in (1, 2, 4)]
    curve.append(Point("open", 8, 5.0, 10, 5.0, 5.0, 0.0, 0.2, 0.01, 1.0, breaches))
    return build_profile("m:v1", ["ttft_p95<1s", "itl_p95<100ms"], curve, {}, {}, {"cpu_cores": 2}, "t")


def test_plot_and_page_show_the_knee(tmp_path):
    data = profile(meets=True)
    write_plot(data, tmp_path / "capacity.png")
    write_page(data, tmp_path / "capacity.png", tmp_path / "capacity.html")
    assert (tmp_path / "capacity.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    page = (tmp_path / "capacity.html").read_text()
    assert "knee: 4 users" in page and 'src="data:image/png;base64,' in page
    assert page.count("<tr>") == 1 + len(data["curve"])


def test_a_profile_without_a_knee_says_so(tmp_path):
    data = profile(meets=False)
    write_plot(data, tmp_path / "capacity.png")
    write_page(data, tmp_path / "capacity.png", tmp_path / "capacity.html")
    assert "no load level met the SLO" in (tmp_path / "capacity.html").read_text()


def test_slo_bounds_are_drawn_in_seconds():
    assert slo_limit(["ttft_p95<1s", "itl_p95<100ms"], "itl_p95") == 0.1
    assert slo_limit(["error_rate<0.01"], "ttft_p95") is None
