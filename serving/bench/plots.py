"""The two chart shapes the sections share: grouped bars, and lines over concurrency."""

from __future__ import annotations

import textwrap
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

COLORS = ("#3b7dd8", "#9aa5b1", "#e07b39", "#4caf50", "#8e44ad")
MAX_COLUMNS = 3
"""Panels per row: the gateway's six in one row made a 3,400 px wide strip, unreadable at any display width."""


def bars(
    path: Path, title: str, panels: list[tuple[str, dict[str, list[float]], list[str]]], caption: str = ""
) -> Path:
    """One panel per (y label, {series: values per group}, group names): grouped bars with their values."""
    fig, axes = _grid(len(panels))
    for axis, (label, series, groups) in zip(axes, panels, strict=True):
        width = 0.8 / len(series)
        for i, (name, values) in enumerate(series.items()):
            xs = [g + (i - (len(series) - 1) / 2) * width for g in range(len(groups))]
            drawn = axis.bar(xs, values, width, label=name, color=COLORS[i % len(COLORS)])
            axis.bar_label(drawn, fmt="%.4g", fontsize=8)
        axis.set_xticks(range(len(groups)), groups)
        axis.set_ylabel(label)
        axis.margins(y=0.15)
        if len(series) > 1:
            axis.legend(fontsize=8)
    return _save(fig, path, title, caption)


def lines(
    path: Path,
    title: str,
    xlabel: str,
    panels: list[tuple[str, list[float], dict[str, list[float]]]],
    goals: dict[str, float] | None = None,
) -> Path:
    """One panel per (y label, x values, {series: y values}); `goals` maps a panel's y label to a value drawn as a
    dashed line, so a reader sees which side of it the measurements fall."""
    fig, axes = _grid(len(panels))
    for axis, (label, xs, series) in zip(axes, panels, strict=True):
        for i, (name, ys) in enumerate(series.items()):
            axis.plot(xs, ys, marker="o", label=name, color=COLORS[i % len(COLORS)])
        if (goal := (goals or {}).get(label)) is not None:
            axis.axhline(goal, color="#c0392b", linestyle="--", linewidth=1, label=f"goal {goal:g}")
        axis.set_xscale("log", base=2)
        axis.set_xticks(xs, [f"{x:g}" for x in xs])
        axis.set_xlabel(xlabel)
        axis.set_ylabel(label)
        axis.grid(alpha=0.3)
        axis.legend(fontsize=8)
    return _save(fig, path, title)


def _grid(count: int) -> tuple[plt.Figure, list[plt.Axes]]:
    """`count` panels, at most MAX_COLUMNS a row; the cells left over in the last row are hidden."""
    columns = min(count, MAX_COLUMNS)
    rows = -(-count // columns)
    fig, axes = plt.subplots(rows, columns, figsize=(5.2 * columns, 4.2 * rows), squeeze=False)
    cells = list(axes.flat)
    for spare in cells[count:]:
        spare.set_visible(False)
    return fig, cells[:count]


TITLE_CHARS_PER_INCH = 9
"""About how many characters of a 12 pt title fit in one inch of figure width."""


def fitted_title(title: str, width_in: float) -> str:
    """The title broken into lines that fit the figure's width (a one-panel figure cut long titles off)."""
    return "\n".join(textwrap.wrap(title, int(width_in * TITLE_CHARS_PER_INCH)))


def _save(fig: plt.Figure, path: Path, title: str, caption: str = "") -> Path:
    fig.suptitle(fitted_title(title, fig.get_figwidth()))
    if caption:
        fig.text(0.5, 0.01, caption, ha="center", fontsize=9)
    fig.tight_layout(rect=(0, 0.04 if caption else 0, 1, 1))
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
