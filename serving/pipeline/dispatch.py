"""A request's whole life, top to bottom, in `Pipeline.serve`:

authorize → input limits → choose the version (pin, route, breaker fallback) → prompt policy → rate admission
→ in-flight admission → injected fault → engine call → relay (stream) or answer → give back, settle, record.

Everything a request takes (its rate-limit charge, its in-flight slot, the engine's stream) is registered in one
`Held` as it is taken and given back in reverse order when the answer is complete, on every path: an error, a
client that leaves, or a stream that was never started. The API layer only turns HTTP into a `Call`
and an `Answer` into a response."""

from __future__ import annotations

import functools
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from serving.backends.base import Endpoint
from serving.errors import ServekitError
from serving.faults import Faults
from serving.gateway import Gateway
from serving.metrics.access_log import write_access_log
from serving.metrics.stats import RequestStats
from serving.pipeline.choice import CLIENT_CLOSED_REQUEST, VersionChoice
from serving.pipeline.input_limits import check_input_limits
from serving.pipeline.principal import Principal
from serving.pipeline.prompt_policy import apply_prompt_policy
from serving.pipeline.ratelimit import Admission, RateLimiter, rate_limits
from serving.pipeline.relay import CompletionEvents, ResponseEvents, count_usage, relay
from serving.protocol import ModelRequest
from serving.router.breaker import Breakers
from serving.settings import Settings
from serving.versions import ServedVersion

VERSION_HEADER = "x-servekit-version"
FALLBACK_HEADER = "x-servekit-fallback"
TRUNCATED_HEADER = "x-servekit-truncated-messages"
DEFAULT_OUTPUT_ESTIMATE = 256
"""Tokens a request without max_tokens is charged up front (settled against its real usage afterwards)."""


@dataclass
class Call:
    """One authenticated, validated request, as the API layer hands it over."""

    endpoint: Endpoint
    body: ModelRequest
    principal: Principal
    request_id: str
    sticky_key: str | None = None
    pinned: str | None = None
    """A version named by the pin header (wins over the route's choice)."""


@dataclass
class Answer:
    """What to send back: an error, a JSON body, or a stream (whose `close` gives back what the request held,
    also when the stream is never started)."""

    headers: dict[str, str]
    error: ServekitError | None = None
    body: dict[str, Any] | None = None
    stream: AsyncIterator[bytes] | None = None
    close: Callable[[], Awaitable[None]] | None = None


class Held:
    """What a request took (a slot, a charge, a stream), each with the call that gives it back: `close` runs them
    newest first, all of them even when one fails, and only once however often it is called."""

    __slots__ = ("_give_back",)

    def __init__(self) -> None:
        self._give_back: list[Callable[[], Awaitable[None] | None]] = []

    def add(self, give_back: Callable[[], Awaitable[None] | None]) -> None:
        self._give_back.append(give_back)

    def hand_over(self) -> Held:
        """A new owner for everything held (a stream that outlives `serve`); this one is left empty."""
        owner = Held()
        owner._give_back, self._give_back = self._give_back, []
        return owner

    async def close(self) -> None:
        failure: BaseException | None = None
        while self._give_back:
            try:
                if (pending := self._give_back.pop()()) is not None:
                    await pending
            except BaseException as error:
                failure = failure or error
        if failure is not None:
            raise failure


@dataclass
class Ticket:
    """A request under way: what it was served by and charged, and how it ended (499 until it ends)."""

    served: ServedVersion
    stats: RequestStats
    admission: Admission | None
    status: int = CLIENT_CLOSED_REQUEST
    error: ServekitError | None = field(default=None)

    def ended(self, status: int) -> None:
        self.status = status


class Pipeline:
    def __init__(self, settings: Settings, gateway: Gateway) -> None:
        self.gateway = gateway
        self.limits = settings.limits
        self.limiter = RateLimiter(rate_limits(settings))
        self.breakers = Breakers(settings.breaker.consecutive_failures, settings.breaker.open_s)
        self.choice = VersionChoice(gateway.router, gateway.versions, self.breakers, dict(settings.fallbacks))
        self.faults = Faults()
        self.access_log = settings.access_log.enabled

    async def serve(self, call: Call) -> Answer:
        body = call.body
        call.principal.check_model(body.model)
        check_input_limits(body, self.limits)
        served, fallback = self.choice.choose(body.model, call.sticky_key, call.pinned)
        dropped = await apply_prompt_policy(body, served, self.gateway.versions, self.limits)
        admission = self.limiter.admit(
            call.principal.key_id,
            lambda: body.prompt_tokens_estimate() + (body.output_budget or DEFAULT_OUTPUT_ESTIMATE),
        )
        headers = _headers(served, admission, fallback, dropped)
        stats = RequestStats(
            route=body.model, request_id=call.request_id, key_id=call.principal.key_id, stream=body.stream,
            model=served.model.name, version=served.version,
        )  # fmt: skip
        ticket = Ticket(served, stats, admission)
        held = Held()
        held.add(functools.partial(self._finish, ticket))
        engines = self.gateway.engines
        try:
            engine = engines.admit(served)
            held.add(functools.partial(engines.release, served, engine))
            await self.faults.apply(served.name)
            payload = body.engine_payload(served.engine_model)
            backend = engines.backend(served, engine)
            if not body.stream:
                result = await backend.complete(call.endpoint, payload)
                count_usage(stats, result.get("usage"))
                ticket.ended(200)
                return Answer(headers, body=result)
            stream = await backend.open_stream(call.endpoint, payload)
            held.add(stream.aclose)
            events = (
                ResponseEvents(stats)
                if call.endpoint == "responses"
                else CompletionEvents(stats, body.wants_usage_in_stream)
            )
            close = held.hand_over().close  # the stream's end gives everything back now
            return Answer(headers, stream=relay(stream, events, ticket.ended, close), close=close)
        except ServekitError as error:
            ticket.ended(error.status_code)
            ticket.error = error
            return Answer(headers, error=error)
        finally:
            await held.close()

    def _finish(self, ticket: Ticket) -> None:
        """What every finished request updates: its rate-limit charge (settled against real usage; an error's
        estimate comes back), its version's circuit breaker, the metrics and the access log."""
        stats = ticket.stats
        self.limiter.settle(ticket.admission, stats.prompt_tokens + stats.completion_tokens)
        self.choice.settle(ticket.served, ticket.status, ticket.error)
        stats.finish(ticket.status)
        self.record(stats)

    def record(self, stats: RequestStats) -> None:
        self.gateway.metrics.record(stats)
        if self.access_log:
            write_access_log(stats)


def _headers(served: ServedVersion, admission: Admission | None, fallback: bool, dropped: int) -> dict[str, str]:
    headers = {VERSION_HEADER: served.version, **(admission.headers if admission else {})}
    if fallback:
        headers[FALLBACK_HEADER] = "1"
    if dropped:
        headers[TRUNCATED_HEADER] = str(dropped)
    return headers
