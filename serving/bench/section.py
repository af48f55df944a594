"""What a benchmark section receives and returns: the contract between the harness and each section."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rich.progress import Progress

from serving.settings import Settings

if TYPE_CHECKING:
    from serving.bench.session import ServekitSession


@dataclass
class Target:
    """One figure checked against the issue's goal, e.g. ("throughput servekit/raw @32", 0.95, ">= 0.97x")."""

    name: str
    value: float
    goal: str
    met: bool


@dataclass
class BenchContext:
    settings: Settings
    out: Path
    """The section's own directory (`<--out>/<section>`)."""
    quick: bool
    """Smoke mode: tiny sizes, only proves the harness works; its numbers mean nothing."""
    progress: Progress
    session: ServekitSession
    """A servekit (bentoml serve + vLLM) shared by the sections that need one; started on first use."""
    results: dict[str, SectionResult] = field(default_factory=dict)
    """Sections already run in this invocation (a later one may reuse an earlier one's measurement)."""


@dataclass
class SectionResult:
    name: str
    rows: list[dict[str, Any]]
    """The section's table: flat dicts with the same keys."""
    targets: list[Target]
    plots: list[Path]
    notes: list[str] = field(default_factory=list)
