"""Log setup for the serving process: servekit's own records and the JSON access log, on stderr."""

from __future__ import annotations

import logging
import sys

FORMAT = "%(asctime)s [%(levelname)s] [%(name)s] %(message)s"


def configure(level: int = logging.INFO) -> None:
    """Idempotent; the host (BentoML) leaves loggers outside its own namespace without a handler."""
    for name, fmt in (("serving", FORMAT), ("servekit.access", "%(message)s")):
        logger = logging.getLogger(name)
        if not logger.handlers:
            handler = logging.StreamHandler(sys.stderr)
            handler.setFormatter(logging.Formatter(fmt))
            logger.addHandler(handler)
        logger.setLevel(level)
        logger.propagate = False
