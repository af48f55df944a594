"""Locust's own master/worker mode for `servekit loadtest run --workers N | --master | --worker`.

One load-generating process tops out near 1,000 req/s; a fleet needs more. Locust already distributes users
over worker processes (ZeroMQ, one master); what it does not carry is servekit's per-request records. Here:

- the master puts the run's settings into `parsed_options.servekit_run`, which Locust ships to every worker
  with each spawn message; a worker configures its users from it when its test starts;
- a worker's records travel with its periodic stats report (`report_to_master` -> `worker_report`) and, when
  its users have stopped, in one last `servekit_records` message sent before Locust's `client_stopped`, so the
  master holds every record exactly once and writes the same outputs as a single-process run;
- the master tells workers the whole run's user count (`servekit_users`), so each record names the run's
  concurrency level rather than one worker's share of it."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import gevent
from locust import argument_parser
from locust.env import Environment
from locust.runners import MasterRunner, WorkerRunner

from loadtest.metrics import RequestRecord
from loadtest.prompts import MaxTokens
from loadtest.shapes import make_shape
from loadtest.users import LLMUser, RequestBudget, UserSettings

RUN_OPTION = "servekit_run"  # not one of Locust's options, so Locust forwards it to workers
RECORDS_KEY = "servekit_records"  # in a worker's stats report
FINAL_MESSAGE = "servekit_records"  # a worker's last records, once its users stopped
LEVEL_MESSAGE = "servekit_users"
WORKER_CONNECT_TIMEOUT_S = 120.0
FLUSH_TIMEOUT_S = 15.0  # after the master stopped: how long the workers' last records may take to arrive


class DistributionError(Exception):
    """Workers that never connected, a worker that died before the run: no load was run."""


@dataclass
class Distribution:
    """Where the workers come from: `local` N child processes, or N that connect from elsewhere (`--master`)."""

    workers: int
    local: bool = True
    bind_host: str = "127.0.0.1"
    port: int = 0  # 0: a free port (local workers only)


def budget_share(limit: int | None, workers: int, index: int) -> int | None:
    """Worker `index`'s part of a run's request budget; the parts add up to `limit`."""
    if limit is None:
        return None
    return limit // workers + (1 if index < limit % workers else 0)


def run_options(payload: dict[str, Any]) -> Any:
    """Locust's default options plus ours: the master reads Locust's (headless, rebalancing), workers get ours."""
    parser = argument_parser.get_empty_argument_parser()
    argument_parser.setup_parser_arguments(parser)
    options = parser.parse(args=[])
    setattr(options, RUN_OPTION, payload)
    return options


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class Master:
    """The master side: starts (or awaits) the workers and merges their records into `records`."""

    environment: Environment
    distribution: Distribution
    records: list[RequestRecord]
    log_dir: Path
    runner: MasterRunner = field(init=False)
    processes: list[subprocess.Popen[bytes]] = field(default_factory=list)
    flushed: set[str] = field(default_factory=set)
    level: int = 0
    port: int = 0

    def start(self, on_wait: Callable[[int, int], None]) -> MasterRunner:
        """Bind, start local workers if asked, and return once all workers are connected (`on_wait(connected,
        port)` on each change meanwhile); on failure nothing is left running."""
        self.port = self.distribution.port or free_port()
        self.runner = self.environment.create_master_runner(self.distribution.bind_host, self.port)
        try:
            return self._start(on_wait)
        except BaseException:
            self.runner.quit()
            self._reap()
            raise

    def _start(self, on_wait: Callable[[int, int], None]) -> MasterRunner:
        port = self.port
        self.runner.register_message(FINAL_MESSAGE, self.on_final)
        self.environment.events.worker_report.add_listener(self.on_report)
        if self.distribution.local:
            self.log_dir.mkdir(parents=True, exist_ok=True)
            for index in range(self.distribution.workers):
                self.processes.append(spawn_worker("127.0.0.1", port, self.log_dir / f"worker-{index}.log"))
        self.announce_levels()
        deadline, shown = time.monotonic() + WORKER_CONNECT_TIMEOUT_S, -1
        while self.runner.worker_count < self.distribution.workers:
            if dead := [p.args for p in self.processes if p.poll() is not None]:
                raise DistributionError(f"a local worker exited before the run; see {self.log_dir}: {dead[0]}")
            if time.monotonic() > deadline:
                raise DistributionError(
                    f"{self.runner.worker_count} of {self.distribution.workers} workers connected to port {port} "
                    f"within {WORKER_CONNECT_TIMEOUT_S:.0f}s"
                )
            if shown != self.runner.worker_count:
                shown = self.runner.worker_count
                on_wait(shown, port)
            gevent.sleep(0.2)
        return self.runner

    def on_report(self, client_id: str, data: dict[str, Any], **_: Any) -> None:
        self.records.extend(RequestRecord(**row) for row in data.get(RECORDS_KEY, ()))

    def on_final(self, environment: Environment, msg: Any, **_: Any) -> None:
        self.records.extend(RequestRecord(**row) for row in msg.data)
        self.flushed.add(msg.node_id)

    def announce_levels(self) -> None:
        """Wrap the shape's tick: a new user count goes to the workers before Locust sends them the spawns."""
        shape = self.environment.shape_class
        tick = shape.tick

        def announcing() -> Any:
            current = tick()
            if current is not None and current[0] != self.level:
                self.level = current[0]
                self.runner.send_message(LEVEL_MESSAGE, self.level)
            return current

        shape.tick = announcing

    def finish(self) -> int:
        """Wait for every worker's last records, then quit Locust and reap local workers; how many workers never
        sent their last records (died, or cut off by the timeout: their last few seconds are missing)."""
        deadline = time.monotonic() + FLUSH_TIMEOUT_S
        while len(self.flushed) < self.distribution.workers and time.monotonic() < deadline:
            gevent.sleep(0.1)
        self.runner.quit()
        self._reap()
        return max(0, self.distribution.workers - len(self.flushed))

    def _reap(self) -> None:
        for process in self.processes:
            process.terminate()  # a stopped Locust worker idles for stop_timeout before it would quit
        for process in self.processes:
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                process.kill()


