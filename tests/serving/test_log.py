from __future__ import annotations

import logging

from serving import log


def test_configure_installs_one_stderr_handler_per_logger_however_often_it_runs():
    log.configure()
    log.configure(logging.WARNING)
    for name in ("serving", "servekit.access"):
        logger = logging.getLogger(name)
        assert len(logger.handlers) == 1 and logger.level == logging.WARNING and not logger.propagate
    access_format = logging.getLogger("servekit.access").handlers[0].formatter._fmt
    assert access_format == "%(message)s"  # the access log's lines are JSON and nothing else
    log.configure()
