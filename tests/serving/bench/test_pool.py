"""The pool section runs in-process (no engine): its table, targets and plot are complete in quick mode."""

from PIL import Image
from rich.progress import Progress

from serving.bench import pool
from serving.bench.section import BenchContext
from serving.settings import Settings


def test_quick_run_measures_every_policy_and_the_index(tmp_path) -> None:
    with Progress(disable=True) as progress:
        result = pool.run(BenchContext(Settings(), tmp_path, True, progress, session=None))
    measures = [row["measure"] for row in result.rows]
    for name in ("round_robin", "least_loaded", "session", "prefix_affinity"):
        assert f"choose() {name} (us)" in measures
    assert any(m.startswith("index MiB at peak, full") for m in measures)
    assert len(result.targets) == 5
    assert all(row["p99"] >= row["p50"] > 0 for row in result.rows)
    (plot,) = result.plots
    assert Image.open(plot).size[0] > 0
