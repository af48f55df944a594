"""The real redis-server fixture for the shared-state tests."""

from tests.redis_server import redis_server  # noqa: F401
