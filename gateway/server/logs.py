"""Logging: one format for every line the process writes, and the request id in each.

``server.log_format: text`` writes the classic lines; ``json`` writes each line as one JSON
object (``time``, ``level``, ``logger``, ``pid``, ``message``, and ``request_id`` when the
line belongs to a request, plus an event's own fields). Both go through the standard
``logging`` machinery: ``configure_logging`` sets the formatter of the gateway's logger and
of gunicorn's error and access loggers, and a filter adds the request id the gateway chose
for the request being handled (kept in a context variable, which gevent keeps per greenlet
and threads per thread).

The request id: an incoming ``X-Request-ID`` of 1 to 128 characters from
``A-Z a-z 0-9 - _ . : / + =`` is kept (a front proxy's id follows the request), anything
else is replaced by a fresh one; it goes to the app and back to the client in
``X-Request-ID`` and is in every log line of that request.
"""

from __future__ import annotations

import json
import logging
import random
import re
import sys
import time
from contextvars import ContextVar
from typing import Any

_TEXT_FORMAT = "%(asctime)s [%(process)d] [%(levelname)s] %(name)s: %(message)s"
_DATE_FORMAT = "[%Y-%m-%d %H:%M:%S %z]"
_REQUEST_ID = re.compile(r"[A-Za-z0-9\-_.:/+=]{1,128}")

#: The id of the request this greenlet (or thread) is handling, if any.
request_id: ContextVar[str | None] = ContextVar("request_id", default=None)


def choose_request_id(incoming: str | None) -> str:
    """The client's (or front proxy's) id when it is a plain one, else a fresh one."""
    if incoming is not None and _REQUEST_ID.fullmatch(incoming):
        return incoming
    # Unique, not secret: nothing may be derived from it (random reseeds after a fork).
    return f"{random.getrandbits(96):024x}"


class RequestIdFilter(logging.Filter):
    """Adds ``request_id`` to every record made while a request is being handled."""

    def filter(self, record: logging.LogRecord) -> bool:
        if not hasattr(record, "request_id"):
            record.request_id = request_id.get()
        return True


class TextFormatter(logging.Formatter):
    """The classic line, with `` request_id=...`` and an event's fields after the message."""

    def __init__(self) -> None:
        super().__init__(_TEXT_FORMAT, _DATE_FORMAT)

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        fields: dict[str, Any] | None = getattr(record, "fields", None)
        if fields:
            line += " " + " ".join(f"{key}={_text_value(value)}" for key, value in fields.items())
        rid = getattr(record, "request_id", None)
        if rid:
            line += f" request_id={rid}"
        return line


def _text_value(value: object) -> str:
    text = str(value)
    if not text or any(c in text for c in ' "=\\') or not text.isprintable():
        return json.dumps(text, ensure_ascii=False)
    return text


class JsonFormatter(logging.Formatter):
    """One JSON object per line."""

    def format(self, record: logging.LogRecord) -> str:
        created = record.created
        document: dict[str, Any] = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(created))
            + f".{int(created % 1 * 1000):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "pid": record.process,
            "message": record.getMessage(),
        }
        rid = getattr(record, "request_id", None)
        if rid:
            document["request_id"] = rid
        fields: dict[str, Any] | None = getattr(record, "fields", None)
        if fields:
            for key, value in fields.items():
                document.setdefault(key, value)
        if record.exc_info:
            document["exception"] = self.formatException(record.exc_info)
        if record.stack_info:
            document["stack"] = self.formatStack(record.stack_info)
        return json.dumps(document, ensure_ascii=False, default=str)


def formatter(log_format: str) -> logging.Formatter:
    return JsonFormatter() if log_format == "json" else TextFormatter()


_FILTER = RequestIdFilter()


def style_handler(handler: logging.Handler, log_format: str, *, keep_text: bool = False) -> None:
    """Give ``handler`` the configured format and the request id. ``keep_text``: a handler
    whose own text format stays (gunicorn's classic lines) unless the format is JSON."""
    if log_format == "json" or not keep_text:
        handler.setFormatter(formatter(log_format))
    if _FILTER not in handler.filters:
        handler.addFilter(_FILTER)


def configure_logging(level: str = "info", log_format: str = "text") -> None:
    """Send the gateway's own log lines to stderr, next to gunicorn's, in ``log_format``."""
    logger = logging.getLogger("gateway")
    logger.setLevel(level.upper())
    handler = next((h for h in logger.handlers if getattr(h, "_gateway", False)), None)
    if handler is None:
        handler = logging.StreamHandler(sys.stderr)
        handler._gateway = True  # type: ignore[attr-defined]
        logger.addHandler(handler)
    style_handler(handler, log_format)
    logger.propagate = False
    # The audit trail is written whatever the level of the other lines.
    logging.getLogger("gateway.audit").setLevel(logging.INFO)
    # Python's warnings become log lines too, in the same format.
    logging.captureWarnings(True)
    warnings_log = logging.getLogger("py.warnings")
    if handler not in warnings_log.handlers:
        warnings_log.addHandler(handler)
    warnings_log.propagate = False
    # gunicorn's own lines (set up by gunicorn, restyled here when it runs).
    for name in ("gunicorn.error", "gunicorn.access"):
        for gunicorn_handler in logging.getLogger(name).handlers:
            style_handler(gunicorn_handler, log_format, keep_text=True)
