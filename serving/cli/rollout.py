"""`servekit rollout ...`: canary rollouts of a running server."""

from __future__ import annotations

import json

import typer

from serving.cli.admin_client import UrlOption, call, console

app = typer.Typer(
    no_args_is_help=True, help="Canary rollouts: shift traffic in steps, promote or roll back on metrics."
)


def seconds(value: str) -> float:
    """`30s`, `2m` or a plain number of seconds."""
    return float(value[:-1]) * 60 if value.endswith("m") else float(value.removesuffix("s"))


@app.command()
def start(
    route: str,
    canary: str = typer.Option(..., help="The version to roll out."),
    steps: str = typer.Option("5,10,25,50,100", help="Canary weights, percent."),
    interval: str = typer.Option("30s", help="Time per step, e.g. 30s or 2m."),
    max_error_rate: float = typer.Option(0.01),
    max_ttft_p95_ratio: float = typer.Option(1.25),
    max_latency_p95_ratio: float = typer.Option(1.25),
    min_requests: int = typer.Option(50),
    failure_threshold: int = typer.Option(2),
    pre_rollout_webhook: str | None = typer.Option(None),
    step_webhook: str | None = typer.Option(None),
    gate_slo: str | None = typer.Option(
        None,
        help="Load-test gate: SLOs a load test pinned to the canary must meet before the start and each step, "
        'e.g. "ttft_p95<2s,error_rate<0.01".',
    ),
    gate_duration: float = typer.Option(10, help="Load-test gate duration, seconds."),
    gate_users: int = typer.Option(4, help="Load-test gate users."),
    gate_stages: str = typer.Option("pre-rollout,step", help="When the load-test gate runs."),
    require_shadow: str | None = typer.Option(
        None,
        help="Refuse to start unless the route's last shadow run of the canary met these, "
        'e.g. "agreement>=0.9,ttft_p95_ratio<=1.25,error_rate<=0.01".',
    ),
    url: str = UrlOption,
) -> None:
    """Start a canary rollout on ROUTE; waits (showing progress) while a canary base version's engine starts."""
    config = {
        "steps": [float(s) for s in steps.split(",")],
        "interval_s": seconds(interval),
        "max_error_rate": max_error_rate,
        "max_ttft_p95_ratio": max_ttft_p95_ratio,
        "max_latency_p95_ratio": max_latency_p95_ratio,
        "min_requests": min_requests,
        "failure_threshold": failure_threshold,
    }
    body: dict[str, object] = {
        "canary": canary,
        "config": config,
        "pre_rollout_webhook": pre_rollout_webhook,
        "step_webhook": step_webhook,
        "require_shadow": require_shadow,
    }
    if gate_slo is not None:
        stages = [stage.strip() for stage in gate_stages.split(",")]
        body["load_test_gate"] = {
            "url": url, "slo": gate_slo, "duration_s": gate_duration, "users": gate_users, "stages": stages
        }  # fmt: skip
    state = call(url, "POST", f"/rollouts/{route}", body, progress=True)
    weight = state["config"]["steps"][state["step"]]
    console.print(
        f"rollout of [bold]{state['canary']}[/bold] on {route}: {state['phase']}, canary at {weight:g}% "
        f"(primary {state['primary']})"
    )
    for gate, spec in state["gates"].items():
        console.print(f"  gate {gate}: {json.dumps(spec)}")


@app.command()
def status(route: str, url: str = UrlOption) -> None:
    console.print_json(json.dumps(call(url, "GET", f"/rollouts/{route}")))


@app.command()
def history(route: str, url: str = UrlOption) -> None:
    """Every decision with the metric values behind it."""
    console.print_json(json.dumps(call(url, "GET", f"/rollouts/{route}/history")))


def _operation(name: str) -> None:
    def run(route: str, url: str = UrlOption) -> None:
        state = call(url, "POST", f"/rollouts/{route}/{name}")
        console.print(f"{route}: {state['phase']}")

    run.__doc__ = f"{name.capitalize()} the rollout on ROUTE."
    app.command(name=name)(run)


for _name in ("pause", "resume", "promote", "abort"):
    _operation(_name)


@app.command()
def rollback(
    route: str, to: str | None = typer.Option(None, help="Version to send all traffic to."), url: str = UrlOption
) -> None:
    """Send all of a route's traffic back to the previous primary (or to --to)."""
    call(url, "POST", f"/routes/{route}/rollback", {"to": to})
    console.print(f"{route}: all traffic to {to or 'the previous primary'}")
