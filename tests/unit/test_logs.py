"""Log lines: the text and JSON formats, and the request id. Every line of a real gateway in
JSON, and the id from the client to the app and back, are ``tests/e2e/test_logs.py``."""

from __future__ import annotations

import json
import logging

import pytest

from gateway.server.logs import (
    JsonFormatter,
    RequestIdFilter,
    TextFormatter,
    choose_request_id,
    request_id,
)


@pytest.mark.parametrize(
    "incoming", ["abc", "A-Z_a.z:0/9+=", "x" * 128, "f47ac10b-58cc-4372-a567-0e02b2c3d479"]
)
def test_a_plain_incoming_request_id_is_kept(incoming: str) -> None:
    assert choose_request_id(incoming) == incoming


@pytest.mark.parametrize(
    "incoming", [None, "", "x" * 129, "has space", "a\\nb", "tab\\t", "é", "a;b", "<script>"]
)
def test_anything_else_gets_a_fresh_one(incoming: str | None) -> None:
    fresh = choose_request_id(incoming)
    assert fresh != incoming and len(fresh) == 24 and int(fresh, 16) >= 0
    assert choose_request_id(incoming) != fresh


def record(message: str, **extra: object) -> logging.LogRecord:
    made = logging.LogRecord("gateway.audit", logging.WARNING, "x.py", 1, message, None, None)
    for key, value in extra.items():
        setattr(made, key, value)
    return made


def test_json_lines_carry_the_request_id_and_an_events_fields() -> None:
    token = request_id.set("rid-1")
    try:
        made = record("signin ok", fields={"event": "signin", "openid": "oA", "ok": True})
        RequestIdFilter().filter(made)
    finally:
        request_id.reset(token)
    line = JsonFormatter().format(made)
    assert "\n" not in line
    document = json.loads(line)
    assert document["level"] == "warning" and document["logger"] == "gateway.audit"
    assert document["message"] == "signin ok" and document["request_id"] == "rid-1"
    assert document["event"] == "signin" and document["ok"] is True
    assert document["time"].endswith("Z") and isinstance(document["pid"], int)


def test_json_keeps_an_exception_in_the_same_line() -> None:
    try:
        raise ValueError("boom\nsecond line")
    except ValueError:
        import sys

        made = record("failed", exc_info=sys.exc_info())
    line = JsonFormatter().format(made)
    assert "\n" not in line
    assert "ValueError: boom" in json.loads(line)["exception"]


def test_a_line_outside_a_request_has_no_request_id() -> None:
    request_id.set(None)  # as the worker leaves it after each request
    made = record("idle")
    RequestIdFilter().filter(made)
    assert "request_id" not in json.loads(JsonFormatter().format(made))
    assert "request_id" not in TextFormatter().format(made)


def test_text_lines_quote_values_that_need_it() -> None:
    made = record("signin", fields={"openid": "oA", "user_agent": 'Mozilla "x" y'}, request_id="r")
    line = TextFormatter().format(made)
    assert line.endswith('openid=oA user_agent="Mozilla \\"x\\" y" request_id=r')
