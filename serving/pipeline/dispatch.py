"""A request's whole life, top to bottom, in `Pipeline.serve`:

authorize → input limits → choose the version (pin, route, breaker fallback) → the route's degradation steps
(shed, cheaper version, capped max_tokens) → prompt policy → rate admission → in-flight admission on one
replica (copies to a shadow candidate shed first) → a copy to the shadow candidate, not waited for → injected
fault → engine call (refused before answering: once more on another replica) → relay (stream) or answer → give
back, settle, record (and hand the primary's answer to the shadow comparison).

Everything a request takes (its rate-limit charge, its in-flight slot, the engine's stream) is registered in one
`Held` as it is taken and given back in reverse order when the answer is complete, on every path: an error, a
client that leaves, or a stream that was never started. The API layer only turns HTTP into a `Call` and an
`Answer` into a response."""

from __future__ import annotations

import asyncio
import functools
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from serving.backends.base import Backend, ChunkStream, Endpoint
from serving.engines import Slot
from serving.errors import EngineUnavailableError, OverloadedError, ServekitError
from serving.faults import Faults
from serving.gateway import Gateway
from serving.metrics.access_log import write_access_log
from serving.metrics.stats import RequestStats
from serving.pipeline.choice import CLIENT_CLOSED_REQUEST, VersionChoice
from serving.pipeline.degrade import Degrader
from serving.pipeline.input_limits import check_input_limits
from serving.pipeline.limiter import build_rate_limiter
from serving.pipeline.principal import Principal
from serving.pipeline.prompt_policy import apply_prompt_policy
from serving.pipeline.relay import CompletionEvents, ResponseEvents, count_usage, relay
from serving.pipeline.signals import RouteSignals
from serving.protocol import ModelRequest
from serving.router.breaker import Breakers
from serving.settings import Settings
from serving.shadow.answer import AnswerAccumulator, RelayedAnswer
from serving.shadow.copy import send_copy
from serving.shadow.session import Shadower
from serving.state.limits import Admission
from serving.state.redis_keys import KeyLookup
from serving.state.shared import SharedState
from serving.versions import ServedVersion

VERSION_HEADER = "x-servekit-version"
FALLBACK_HEADER = "x-servekit-fallback"
TRUNCATED_HEADER = "x-servekit-truncated-messages"
DEGRADED_HEADER = "x-servekit-degraded"
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
    shadowed: AnswerAccumulator | None = None
    """The primary's answer as relayed, kept only for a request mirrored to a shadow candidate."""

    def ended(self, status: int) -> None:
        self.status = status


