"""The Shadower as the request pipeline drives it: choosing requests, copies in the background, pairing."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

from serving.errors import ConflictError, InvalidRequestError, NotFoundError, OverloadedError
from serving.settings import ShadowSettings
from serving.shadow.answer import Answer, AnswerAccumulator, RelayedAnswer
from serving.shadow.session import Shadower


def ok(text: str = "the same", temperature: float | None = 0.0) -> Answer:
    return Answer(200, 0.5, 0.05, text, None, temperature)


def returning(answer: Answer, gate: asyncio.Event | None = None):
    async def send() -> Answer:
        if gate is not None:
            await gate.wait()
        return answer

    return send


@pytest.fixture
def registry() -> CollectorRegistry:
    return CollectorRegistry()


@pytest.fixture
def shadower(tmp_path: Path, registry: CollectorRegistry) -> Shadower:
    return Shadower(ShadowSettings(keep_samples=True, max_samples=2), tmp_path, registry)


def sample(registry: CollectorRegistry, name: str, **labels: str) -> float | None:
    return registry.get_sample_value(name, {"route": "chat", "version": "new", **labels})


async def settle(shadower: Shadower) -> None:
    """Until no copy is in flight and no pair waits for its comparison."""
    await asyncio.sleep(0)
    while any(run.busy for run in shadower.runs.values()):
        await asyncio.sleep(0.005)


async def test_bad_starts_are_refused_naming_the_param(shadower):
    with pytest.raises(InvalidRequestError) as refused:
        shadower.start("chat", "old", "new", 0)
    assert refused.value.param == "percent"
    with pytest.raises(InvalidRequestError):
        shadower.start("chat", "old", "old", 50)
    shadower.start("chat", "old", "new", 50)
    with pytest.raises(ConflictError):
        shadower.start("chat", "old", "other", 50)


async def test_the_choice_follows_the_sticky_key_and_the_percent(shadower):
    assert not shadower.should_mirror("chat", "user-1")  # no run
    shadower.start("chat", "old", "new", 25)
    chosen = [shadower.should_mirror("chat", f"user-{n}") for n in range(2000)]
    assert 0.2 < sum(chosen) / len(chosen) < 0.3
    assert chosen == [shadower.should_mirror("chat", f"user-{n}") for n in range(2000)]  # whole conversations
    unkeyed = [shadower.should_mirror("chat", None) for _ in range(2000)]
    assert 0.2 < sum(unkeyed) / len(unkeyed) < 0.3
    assert not shadower.should_mirror("other-route", "user-1")


async def test_pairs_are_compared_whichever_side_finishes_first(shadower, registry):
    shadower.start("chat", "old", "new", 100)
    assert shadower.mirror("chat", "r1", returning(ok()), prompt="hi")
    await settle(shadower)  # the candidate first
    shadower.primary_done("chat", "r1", ok())
    gate = asyncio.Event()
    shadower.mirror("chat", "r2", returning(ok("the sane"), gate), prompt="hey")
    shadower.primary_done("chat", "r2", ok())  # the primary first
    gate.set()
    await settle(shadower)
    comparison = shadower.status("chat")["comparison"]
    assert comparison["pairs"] == 2 and comparison["exact_match_rate"] == 0.5
    assert comparison["agreement"] == pytest.approx((1 + 7 / 8) / 2)
    assert sample(registry, "servekit_shadow_requests_total") == 2
    assert sample(registry, "servekit_shadow_agreement") == pytest.approx((1 + 7 / 8) / 2)
    shadower.primary_done("chat", "never-mirrored", ok())  # ignored
    shadower.mirror("chat", "r3", returning(ok(), asyncio.Event()))
    assert not shadower.mirror("chat", "r3", returning(ok()))  # the id is waiting for its pair already
    assert shadower.status("chat")["dropped"]["duplicate_id"] == 1
    assert shadower.status("chat")["comparison"]["pairs"] == 2
    assert (await shadower.stop("chat"))["run"]["dropped"]["expired"] == 1  # r3's copy, cancelled by the stop


async def test_the_copy_is_sent_once_the_primary_s_first_chunk_is_out(shadower):
    shadower.start("chat", "old", "new", 100)
    sent: list[str] = []

    def sending(request_id: str):
        async def send() -> Answer:
            sent.append(request_id)
            return ok()

        return send

    streamed, failed = AnswerAccumulator(True, 0.0), AnswerAccumulator(True, 0.0)
    assert shadower.mirror("chat", "r1", sending("r1"), primary=streamed)
    assert shadower.mirror("chat", "r2", sending("r2"), primary=failed)
    await asyncio.sleep(0.01)
    assert sent == [], "nothing is sent while the primary's first token is still to come"
    streamed.feed(b'data: {"choices":[{"index":0,"delta":{"content":"the same"}}]}\n\n')
    await asyncio.sleep(0.01)
    assert sent == ["r1"]
    shadower.primary_done("chat", "r2", Answer(503, 0.1, error="engine_unavailable"))  # no chunk ever came
    shadower.primary_done("chat", "r1", streamed.answer(200))
    await settle(shadower)
    assert sent == ["r1", "r2"] and shadower.status("chat")["comparison"]["pairs"] == 2


async def test_beyond_k_in_flight_copies_are_dropped_not_queued(shadower, registry):
    shadower.start("chat", "old", "new", 100, max_in_flight=2)
    gate = asyncio.Event()
    sent = [shadower.mirror("chat", f"r{n}", returning(ok(), gate)) for n in range(5)]
    assert sent == [True, True, False, False, False]
    status = shadower.status("chat")
    assert (status["in_flight"], status["dropped"]["in_flight"]) == (2, 3)
    assert sample(registry, "servekit_shadow_dropped_total", reason="in_flight") == 3
    gate.set()
    await settle(shadower)
    assert shadower.status("chat")["in_flight"] == 0 and shadower.mirror("chat", "r9", returning(ok()))


async def test_a_failing_or_hanging_candidate_never_raises_and_is_counted(tmp_path, registry):
    shadower = Shadower(ShadowSettings(pair_timeout_s=0.05), tmp_path, registry)
    shadower.start("chat", "old", "new", 100)

    async def broken() -> Answer:
        raise ConnectionError("candidate down")

    async def hanging() -> Answer:
        await asyncio.Event().wait()
        raise AssertionError

    shadower.mirror("chat", "r1", broken)
    shadower.mirror("chat", "r2", hanging)
    shadower.primary_done("chat", "r1", ok())
    shadower.primary_done("chat", "r2", ok())
    await settle(shadower)
    status = shadower.status("chat")
    assert status["candidate_errors"] == 2 and status["comparison"]["error_rate"] == 1.0
    assert sample(registry, "servekit_shadow_errors_total") == 2

    async def no_room() -> Answer:
        raise OverloadedError("engine full")

    shadower.mirror("chat", "r3", no_room)
    await settle(shadower)
    status = shadower.status("chat")
    assert status["dropped"]["shed"] == 1 and status["candidate_errors"] == 2  # load shed, not the candidate's fault


async def test_shed_cancels_copies_first(shadower, registry):
    shadower.start("chat", "old", "new", 100)
    gate = asyncio.Event()
    for n in range(3):
        shadower.mirror("chat", f"r{n}", returning(ok(), gate))
    assert shadower.shed() == 3
    await settle(shadower)
    status = shadower.status("chat")
    assert status["in_flight"] == 0 and status["dropped"]["shed"] == 3 and status["comparison"]["pairs"] == 0
    assert sample(registry, "servekit_shadow_in_flight") == 0


async def test_stop_writes_results_and_a_report_with_samples_only_there(shadower, tmp_path, caplog):
    shadower.start("chat", "old", "new", 100)
    for n in range(3):
        shadower.mirror("chat", f"r{n}", returning(ok("secret answer")), prompt=f"secret prompt {n}")
        await settle(shadower)
        shadower.primary_done("chat", f"r{n}", ok("secret answer"))
    results = await shadower.stop("chat")
    assert results["run"]["state"] == "finished" and results["run"]["comparison"]["agreement"] == 1.0
    assert [s["prompt"] for s in results["samples"]] == ["secret prompt 0", "secret prompt 1"]  # max_samples
    directory = Path(results["run"]["report"]).parent
    assert json.loads((directory / "results.json").read_text())["run"]["comparison"]["pairs"] == 3
    page = (directory / "report.html").read_text()
    assert "secret prompt 0" in page and "data:image/png;base64," in page
    assert "secret" not in caplog.text
    assert shadower.last_result("chat")["run"]["candidate"] == "new"
    assert Shadower(ShadowSettings(), tmp_path).last_result("chat")["run"]["candidate"] == "new"  # from disk
    assert not shadower.should_mirror("chat", "u") and shadower.status("chat")["state"] == "finished"
    with pytest.raises(NotFoundError):
        await shadower.stop("chat")


async def test_samples_are_not_kept_unless_asked(tmp_path):
    shadower = Shadower(ShadowSettings(), tmp_path)
    shadower.start("chat", "old", "new", 100)
    assert not shadower.keeps_samples
    shadower.mirror("chat", "r1", returning(ok()), prompt="private")
    await settle(shadower)
    shadower.primary_done("chat", "r1", ok())
    results = await shadower.stop("chat")
    assert results["samples"] == [] and "private" not in Path(results["run"]["report"]).read_text()


async def test_a_run_with_a_duration_ends_by_itself(tmp_path):
    shadower = Shadower(ShadowSettings(), tmp_path)
    shadower.start("chat", "old", "new", 100, duration_s=0.01)
    while "chat" in shadower.runs:
        await asyncio.sleep(0.01)
    assert shadower.last_result("chat")["run"]["state"] == "finished"
    assert not shadower.should_mirror("chat", "u")


def relayed(text: str) -> RelayedAnswer:
    """An answer as the pipeline hands it over: the relayed SSE bytes, unparsed."""
    accumulator = AnswerAccumulator(stream=True, temperature=0.0)
    accumulator.feed(b'data: {"choices":[{"index":0,"delta":{"content":"' + text.encode() + b'"}}]}\n\n')
    accumulator.feed(b"data: [DONE]\n\n")
    return accumulator.answer(200)


async def test_relayed_answers_are_parsed_off_the_request_path(shadower):
    shadower.start("chat", "old", "new", 100)
    shadower.mirror("chat", "r1", returning(relayed("Arr")), prompt="greet me")
    shadower.primary_done("chat", "r1", relayed("Arr"))
    await settle(shadower)
    results = await shadower.stop("chat")
    assert results["run"]["comparison"]["exact_match_rate"] == 1.0
    assert results["samples"] == [{"prompt": "greet me", "primary": "Arr", "candidate": "Arr", "similarity": 1.0}]
