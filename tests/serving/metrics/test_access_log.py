from __future__ import annotations

import json
import logging

from serving.metrics.access_log import access_record, write_access_log
from serving.metrics.stats import RequestStats


def stats() -> RequestStats:
    done = RequestStats(
        route="chat",
        request_id="r-1",
        key_id="team-a",
        stream=True,
        model="base",
        version="base:v1",
        replica="base/1",
        started=5.0,
    )
    done.first_token_at, done.finished, done.status = 5.123456, 6.5, 200
    done.prompt_tokens, done.completion_tokens = 12, 34
    return done


def test_one_json_line_per_request_with_timings_rounded():
    lines: list[str] = []
    handler = logging.Handler(logging.INFO)
    handler.emit = lambda record: lines.append(record.getMessage())  # type: ignore[method-assign]
    logger = logging.getLogger("servekit.access")
    logger.addHandler(handler)
    previous = logger.level
    logger.setLevel(logging.INFO)
    try:
        write_access_log(stats())
    finally:
        logger.removeHandler(handler)
        logger.setLevel(previous)
    (record,) = [json.loads(line) for line in lines]
    assert record == {
        "request_id": "r-1", "key_id": "team-a", "route": "chat", "model": "base", "version": "base:v1",
        "replica": "base/1", "status": 200, "stream": True, "prompt_tokens": 12, "completion_tokens": 34,
        "ttft_s": 0.1235, "latency_s": 1.5,
    }  # fmt: skip


def test_a_request_that_never_produced_a_token_has_no_ttft():
    failed = RequestStats(route="chat", started=1.0)
    failed.finish(503)
    assert access_record(failed)["ttft_s"] is None and access_record(failed)["status"] == 503
