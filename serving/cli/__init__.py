"""The `servekit` command line."""

from __future__ import annotations

import typer

from serving.cli import bench, config, models, serve, train

app = typer.Typer(no_args_is_help=True, help="servekit: serve LLMs through one OpenAI-compatible API.")
app.add_typer(config.app, name="config")
app.add_typer(models.app, name="models")
app.add_typer(bench.app, name="bench")
app.command(name="serve")(serve.serve)
app.command(name="train")(train.train)


def main() -> None:
    app()