class Pipeline:
    def __init__(
        self,
        settings: Settings,
        gateway: Gateway,
        shadows: Shadower,
        shared: SharedState | None = None,
        shared_keys: KeyLookup | None = None,
    ) -> None:
        """`shared`: the state on Redis that several gateways share (`state.url`); None: this process's own."""
        self.gateway = gateway
        self.shadows = shadows
        self.limits = settings.limits
        self.limiter = build_rate_limiter(settings, shared, shared_keys)
        self.breakers = Breakers(settings.breaker.consecutive_failures, settings.breaker.open_s)
        self.choice = VersionChoice(gateway.router, gateway.versions, self.breakers, dict(settings.fallbacks))
        self.faults = Faults()
        needed = {route: {step.signal for step in steps} for route, steps in settings.degrade.items()}
        self.degrader = Degrader(
            settings.degrade, RouteSignals(gateway, needed), gateway.metrics.registry, settings.degrade_interval_s
        )
        self.access_log = settings.access_log.enabled

    async def serve(self, call: Call) -> Answer:
        body = call.body
        call.principal.check_model(body.model)
        check_input_limits(body, self.limits)
        served, fallback = self.choice.choose(body.model, call.sticky_key, call.pinned)
        served, degraded = self.degrader.apply(body, call.principal, served, self.gateway.versions)
        dropped = await apply_prompt_policy(body, served, self.gateway.versions, self.limits)
        admission = await self.limiter.admit(
            call.principal.key_id,
            lambda: body.prompt_tokens_estimate() + (body.output_budget or DEFAULT_OUTPUT_ESTIMATE),
        )
        headers = _headers(served, admission, fallback, dropped, degraded)
        stats = RequestStats(
            route=body.model, request_id=call.request_id, key_id=call.principal.key_id, stream=body.stream,
            model=served.model.name, version=served.version,
        )  # fmt: skip
        ticket = Ticket(served, stats, admission)
        held = Held()
        held.add(functools.partial(self._finish, ticket))
        engines = self.gateway.engines
        try:
            payload = body.engine_payload(served.engine_model)
            slot = await self._admit(served, call.sticky_key, payload)
            held.add(functools.partial(engines.release, served, slot))
            stats.replica = slot.replica.id
            if self.shadows.should_mirror(body.model, call.sticky_key):
                ticket.shadowed = self._mirror(call, payload)
            await self.faults.apply(served.name)
            try:
                reply = await self._engine_call(call, engines.backend(served, slot), payload)
            except EngineUnavailableError:  # refused before answering: once more on another replica, if one is up
                if not engines.failed(served, slot):
                    raise
                slot = engines.admit(served, call.sticky_key, payload, exclude=(slot.replica.id,))
                held.add(functools.partial(engines.release, served, slot))
                stats.replica = slot.replica.id
                reply = await self._engine_call(call, engines.backend(served, slot), payload)
            if isinstance(reply, dict):
                count_usage(stats, reply.get("usage"))
                ticket.ended(200)
                if ticket.shadowed is not None:
                    ticket.shadowed.feed(json.dumps(reply).encode())
                return Answer(headers, body=reply)
            held.add(reply.aclose)
            events = (
                ResponseEvents(stats)
                if call.endpoint == "responses"
                else CompletionEvents(stats, body.wants_usage_in_stream)
            )
            close = held.hand_over().close  # the stream's end gives everything back now
            observe = ticket.shadowed.feed if ticket.shadowed is not None else None
            return Answer(headers, stream=relay(reply, events, ticket.ended, close, observe), close=close)
        except ServekitError as error:
            ticket.ended(error.status_code)
            ticket.error = error
            return Answer(headers, error=error)
        finally:
            await held.close()

    async def _admit(self, served: ServedVersion, sticky_key: str | None, payload: dict[str, Any]) -> Slot:
        """An in-flight slot on one of `served`'s engines; when the engine is full, copies to shadow candidates
        give theirs up first (cancelled copies release their slots at their next step)."""
        await self.gateway.engines.carry(served)  # an adapter: on its replicas first
        try:
            return self.gateway.engines.admit(served, sticky_key, payload)
        except OverloadedError:
            if not self.shadows.shed():
                raise
            await asyncio.sleep(0)
            return self.gateway.engines.admit(served, sticky_key, payload)

    @staticmethod
    async def _engine_call(call: Call, backend: Backend, payload: dict[str, Any]) -> dict[str, Any] | ChunkStream:
        if call.body.stream:
            return await backend.open_stream(call.endpoint, payload)
        return await backend.complete(call.endpoint, payload)

    def _mirror(self, call: Call, payload: dict[str, Any]) -> AnswerAccumulator | None:
        """Send a copy of the request to the route's shadow candidate without waiting for it (no rate limit,
        breaker or metrics of the client's); returns where the primary's answer is collected for the comparison,
        None when the copy was dropped."""
        body, engines = call.body, self.gateway.engines
        candidate = self.gateway.versions.find(self.shadows.runs[body.model].candidate)
        if candidate is None:
            return None

        async def send() -> RelayedAnswer:
            await engines.carry(candidate)  # an adapter candidate: on its replicas first, as a client's request
            slot = engines.admit(candidate, call.sticky_key, payload)
            try:
                backend = engines.backend(candidate, slot)
                return await send_copy(backend, call.endpoint, payload, candidate.engine_model, body.temperature)
            finally:
                engines.release(candidate, slot)

        prompt = body.model_dump_json(include={"messages", "prompt", "input"}) if self.shadows.keeps_samples else None
        primary = AnswerAccumulator(stream=body.stream, temperature=body.temperature)
        if not self.shadows.mirror(body.model, call.request_id, send, primary=primary, prompt=prompt):
            return None
        return primary

    def _finish(self, ticket: Ticket) -> None:
        """What every finished request updates: its rate-limit charge (settled against real usage; an error's
        estimate comes back), its version's circuit breaker, the metrics and the access log, and a shadow
        comparison waiting for its answer."""
        stats = ticket.stats
        self.limiter.settle(ticket.admission, stats.prompt_tokens + stats.completion_tokens)
        self.choice.settle(ticket.served, ticket.status, ticket.error)
        stats.finish(ticket.status)
        self.record(stats)
        if ticket.shadowed is not None:
            answer = ticket.shadowed.answer(ticket.status, ttft_s=stats.time_to_first_token_s)
            self.shadows.primary_done(stats.route, stats.request_id, answer)

    def record(self, stats: RequestStats) -> None:
        self.gateway.metrics.record(stats)
        if self.access_log:
            write_access_log(stats)


def _headers(
    served: ServedVersion, admission: Admission | None, fallback: bool, dropped: int, degraded: list[str]
) -> dict[str, str]:
    headers = {VERSION_HEADER: served.version, **(admission.headers if admission else {})}
    if degraded:
        headers[DEGRADED_HEADER] = ",".join(degraded)
    if fallback:
        headers[FALLBACK_HEADER] = "1"
    if dropped:
        headers[TRUNCATED_HEADER] = str(dropped)
    return headers
