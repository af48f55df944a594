"""Runs on disk: the newest run of a route is found again, and no route name reaches outside the folder."""

from __future__ import annotations

from pathlib import Path

from serving.shadow.results import latest_results, route_dir, write_results

RUN = {"route": "r", "primary": "a", "candidate": "b", "percent": 10, "max_in_flight": 2, "started_at": 0.0,
       "stopped_at": 1.0, "mirrored": 0, "dropped": {}, "candidate_errors": 0, "comparison": {"pairs": 0}}  # fmt: skip


def test_the_newest_run_is_read_back(tmp_path):
    for run_id, candidate in (("20260101T000000.000Z", "old"), ("20260102T000000.000Z", "new")):
        write_results({"run": {**RUN, "candidate": candidate}, "pairs": [], "samples": []}, tmp_path / "r" / run_id)
    assert latest_results(tmp_path, "r")["run"]["candidate"] == "new"
    assert (tmp_path / "r" / "20260102T000000.000Z" / "report.html").is_file()
    assert latest_results(tmp_path, "never-shadowed") is None


def test_route_names_stay_one_folder_inside(tmp_path):
    (tmp_path / "results.json").write_text("{}")  # what a `..` lookup would find one level up
    inside = tmp_path / "shadows"
    for name in ("..", ".", "a/../../b", "x\x00y", "chat:v1"):
        folder = route_dir(inside, name)
        assert folder.parent == inside and folder.name not in (".", "..") and "/" not in folder.name
        assert latest_results(inside, name) is None
    assert route_dir(inside, "chat:v1").name == "chat:v1"
    assert Path(route_dir(inside, "..")).name == "%2E%2E"
