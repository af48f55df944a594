"""The real redis-server fixture for the gateway replicas sharing one."""

from tests.redis_server import redis_server  # noqa: F401