def spawn_worker(master_host: str, port: int, log: Path) -> subprocess.Popen[bytes]:
    command = [sys.executable, "-m", "loadtest", "run", "--worker", "--master-host", master_host,
               "--master-port", str(port)]  # fmt: skip
    with log.open("wb") as handle:
        return subprocess.Popen(command, stdout=handle, stderr=subprocess.STDOUT)


@dataclass
class Worker:
    """The worker side: users configured from the master's settings; records handed over, each once."""

    environment: Environment
    pending: list[RequestRecord] = field(default_factory=list)
    level: int | None = None

    def on_request(self, context: dict[str, Any] | None = None, **_: Any) -> None:
        if context and isinstance(context.get("record"), RequestRecord):
            self.pending.append(context["record"])

    def drain(self) -> list[dict[str, Any]]:
        rows, self.pending = [asdict(r) for r in self.pending], []
        return rows

    def on_test_start(self, environment: Environment, **_: Any) -> None:
        run = getattr(environment.parsed_options, RUN_OPTION)
        runner: WorkerRunner = environment.runner
        LLMUser.settings = UserSettings(
            model=run["model"], endpoint=run["endpoint"], max_tokens=MaxTokens.parse(run["max_tokens"]),
            version=run["version"], ignore_eos=run["ignore_eos"], level=self.level,
            budget=RequestBudget(budget_share(run["max_requests"], run["workers"], runner.worker_index)),
        )  # fmt: skip
        # Poisson pacing reads the shape's rate and pool size; the master alone runs the shape's clock.
        environment.shape_class = make_shape(run["shape"], run["users"], run["duration_s"], run["rate"])
        self.pending.clear()

    def on_report(self, client_id: str, data: dict[str, Any], **_: Any) -> None:
        data[RECORDS_KEY] = self.drain()

    def on_test_stop(self, environment: Environment, **_: Any) -> None:
        environment.runner.send_message(FINAL_MESSAGE, self.drain())

    def on_level(self, environment: Environment, msg: Any, **_: Any) -> None:
        self.level = msg.data  # arrives before the spawn that starts the test, so before any settings exist
        if settings := getattr(LLMUser, "settings", None):
            settings.level = self.level


def run_worker(master_host: str, master_port: int) -> None:
    """Connect to a master and generate load until it quits (or goes silent: Locust's heartbeat timeout)."""
    environment = Environment(user_classes=[LLMUser])
    worker = Worker(environment)
    environment.events.request.add_listener(worker.on_request)
    environment.events.test_start.add_listener(worker.on_test_start)
    environment.events.report_to_master.add_listener(worker.on_report)
    environment.events.test_stop.add_listener(worker.on_test_stop)
    runner = environment.create_worker_runner(master_host, master_port)
    runner.register_message(LEVEL_MESSAGE, worker.on_level)
    runner.greenlet.join()
