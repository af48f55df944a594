"""A multi-turn chat workload where the engines' prefix cache matters: what `servekit bench fleet` sends.

Each conversation opens with one of a few long shared system prompts and a document of its own (a user pasting
text to ask about); every later turn resends the whole conversation so far, the model's previous answers
included, plus a new question. Consecutive turns of a conversation therefore share all but their last few
hundred characters, and conversations on the same system prompt share that prompt: a replica that served the
previous turn can skip most of the prefill, another replica has to redo it.

Users are closed loop: each takes the next conversation from a shared queue and plays its turns one after
another (a turn starts when the previous answer has arrived), so `users` conversations are in flight at once."""

from __future__ import annotations

import asyncio
import json
import random
import time
from dataclasses import dataclass

import httpx

from loadtest.stream_client import StreamResult, aiter_sse_lines

VOCABULARY = (
    "harbor", "engine", "ledger", "window", "garden", "signal", "market", "bridge", "circuit", "meadow", "archive",
    "lantern", "compass", "orchard", "quarry", "tunnel", "village", "factory", "river", "summit", "canyon",
    "glacier", "desert", "forest", "island", "valley", "station", "library", "theater", "kitchen", "workshop",
    "museum", "stadium", "airport", "highway", "railway", "pipeline", "network", "battery", "turbine", "reactor",
    "satellite", "telescope", "microscope", "notebook", "calendar", "contract", "invoice", "warranty", "schedule",
)  # fmt: skip


@dataclass(frozen=True)
class Workload:
    """Sizes of one round: `conversations` chats of `turns` turns each, `users` of them in flight at once."""

    conversations: int
    turns: int
    users: int
    max_tokens: int
    system_prompts: int = 4
    system_words: int = 600
    document_words: int = 250
    question_words: int = 25


@dataclass
class Turn:
    """One answered turn: its timings (`StreamResult`), the conversation and turn it was."""

    conversation: int
    index: int
    result: StreamResult


def words(rng: random.Random, count: int) -> str:
    return " ".join(rng.choice(VOCABULARY) for _ in range(count))


def scripts(workload: Workload, salt: str) -> list[list[str]]:
    """Per conversation: its system prompt, then one user message per turn (the first carries the document).
    `salt` opens every system prompt, so two rounds with different salts share no prefix at all (a round must
    not find the previous round's conversations in the engines' caches)."""
    rng = random.Random(0)
    systems = [
        f"[{salt}] You are assistant #{i} of the support desk. Policies: " + words(rng, workload.system_words)
        for i in range(workload.system_prompts)
    ]
    chats = []
    for number in range(workload.conversations):
        document = f"Conversation {number}. Please read this document: " + words(rng, workload.document_words)
        questions = [f"Question {turn}: " + words(rng, workload.question_words) for turn in range(workload.turns)]
        questions[0] = f"{document}\n\n{questions[0]}"
        chats.append([systems[number % workload.system_prompts], *questions])
    return chats


async def stream_turn(
    client: httpx.AsyncClient, url: str, model: str, messages: list[dict[str, str]], max_tokens: int
) -> tuple[StreamResult, str]:
    """One streaming chat turn: its timings and the answer's text (the next turn resends it)."""
    body = {
        "model": model, "messages": messages, "max_tokens": max_tokens, "stream": True, "temperature": 0,
        "ignore_eos": True, "stream_options": {"include_usage": True},
    }  # fmt: skip
    result, answer = StreamResult(ok=False, started=time.perf_counter()), []
    try:
        async with client.stream("POST", f"{url}/v1/chat/completions", json=body) as response:
            if response.status_code != 200:
                result.error = f"HTTP {response.status_code}: {(await response.aread())[:200]!r}"
                return result, ""
            async for line in aiter_sse_lines(response):
                if not result.feed_line(line, time.perf_counter()):
                    return result, ""
                if line.startswith("data: {"):
                    for choice in json.loads(line[6:]).get("choices") or ():
                        answer.append((choice.get("delta") or {}).get("content") or "")
        result.ok = True
    except httpx.HTTPError as exc:
        result.error = repr(exc)
    finally:
        result.finished = time.perf_counter()
    return result, "".join(answer)


async def play(url: str, model: str, workload: Workload, salt: str) -> tuple[list[Turn], float]:
    """Every conversation of the workload against `url`; returns the answered turns and the wall time. A turn that
    failed ends its conversation (the next turn would need its answer)."""
    chats = scripts(workload, salt)
    queue: asyncio.Queue[int] = asyncio.Queue()
    for number in range(len(chats)):
        queue.put_nowait(number)
    turns: list[Turn] = []
    limits = httpx.Limits(max_connections=workload.users, max_keepalive_connections=workload.users)
    async with httpx.AsyncClient(timeout=httpx.Timeout(600.0, connect=5.0), limits=limits) as client:

        async def user() -> None:
            while not queue.empty():
                number = queue.get_nowait()
                system, *questions = chats[number]
                messages = [{"role": "system", "content": system}]
                for index, question in enumerate(questions):
                    messages.append({"role": "user", "content": question})
                    result, answer = await stream_turn(client, url, model, messages, workload.max_tokens)
                    turns.append(Turn(number, index, result))
                    if not result.ok:
                        break
                    messages.append({"role": "assistant", "content": answer})

        started = time.perf_counter()
        await asyncio.gather(*(user() for _ in range(workload.users)))
        return turns, time.perf_counter() - started
