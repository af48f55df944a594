"""`servekit deploy k8s`: render Kubernetes manifests from servekit.yaml."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console

from serving.cli.config import ConfigOption
from serving.deploy.engines import DeployError
from serving.deploy.k8s import DEFAULT_IMAGE, K8sOptions, render, write
from serving.registry.store import ModelMissingError
from serving.settings import load_settings

app = typer.Typer(no_args_is_help=True, help="Render deployment manifests.")
console = Console(stderr=True)
USAGE_ERROR = 2


@app.command()
def k8s(
    config: Path | None = ConfigOption,
    replicas: int = typer.Option(2, min=1, help="Gateway replicas."),
    engine_replicas: int = typer.Option(1, min=1, help="Engine replicas per version (the autoscaler's minimum)."),
    max_engine_replicas: int | None = typer.Option(
        None, min=1, help="The autoscaler's maximum per version (default: 4x --engine-replicas)."
    ),
    gpu: bool = typer.Option(False, "--gpu", help="CUDA engines: one nvidia.com/gpu each, vLLM's CUDA image."),
    out: Path = typer.Option(Path("deploy/k8s"), help="Directory for the manifests (one file per kind)."),
    namespace: str = typer.Option("servekit", help="Namespace of every object."),
    image: str = typer.Option(DEFAULT_IMAGE, help="Gateway image: the bento's (`bentoml containerize`)."),
    engine_image: str | None = typer.Option(None, help="Engine image (default: vLLM's, of the version installed)."),
    state_url: str | None = typer.Option(
        None, help="External Redis for shared state (default: settings' state.url, else a Redis is rendered)."
    ),
    prometheus_url: str | None = typer.Option(
        None, help="Prometheus the autoscaler and rollouts query (default: observe.url, else the Operator's)."
    ),
) -> None:
    """Render the gateway, engines, Redis, config, keys, autoscalers and monitoring as plain manifests."""
    settings = load_settings(config)
    try:
        options = K8sOptions(
            namespace=namespace,
            replicas=replicas,
            engine_replicas=engine_replicas,
            max_engine_replicas=max_engine_replicas,
            gpu=gpu,
            image=image,
            engine_image=engine_image,
            state_url=state_url,
            prometheus_url=prometheus_url,
        )
        paths = write(render(settings, options), out)
    except (ValueError, DeployError) as error:
        console.print(f"[red]error:[/red] {error}", highlight=False, soft_wrap=True)
        raise typer.Exit(USAGE_ERROR) from None
    except ModelMissingError as error:
        console.print(f"[red]error:[/red] {error}", highlight=False, soft_wrap=True)
        raise typer.Exit(1) from None
    for path in paths:
        print(path)
    console.print(f"kubectl apply -f {out}  (docs/kubernetes.md: fill the models volume first)", highlight=False)
