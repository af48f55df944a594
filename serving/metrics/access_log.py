"""Structured access log: one JSON line per completion request. Never the key, never the text."""

from __future__ import annotations

import json
import logging

from serving.metrics.stats import RequestStats

logger = logging.getLogger("servekit.access")


def access_record(stats: RequestStats) -> dict[str, object]:
    ttft = stats.time_to_first_token_s
    return {
        "request_id": stats.request_id,
        "key_id": stats.key_id,
        "route": stats.route,
        "model": stats.model,
        "version": stats.version,
        "replica": stats.replica,
        "status": stats.status,
        "stream": stats.stream,
        "prompt_tokens": stats.prompt_tokens,
        "completion_tokens": stats.completion_tokens,
        "ttft_s": None if ttft is None else round(ttft, 4),
        "latency_s": round(stats.duration_s, 4),
    }


def write_access_log(stats: RequestStats) -> None:
    logger.info(json.dumps(access_record(stats)))
