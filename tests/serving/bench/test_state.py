"""The shared-state section on its own (quick sizes, a real redis-server): rows, target and plot."""

from __future__ import annotations

from PIL import Image
from rich.progress import Progress

from serving.bench import state
from serving.bench.section import BenchContext
from serving.settings import Settings


def test_the_section_measures_both_limiters_and_plots_them(tmp_path):
    ctx = BenchContext(Settings(), tmp_path, quick=True, progress=Progress(), session=None)
    result = state.run(ctx)
    assert [row["limiter"] for row in result.rows] == ["in-process", "redis"]
    assert all(row["n"] == 300 and 0 < row["p50_us"] <= row["p99_us"] for row in result.rows)
    (target,) = result.targets
    assert target.value == result.rows[1]["p99_us"] - result.rows[0]["p99_us"]
    width, height = Image.open(result.plots[0]).size
    assert width > 500 and height > 300
