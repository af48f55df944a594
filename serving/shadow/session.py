"""Shadow runs and the `Shadower` the request pipeline calls: which requests to copy, sending copies in the
background (at most K in flight, never queued), pairing each copy with the primary's answer by request id.

The client never waits on a copy: `mirror` only schedules a task, `primary_done` only stores or compares, and
neither raises. Whole conversations are mirrored because the choice hashes the sticky key."""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections import OrderedDict, deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry

from serving.errors import ConflictError, InvalidRequestError, NotFoundError, OverloadedError
from serving.router.assign import unit_hash
from serving.settings import ShadowSettings
from serving.shadow.answer import Answer, AnswerAccumulator, AnyAnswer, parsed
from serving.shadow.compare import PairRecord, Tokenize, characters, compare, pair_records
from serving.shadow.metrics import DROP_REASONS, ShadowMetrics
from serving.shadow.results import latest_results, route_dir, write_results

logger = logging.getLogger(__name__)

COMPARE_BATCH = 8
"""Pairs compared per turn of the event loop (one tokenizer call for them all), short enough not to hold a
client's next chunk back for long."""
COALESCE_S = 0.05
"""How long settled pairs gather before a batch smaller than COMPARE_BATCH is compared."""

SendCopy = Callable[[], Awaitable[AnyAnswer]]
"""Sends the copy to the candidate and returns its answer; built by the pipeline, called here in a task."""


@dataclass
class _Pending:
    created: float
    prompt: str | None
    go: asyncio.Event = field(default_factory=asyncio.Event)
    """Set once the primary's first chunk is out (or its answer is in): the copy is sent then."""
    primary: AnyAnswer | None = None
    candidate: AnyAnswer | None = None


@dataclass
class ShadowRun:
    """One shadow of a route: P % of its sticky keys copied to `candidate` until stopped or `ends_at`."""

    route: str
    primary: str
    candidate: str
    percent: float
    max_in_flight: int
    duration_s: float | None
    started_at: float = field(default_factory=time.time)
    stopped_at: float | None = None
    mirrored: int = 0
    dropped: dict[str, int] = field(default_factory=lambda: dict.fromkeys(DROP_REASONS, 0))
    candidate_errors: int = 0
    records: deque[PairRecord] = field(default_factory=deque)
    samples: list[dict[str, Any]] = field(default_factory=list)
    report: str | None = None
    _pending: OrderedDict[str, _Pending] = field(default_factory=OrderedDict, repr=False)
    _tasks: dict[str, asyncio.Task[None]] = field(default_factory=dict, repr=False)
    _settled: deque[tuple[str | None, AnyAnswer, AnyAnswer]] = field(default_factory=deque, repr=False)
    """(prompt, primary's answer, candidate's answer) of pairs waiting to be compared."""
    _comparer: asyncio.Task[None] | None = field(default=None, repr=False)
    _compared: int = 0
    _similarity_sum: float = 0.0
    _exact: int = 0

    @property
    def ends_at(self) -> float | None:
        return None if self.duration_s is None else self.started_at + self.duration_s

    @property
    def id(self) -> str:
        """The start time to the millisecond: sorts as the runs started, unique for one route."""
        millis = int(self.started_at * 1000) % 1000
        return time.strftime("%Y%m%dT%H%M%S", time.gmtime(self.started_at)) + f".{millis:03d}Z"

    @property
    def in_flight(self) -> int:
        return len(self._tasks)

    @property
    def busy(self) -> bool:
        """Copies in flight or pairs still to be compared."""
        return bool(self._tasks or self._settled or self._comparer)

    def running(self, now: float) -> bool:
        return self.stopped_at is None and (self.ends_at is None or now < self.ends_at)

    def status(self) -> dict[str, Any]:
        """The run and its comparison so far: what `GET /admin/shadows` shows and results.json starts with."""
        return {
            "route": self.route, "primary": self.primary, "candidate": self.candidate, "percent": self.percent,
            "max_in_flight": self.max_in_flight, "duration_s": self.duration_s, "started_at": self.started_at,
            "ends_at": self.ends_at, "stopped_at": self.stopped_at,
            "state": "running" if self.running(time.time()) else "finished",
            "mirrored": self.mirrored, "dropped": dict(self.dropped), "in_flight": self.in_flight,
            "candidate_errors": self.candidate_errors, "comparison": compare(list(self.records)).as_dict(),
            "report": self.report,
        }  # fmt: skip


