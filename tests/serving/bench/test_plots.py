from __future__ import annotations

from PIL import Image

from serving.bench import plots

LONG_TITLE = "servekit vs sequential transformers generate (128 new tokens per request)"


def test_long_titles_wrap_to_the_figure_width_and_short_ones_stay_whole():
    one_panel = plots.fitted_title(LONG_TITLE, 5.2)
    assert len(one_panel.splitlines()) == 2
    assert one_panel.replace("\n", " ") == LONG_TITLE
    assert plots.fitted_title(LONG_TITLE, 15.6) == LONG_TITLE


def test_bars_and_lines_write_pngs_sized_by_panel_count(tmp_path):
    bars = plots.bars(
        tmp_path / "bars.png", LONG_TITLE, [("tok/s", {"a": [1.0, 2.0]}, ["x", "y"])], caption="x / y = 0.5x"
    )
    panels = [("tok/s", [1, 8], {"a": [1.0, 2.0]}), ("ms", [1, 8], {"a": [3.0, 4.0]})]
    lines = plots.lines(tmp_path / "lines.png", "t", "streams", panels)
    assert Image.open(bars).size[0] < Image.open(lines).size[0]
