"""What gateway replicas must agree on: embedded (this process + a SQLite file) or shared (a Redis server)."""

from serving.state.sqlite import connect

__all__ = ["connect"]