class Shadower:
    """The shadow runs of one server, one per route at most. `tokenize` gives the tokenizer agreement is measured
    with for a route's primary when the answers carry no token ids (default: characters)."""

    def __init__(
        self,
        settings: ShadowSettings,
        out_dir: Path,
        registry: CollectorRegistry | None = None,
        tokenize: Callable[[str], Tokenize] | None = None,
    ) -> None:
        self.settings = settings
        self.out_dir = out_dir
        self.metrics = ShadowMetrics(registry)
        self.tokenize = tokenize
        self.runs: dict[str, ShadowRun] = {}
        self._finished: dict[str, dict[str, Any]] = {}
        self._timers: dict[str, asyncio.Task[None]] = {}

    @property
    def keeps_samples(self) -> bool:
        """Whether `mirror` wants the prompt: the pipeline renders one only then."""
        return self.settings.keep_samples and self.settings.max_samples > 0

    def start(
        self,
        route: str,
        primary: str,
        candidate: str,
        percent: float,
        max_in_flight: int | None = None,
        duration_s: float | None = None,
    ) -> ShadowRun:
        """Start shadowing `route` (the caller has checked that route and candidate exist); must run in the loop."""
        if not 0 < percent <= 100:
            raise InvalidRequestError("percent must be in (0, 100].", param="percent")
        if candidate == primary:
            message = f"`{candidate}` is the primary of `{route}`; shadow another version."
            raise InvalidRequestError(message, param="candidate")
        self.check_free(route)
        run = ShadowRun(route, primary, candidate, percent, max_in_flight or self.settings.max_in_flight, duration_s)
        run.records = deque(maxlen=self.settings.max_pairs)
        self.runs[route] = run
        self.metrics.expect(route, candidate)
        if duration_s is not None:
            self._timers[route] = asyncio.get_running_loop().create_task(self._stop_after(run), name=f"shadow-{route}")
        logger.info("shadow %s: %.3g%% of keys copied to %s (primary %s)", route, percent, candidate, primary)
        return run

    def check_free(self, route: str) -> None:
        """ConflictError while `route` has a run in progress (one shadow per route)."""
        if (current := self.runs.get(route)) is not None and current.running(time.time()):
            raise ConflictError(f"Route `{route}` is already shadowed by `{current.candidate}`; stop it first.")

    def should_mirror(self, route: str, sticky_key: str | None) -> bool:
        """Cheap and called on every request of a route: a dict lookup when the route is not shadowed."""
        run = self.runs.get(route)
        if run is None or not run.running(time.time()):
            return False
        draw = random.random() if sticky_key is None else unit_hash(sticky_key, f"shadow\x00{route}")
        return draw * 100 < run.percent

    def mirror(
        self,
        route: str,
        request_id: str,
        send: SendCopy,
        *,
        primary: AnswerAccumulator | None = None,
        prompt: str | None = None,
    ) -> bool:
        """Send a copy in the background; False when it was dropped (no run, or K copies in flight already).
        With `primary` (where the pipeline collects the primary's answer) the copy is sent once the primary's first
        chunk is out, so sending it never delays the client's first token; each side's TTFT and latency are timed
        from its own start. `prompt` is kept for the side-by-side samples only when `keeps_samples`."""
        run = self.runs.get(route)
        if run is None or not run.running(time.time()):
            return False
        self._expire(run)
        if request_id in run._pending:  # a client-chosen request id used twice: the pairs could not be told apart
            self._drop(run, "duplicate_id")
            return False
        if run.in_flight >= run.max_in_flight:
            self._drop(run, "in_flight")
            return False
        run.mirrored += 1
        self.metrics.mirrored.labels(route, run.candidate).inc()
        pending = run._pending[request_id] = _Pending(time.monotonic(), prompt if self.keeps_samples else None)
        if primary is None:
            pending.go.set()
        else:
            primary.on_first = pending.go.set
        copy = self._copy(run, request_id, send, pending.go)
        task = asyncio.get_running_loop().create_task(copy, name=f"shadow-{request_id}")
        run._tasks[request_id] = task
        self.metrics.in_flight.labels(route, run.candidate).inc()
        return True

    def primary_done(self, route: str, request_id: str, answer: AnyAnswer) -> None:
        """The primary's answer to a mirrored request (ignored for one that was not mirrored or was dropped)."""
        run = self.runs.get(route)
        pending = run._pending.get(request_id) if run is not None else None
        if run is None or pending is None:
            return
        pending.primary = answer
        pending.go.set()  # a primary that failed before its first chunk: the copy is still compared
        self._settle(run, request_id, pending)

    def shed(self) -> int:
        """Cancel every copy in flight (the server is shedding load: copies go first); how many were cancelled."""
        cancelled = 0
        for run in self.runs.values():
            for request_id in list(run._tasks):
                self._untrack(run, request_id, cancel=True)
                run._pending.pop(request_id, None)
                self._drop(run, "shed")
                cancelled += 1
        return cancelled

    def status(self, route: str) -> dict[str, Any]:
        if route in self.runs:
            return self.runs[route].status()
        if (finished := self.last_result(route)) is not None:
            return finished["run"]
        raise NotFoundError(f"Route `{route}` has no shadow run.")

    def all_status(self) -> list[dict[str, Any]]:
        return [run.status() for run in self.runs.values()]

    async def stop(self, route: str) -> dict[str, Any]:
        """End the run, write results.json and report.html, and return the results."""
        run = self.runs.get(route)
        if run is None:
            raise NotFoundError(f"Route `{route}` has no shadow run in progress.")
        if (timer := self._timers.pop(route, None)) is not None and timer is not asyncio.current_task():
            timer.cancel()
        return await self._finish(run)

    async def close(self) -> None:
        """Stop every run (server shutdown), writing each one's results."""
        for route in list(self.runs):
            await self.stop(route)

    def candidates(self) -> set[str]:
        """The versions being shadowed now: kept servable while their runs last."""
        return {run.candidate for run in self.runs.values()}

    def last_result(self, route: str) -> dict[str, Any] | None:
        """The results of the route's last finished run: kept in memory, else read from its results.json."""
        return self._finished.get(route) or latest_results(self.out_dir, route)

    async def _finish(self, run: ShadowRun) -> dict[str, Any]:
        run.stopped_at = run.stopped_at or time.time()
        tasks = list(run._tasks.values())
        for request_id in list(run._tasks):
            self._untrack(run, request_id, cancel=True)
        await asyncio.gather(*tasks, return_exceptions=True)
        if run._comparer is not None:
            await run._comparer
        run.dropped["expired"] += len(run._pending)
        run._pending.clear()
        directory = route_dir(self.out_dir, run.route) / run.id
        run.report = str(directory / "report.html")
        results = {"run": run.status(), "pairs": [vars(r) for r in run.records], "samples": run.samples}
        await asyncio.to_thread(write_results, results, directory)
        self._finished[run.route] = results
        if self.runs.get(run.route) is run:
            del self.runs[run.route]
        logger.info("shadow %s of %s finished: %s", run.route, run.candidate, results["run"]["comparison"])
        return results

    async def _stop_after(self, run: ShadowRun) -> None:
        await asyncio.sleep(run.duration_s or 0)
        self._timers.pop(run.route, None)
        if run.report is None:
            await self._finish(run)

    async def _copy(self, run: ShadowRun, request_id: str, send: SendCopy, go: asyncio.Event) -> None:
        started = time.monotonic()
        answer: AnyAnswer
        try:
            await go.wait()
            started = time.monotonic()
            answer = await asyncio.wait_for(send(), self.settings.pair_timeout_s)
        except asyncio.CancelledError:
            raise
        except OverloadedError:  # the engine had no slot for a copy: load shed, not the candidate's failure
            run._pending.pop(request_id, None)
            self._drop(run, "shed")
            return
        except Exception as exc:  # a copy's failure is the candidate's, counted; never the client's
            answer = Answer(0, time.monotonic() - started, error=type(exc).__name__)
        finally:
            self._untrack(run, request_id)
        if not answer.ok:
            run.candidate_errors += 1
            self.metrics.errors.labels(run.route, run.candidate).inc()
        if (pending := run._pending.get(request_id)) is not None:
            pending.candidate = answer
            self._settle(run, request_id, pending)

    def _settle(self, run: ShadowRun, request_id: str, pending: _Pending) -> None:
        """Once both halves are in, the pair waits for the run's comparer (one task, started when none runs)."""
        if pending.primary is None or pending.candidate is None:
            return
        del run._pending[request_id]
        run._settled.append((pending.prompt, pending.primary, pending.candidate))
        if run._comparer is None:
            loop = asyncio.get_running_loop()
            run._comparer = loop.create_task(self._compare_settled(run), name=f"shadow-compare-{run.route}")

    async def _compare_settled(self, run: ShadowRun) -> None:
        """Compares the settled pairs in the event loop, COMPARE_BATCH at a time, yielding to the requests between
        batches. Not in a worker thread: its Python (parsing, the tokenizer's call) held the GIL that the loop then
        waited for at each of its own system calls, which cost the primary's requests more than the comparing
        itself (profiled; docs/performance.md)."""
        try:
            while run._settled:
                await asyncio.sleep(0 if len(run._settled) >= COMPARE_BATCH else COALESCE_S)
                batch = [run._settled.popleft() for _ in range(min(COMPARE_BATCH, len(run._settled)))]
                try:
                    self._record(run, batch)
                except Exception:
                    logger.exception("shadow %s: comparing %d pairs failed", run.route, len(batch))
        finally:
            run._comparer = None

    def _record(self, run: ShadowRun, batch: list[tuple[str | None, AnyAnswer, AnyAnswer]]) -> None:
        """Parse the relayed bodies, tokenize every text in one call, and add the pairs to the run."""
        tokenize = self.tokenize(run.primary) if self.tokenize is not None else characters
        pairs = [(parsed(primary), parsed(candidate)) for _, primary, candidate in batch]
        for (prompt, _, _), (primary, candidate), record in zip(
            batch, pairs, pair_records(pairs, tokenize), strict=True
        ):
            run.records.append(record)
            self.metrics.pairs.labels(run.route, run.candidate).inc()
            if record.similarity is not None:
                run._compared += 1
                run._similarity_sum += record.similarity
                run._exact += bool(record.exact)
            if prompt is not None and len(run.samples) < self.settings.max_samples:
                run.samples.append({
                    "prompt": prompt, "primary": primary.text, "candidate": candidate.text,
                    "similarity": record.similarity,
                })  # fmt: skip
        if run._compared:
            self.metrics.agreement.labels(run.route, run.candidate).set(run._similarity_sum / run._compared)
            self.metrics.exact_match.labels(run.route, run.candidate).set(run._exact / run._compared)

    def _expire(self, run: ShadowRun) -> None:
        """Give up pairs whose other half never came (oldest first: the dict keeps creation order)."""
        deadline = time.monotonic() - self.settings.pair_timeout_s
        while run._pending:
            request_id, pending = next(iter(run._pending.items()))
            if pending.created > deadline and len(run._pending) <= self.settings.max_pairs:
                return
            run._pending.popitem(last=False)
            self._untrack(run, request_id, cancel=True)
            self._drop(run, "expired")

    def _untrack(self, run: ShadowRun, request_id: str, *, cancel: bool = False) -> None:
        """Forget a copy's task once (a task cancelled before it ran never reaches its own `finally`)."""
        task = run._tasks.pop(request_id, None)
        if task is None:
            return
        self.metrics.in_flight.labels(run.route, run.candidate).dec()
        if cancel:
            task.cancel()

    def _drop(self, run: ShadowRun, reason: str) -> None:
        run.dropped[reason] += 1
        self.metrics.dropped.labels(run.route, run.candidate, reason).inc()
