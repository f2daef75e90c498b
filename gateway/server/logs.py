"""Logging set-up shared by ``serve``, ``demo`` and the plain WSGI entry."""

from __future__ import annotations

import logging
import sys

_FORMAT = "%(asctime)s [%(process)d] [%(levelname)s] %(name)s: %(message)s"


def configure_logging(level: str = "info") -> None:
    """Send the gateway's own log lines to stderr, next to gunicorn's."""
    logger = logging.getLogger("gateway")
    logger.setLevel(level.upper())
    if not any(getattr(handler, "_gateway", False) for handler in logger.handlers):
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter(_FORMAT, "[%Y-%m-%d %H:%M:%S %z]"))
        handler._gateway = True  # type: ignore[attr-defined]
        logger.addHandler(handler)
    logger.propagate = False
