"""Logging setup for the service's own lines (gunicorn configures its own loggers)."""

from __future__ import annotations

import logging

FORMAT = "%(asctime)s [%(process)d] [%(levelname)s] %(name)s: %(message)s"


def configure_logging(level: str) -> None:
    """Send the `service` loggers to stderr at `level` (a LOG_LEVELS name)."""
    logger = logging.getLogger("service")
    logger.setLevel(level.upper())
    if not logger.handlers:
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter(FORMAT))
        logger.addHandler(handler)
        logger.propagate = False
