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


def test_many_panels_wrap_into_rows_of_three(tmp_path):
    panels = [(f"y{i}", [1, 8], {"a": [1.0, float(i)]}) for i in range(6)]
    six = Image.open(plots.lines(tmp_path / "six.png", "t", "streams", panels)).size
    three = Image.open(plots.lines(tmp_path / "three.png", "t", "streams", panels[:3])).size
    four = Image.open(plots.lines(tmp_path / "four.png", "t", "streams", panels[:4])).size
    assert six[0] == three[0] == four[0]  # never wider than three panels
    assert six[1] > 1.8 * three[1] and four[1] == six[1]  # a second row, the fourth panel's row too


def test_a_goal_is_drawn_as_a_line_on_its_panel(tmp_path):
    panels = [("ratio", [1, 8], {"a": [0.9, 1.0]})]
    without = Image.open(plots.lines(tmp_path / "without.png", "t", "streams", panels)).convert("RGB")
    with_goal = Image.open(plots.lines(tmp_path / "with.png", "t", "streams", panels, {"ratio": 0.97})).convert("RGB")

    def red_pixels(image: Image.Image) -> int:  # the goal line's colour; no series is drawn in red
        return sum(n for n, (r, g, b) in image.getcolors(1 << 20) if r > 150 and g < 110 and b < 100)

    assert red_pixels(without) == 0
    assert red_pixels(with_goal) > 100
