"""Plain Locust entry point: the same users, metrics and outputs as `servekit loadtest run`, with Locust's UI.

    locust -f loadtest/locustfile.py --host http://127.0.0.1:3000 --model smollm2-135m-instruct \
        [--endpoint chat-stream|chat|completions] [--max-tokens 32:128] [--pin-version V] \
        [--slo "ttft_p95<0.5s"] [--loadtest-out DIR]

Without a shape, the web UI's user count and spawn rate drive the load. Set `LOADTEST_SHAPE`
(constant|step|sweep|poisson, with `LOADTEST_USERS`, `LOADTEST_DURATION` seconds and `LOADTEST_RATE` for
poisson) to run a shape instead: Locust picks shapes up when this file is imported, before options parse.
With `--loadtest-out`, every test stop writes results.json, requests.csv and report.html there."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

from locust import events
from locust.env import Environment

from loadtest.prompts import MaxTokens
from loadtest.results import write_outputs
from loadtest.runner import Collector
from loadtest.shapes import shape_spec
from loadtest.slo import parse_slo
from loadtest.users import ENDPOINTS, LLMUser, UserSettings

__all__ = ["LLMUser"]  # the one user class Locust discovers here

if os.environ.get("LOADTEST_SHAPE"):
    _base, _arguments = shape_spec(
        os.environ["LOADTEST_SHAPE"],
        int(os.environ.get("LOADTEST_USERS", "8")),
        float(os.environ.get("LOADTEST_DURATION", "60")),
        float(os.environ["LOADTEST_RATE"]) if os.environ.get("LOADTEST_RATE") else None,
    )

    class LoadShape(_base):
        """The shape LOADTEST_SHAPE names; Locust instantiates shapes without arguments, so they are bound here."""

        def __init__(self) -> None:
            super().__init__(**_arguments)

    del _base  # Locust would find a second shape class in this module and refuse to choose

collector = Collector()


@events.init_command_line_parser.add_listener
def add_arguments(parser: Any) -> None:
    group = parser.add_argument_group("servekit", "LLM load test options")
    group.add_argument("--model", default="smollm2-135m-instruct", help="served model name or version")
    group.add_argument("--endpoint", default="chat-stream", choices=list(ENDPOINTS))
    group.add_argument("--max-tokens", default="64", help="64, or 32:128 sampled per request")
    group.add_argument("--pin-version", default="", help="send x-servekit-version: V")
    group.add_argument("--slo", default="", help='e.g. "ttft_p95<0.5s,error_rate<0.01"')
    group.add_argument("--loadtest-out", default="", help="write results.json, requests.csv, report.html here")


@events.init.add_listener
def configure(environment: Environment, **_: Any) -> None:
    options = environment.parsed_options
    LLMUser.settings = UserSettings(
        model=options.model, endpoint=options.endpoint, max_tokens=MaxTokens.parse(options.max_tokens),
        version=options.pin_version or None,
    )  # fmt: skip
    environment.events.request.add_listener(collector.on_request)


@events.test_start.add_listener
def reset(**_: Any) -> None:
    collector.reset()


@events.test_stop.add_listener
def write(environment: Environment, **_: Any) -> None:
    options = environment.parsed_options
    if not options or not options.loadtest_out:
        return
    config = {"host": environment.host, "model": options.model, "endpoint": options.endpoint,
              "max_tokens": options.max_tokens, "version": options.pin_version, "slo": options.slo}  # fmt: skip
    t0 = collector.started_at
    objectives = parse_slo(options.slo) if options.slo else []
    write_outputs(Path(options.loadtest_out), list(collector.records), config, t0, time.time() - t0, objectives)
