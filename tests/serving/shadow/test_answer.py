"""Answers rebuilt from the bytes vLLM sends: streams of chat and text chunks, and whole bodies."""

from __future__ import annotations

import json

from serving.shadow.answer import AnswerAccumulator


def sse(*documents: dict) -> list[bytes]:
    return [f"data: {json.dumps(d)}\n\n".encode() for d in documents] + [b"data: [DONE]\n\n"]


def test_a_chat_stream_is_joined_with_its_token_ids_even_when_chunks_split_lines():
    chunks = sse(
        {"choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}}]},
        {"choices": [{"index": 0, "delta": {"content": "Hel"}, "token_ids": [5]}]},
        {"choices": [{"index": 0, "delta": {"content": "lo"}, "token_ids": [6, 7]}]},
        {"choices": [], "usage": {"completion_tokens": 3}},
    )
    raw = b"".join(chunks)
    accumulator = AnswerAccumulator(stream=True, temperature=0.0)
    for start in range(0, len(raw), 7):  # relayed chunk boundaries need not match SSE events
        accumulator.feed(raw[start : start + 7])
    answer = accumulator.answer(200).parse()
    assert (answer.text, answer.token_ids, answer.temperature) == ("Hello", [5, 6, 7], 0.0)
    assert answer.ok and answer.ttft_s is not None and answer.latency_s >= answer.ttft_s


def test_a_text_completion_stream_without_ids_and_a_second_choice():
    accumulator = AnswerAccumulator(stream=True, temperature=None)
    for chunk in sse({"choices": [{"index": 0, "text": "a"}]}, {"choices": [{"index": 1, "text": "zz"}]},
                     {"choices": [{"index": 0, "text": "b"}]}):  # fmt: skip
        accumulator.feed(chunk)
    assert accumulator.answer(200, ttft_s=0.5).parse().text == "ab"
    assert (
        accumulator.answer(200, ttft_s=0.5).parse().token_ids is None
        and accumulator.answer(200, ttft_s=0.5).parse().ttft_s == 0.5
    )


def test_a_whole_body_and_a_broken_one():
    body = {"choices": [{"index": 0, "message": {"role": "assistant", "content": "hi"}, "token_ids": [1, 2]}]}
    accumulator = AnswerAccumulator(stream=False, temperature=0.0)
    accumulator.feed(json.dumps(body).encode())
    assert (accumulator.answer(200).parse().text, accumulator.answer(200).parse().token_ids) == ("hi", [1, 2])
    broken = AnswerAccumulator(stream=False, temperature=0.0)
    broken.feed(b"<html>bad gateway")
    answer = broken.answer(502, error="engine down").parse()
    assert (answer.ok, answer.text, answer.error) == (False, "", "engine down")


def test_engine_chunk_payloads_fed_as_events():
    accumulator = AnswerAccumulator(stream=True, temperature=0.0)
    for document in ({"choices": [{"index": 0, "delta": {"content": "Ar"}, "token_ids": [9]}]},
                     {"choices": [{"index": 0, "delta": {"content": "r"}, "token_ids": [10]}]}):  # fmt: skip
        accumulator.feed_event(json.dumps(document).encode())
    assert (accumulator.answer(200).parse().text, accumulator.answer(200).parse().token_ids) == ("Arr", [9, 10])


def test_responses_api_text_streamed_and_whole():
    streamed = AnswerAccumulator(stream=True, temperature=0.0)
    for kind, delta in (("response.created", None), ("response.output_text.delta", "Ahoy"),
                        ("response.output_text.delta", "!")):  # fmt: skip
        streamed.feed(f"event: {kind}\ndata: {json.dumps({'type': kind, 'delta': delta})}\n\n".encode())
    assert streamed.answer(200).parse().text == "Ahoy!"
    whole = AnswerAccumulator(stream=False, temperature=0.0)
    message = {"type": "message", "content": [{"type": "output_text", "text": "Ahoy!"}]}
    whole.feed(json.dumps({"output": [{"type": "reasoning"}, message]}).encode())
    assert whole.answer(200).parse().text == "Ahoy!"


def test_a_stream_cut_short_keeps_the_frames_that_arrived_whole():
    accumulator = AnswerAccumulator(stream=True, temperature=0.0)
    for chunk in sse({"choices": [{"index": 0, "delta": {"content": "Ahoy"}}]})[:1]:
        accumulator.feed(chunk)
    accumulator.feed(b'data: {"choices": [{"index": 0, "del')
    relayed = accumulator.answer(200)
    assert relayed.ok and relayed.parse().text == "Ahoy"  # `ok` needs no parsing: the status says it
