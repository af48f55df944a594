"""The Locust user: one OpenAI request per task (streaming chat, chat or completions), timed per token.

Each finished request becomes a `RequestRecord` fired through Locust's `request` event (in its `context`), so
plain Locust's stats and web UI see it as one request named by path and serving version, and the collector
(`loadtest.runner`) builds the token-level metrics from the same events."""

from __future__ import annotations

import itertools
import logging
import random
import time
from dataclasses import dataclass, field
from typing import Any, ClassVar

import httpx
from locust import User, task
from locust.exception import StopUser

from loadtest.metrics import UNKNOWN_VERSION, RequestRecord
from loadtest.prompts import MaxTokens, load_prompts
from loadtest.shapes import PoissonShape
from loadtest.stream_client import StreamResult, auth_headers, iter_sse_lines

VERSION_HEADER = "x-servekit-version"
# httpx logs every request at INFO, the level plain Locust logs at: thousands of lines a second would make the
# load generator spend its CPU on logging instead of load.
logging.getLogger("httpx").setLevel(logging.WARNING)
ENDPOINTS = {"chat-stream": "/v1/chat/completions", "chat": "/v1/chat/completions", "completions": "/v1/completions"}


@dataclass
class RequestBudget:
    """At most `limit` requests per run (None: unbounded); gevent is cooperative, so no lock is needed."""

    limit: int | None = None
    started: int = 0

    def take(self) -> bool:
        if self.limit is not None and self.started >= self.limit:
            return False
        self.started += 1
        return True

    @property
    def exhausted(self) -> bool:
        return self.limit is not None and self.started >= self.limit


@dataclass
class UserSettings:
    """What every user sends; set once per run on `LLMUser.settings`."""

    model: str
    endpoint: str = "chat-stream"
    max_tokens: MaxTokens = field(default_factory=lambda: MaxTokens(64, 64))
    version: str | None = None  # sent as x-servekit-version to pin the serving version
    ignore_eos: bool = True  # vLLM's knob: every request generates exactly max_tokens
    prompts: list[str] = field(default_factory=load_prompts)
    budget: RequestBudget = field(default_factory=RequestBudget)
    level: int | None = None  # the whole run's user count, as a distributed run's master tells its workers


_user_ids = itertools.count(1)


class LLMUser(User):
    """Sends one request per task; `wait_time` is 0 (closed loop) except under a Poisson shape (open loop)."""

    settings: ClassVar[UserSettings]

    def __init__(self, environment: Any) -> None:
        super().__init__(environment)
        self.user_id = f"loadtest-user-{next(_user_ids)}"
        self.rng = random.Random(self.user_id)
        self.next_arrival = time.monotonic()
        headers = auth_headers() | ({VERSION_HEADER: self.settings.version} if self.settings.version else {})
        self.client = httpx.Client(base_url=self.host, headers=headers, timeout=httpx.Timeout(300.0, connect=5.0))

    def on_stop(self) -> None:
        self.client.close()

    def wait_time(self) -> float:
        """Poisson pacing: arrivals at exponential gaps from the previous *arrival*, not from the response."""
        shape = self.environment.shape_class
        if not isinstance(shape, PoissonShape):
            return 0.0
        self.next_arrival += self.rng.expovariate(shape.rate / shape.users)
        return max(0.0, self.next_arrival - time.monotonic())

    def body(self, max_tokens: int) -> dict[str, Any]:
        prompt = self.rng.choice(self.settings.prompts)
        body: dict[str, Any] = {"model": self.settings.model, "max_tokens": max_tokens, "user": self.user_id}
        if self.settings.ignore_eos:
            body["ignore_eos"] = True
        if self.settings.endpoint == "completions":
            body["prompt"] = prompt
        else:
            body["messages"] = [{"role": "user", "content": prompt}]
        if self.settings.endpoint != "chat":
            body.update(stream=True, stream_options={"include_usage": True})
        return body

    @task
    def generate(self) -> None:
        if not self.settings.budget.take():
            raise StopUser
        endpoint, path = self.settings.endpoint, ENDPOINTS[self.settings.endpoint]
        max_tokens = self.settings.max_tokens.sample(self.rng)
        started_at, users = time.time(), self.concurrency()
        result, status = self.send(path, self.body(max_tokens))
        tokens = result.output_tokens or len(result.token_times)
        times = result.token_times
        record = RequestRecord(
            started_at=started_at, endpoint=endpoint, version=result.version or UNKNOWN_VERSION, users=users,
            ok=result.ok, status=status, latency_s=result.latency_s or 0.0, ttft_s=result.ttft_s,
            itl_s=(times[-1] - times[0]) / (tokens - 1) if result.ok and len(times) > 1 and tokens > 1 else None,
            output_tokens=tokens if result.ok else 0, max_tokens=max_tokens, error=result.error or "",
        )  # fmt: skip
        self.environment.events.request.fire(
            request_type=endpoint, name=f"{path} [{record.version}]", response_time=1000 * record.latency_s,
            response_length=record.output_tokens, response=None, context={"record": record},
            exception=None if record.ok else RuntimeError(record.error),
        )  # fmt: skip

    def concurrency(self) -> int:
        """The run's user count now: a worker of a distributed run runs only its share of the users."""
        if self.settings.level is not None:
            return self.settings.level
        return self.environment.runner.user_count if self.environment.runner else 1

    def send(self, path: str, body: dict[str, Any]) -> tuple[StreamResult, int]:
        """POST and read the answer; every failure (HTTP status, transport, malformed body) lands in the result."""
        result, status = StreamResult(ok=False, started=time.perf_counter()), 0
        try:
            with self.client.stream("POST", path, json=body) as response:
                status, result.version = response.status_code, response.headers.get(VERSION_HEADER)
                if status != 200:
                    result.error = f"HTTP {status}: {response.read()[:200].decode(errors='replace')}"
                elif body.get("stream"):
                    result.ok = all(result.feed_line(line, time.perf_counter()) for line in iter_sse_lines(response))
                else:
                    response.read()
                    result.output_tokens = response.json()["usage"]["completion_tokens"]
                    result.ok = True
        except (httpx.HTTPError, ValueError, KeyError, TypeError) as exc:
            result.error = f"{type(exc).__name__}: {exc}"
        finally:
            result.finished = time.perf_counter()
        return result, status
