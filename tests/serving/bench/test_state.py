"""The shared-state section on its own (quick sizes, a real redis-server, gateways on the echo engine): rows,
target and plot."""

from __future__ import annotations

from PIL import Image
from rich.progress import Progress

from serving.bench import state
from serving.bench.section import BenchContext
from serving.settings import Settings


def test_the_section_measures_the_limiter_and_the_gateways_and_plots_them(tmp_path):
    ctx = BenchContext(Settings(), tmp_path, quick=True, progress=Progress(), session=None)
    result = state.run(ctx)
    rows = {row["measure"]: row for row in result.rows}
    assert list(rows) == ["limiter in-process", "limiter redis", "gateway embedded", "gateway redis"]
    assert rows["limiter redis"]["n"] == 300 and rows["gateway redis"]["n"] == 60
    assert all(0 < row["p50_us"] <= row["p99_us"] for row in result.rows)
    (target,) = result.targets
    assert target.value == rows["gateway redis"]["p99_us"] - rows["gateway embedded"]["p99_us"]
    width, height = Image.open(result.plots[0]).size
    assert width > 500 and height > 300
    assert "gateway-redis.log" in {path.name for path in tmp_path.iterdir()}
