"""`python -m loadtest`: the load-test CLI in a process of its own. Locust is imported first so gevent patches
the process before anything else opens sockets or threads."""

import locust  # noqa: F401  (import for its side effect: gevent's monkey-patching, done first)

from loadtest.cli import app

app(prog_name="python -m loadtest")
