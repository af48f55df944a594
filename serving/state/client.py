"""The one Redis client a gateway (or a CLI command) opens on `state.url`."""

from __future__ import annotations

import redis.asyncio as redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError

from serving.settings import StateSettings


def redis_client(settings: StateSettings) -> redis.Redis:
    """A pooled asyncio client without redis-py's default retries: those back off for seconds, and a request must
    not wait out an outage (StateHealth does the retrying, across requests). One immediate retry on a broken
    connection stays: after Redis restarts, every pooled connection is dead and fails once on its next use, and
    without it each would cost a request its limit check and start another back-off (measured: a third of a
    burst refused by an `on_unavailable: closed` replica after Redis was back). A timeout is not retried."""
    if settings.url is None:
        raise ValueError("state.url is not set: the state is embedded")
    return redis.Redis.from_url(
        str(settings.url),
        socket_timeout=settings.timeout_s,
        socket_connect_timeout=settings.timeout_s,
        retry=Retry(NoBackoff(), 1, supported_errors=(RedisConnectionError,)),
        decode_responses=True,
    )
