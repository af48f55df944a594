"""Locust gevent-patches any process that imports it; pytest's must stay unpatched (the other suites run
asyncio and threads in it). Tests here import Locust's classes with patching off and run real load in child
processes (`python -m loadtest`, which patches itself), with `load_env()` as their environment."""

from __future__ import annotations

import os

os.environ["LOCUST_SKIP_MONKEY_PATCH"] = "1"


def load_env() -> dict[str, str]:
    """The environment for a child that runs load: patching back on."""
    return {k: v for k, v in os.environ.items() if k != "LOCUST_SKIP_MONKEY_PATCH"}
