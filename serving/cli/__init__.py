"""The `servekit` command line."""

from __future__ import annotations

import typer

from serving.cli import (
    bench,
    config,
    deploy,
    keys,
    loadtest,
    models,
    observe,
    release,
    rollout,
    routes,
    serve,
    shadow,
    soak,
    train,
    triton,
)
from serving.cli.capacity import capacity
from serving.cli.state import app as state_app

app = typer.Typer(no_args_is_help=True, help="servekit: serve LLMs through one OpenAI-compatible API.")
app.add_typer(config.app, name="config")
app.add_typer(models.app, name="models")
app.add_typer(routes.app, name="routes")
app.add_typer(rollout.app, name="rollout")
app.add_typer(keys.app, name="keys")
app.add_typer(loadtest.app, name="loadtest")
app.add_typer(triton.app, name="triton")
app.add_typer(state_app, name="state")
app.add_typer(shadow.app, name="shadow")
app.add_typer(release.app, name="release")
app.add_typer(deploy.app, name="deploy")
app.command(name="serve")(serve.serve)
app.command(name="observe")(observe.observe)
app.command(name="train")(train.train)
app.command(name="bench")(bench.bench)
app.command(name="soak")(soak.soak_command)
app.command(name="capacity")(capacity)


def main() -> None:
    app()
