"""`servekit loadtest`: Locust load tests, SLO gates and run comparisons (the `loadtest` package, HTTP only)."""

from loadtest.cli import app

__all__ = ["app"]
