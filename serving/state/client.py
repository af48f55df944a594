"""The one Redis client a gateway (or a CLI command) opens on `state.url`."""

from __future__ import annotations

import redis.asyncio as redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from serving.settings import StateSettings


def redis_client(settings: StateSettings) -> redis.Redis:
    """A pooled asyncio client without redis-py's default retries: those back off for seconds, and a request must
    never wait on an outage longer than `timeout_s` (StateHealth does the retrying, across requests)."""
    if settings.url is None:
        raise ValueError("state.url is not set: the state is embedded")
    return redis.Redis.from_url(
        str(settings.url),
        socket_timeout=settings.timeout_s,
        socket_connect_timeout=settings.timeout_s,
        retry=Retry(NoBackoff(), 0),
        decode_responses=True,
    )
