"""Logging setup: text/json lines, uvicorn through the same handler, addresses redacted when hashing is on."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator

import pytest

from exporter import logsetup
from exporter.redact import redact


@pytest.fixture(autouse=True)
def restore_root() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


def test_redact_keeps_domains_only():
    line = 'd,2024-05-01,bounce@shop.example,"Alice.O\'Hara+x@Gmail.com",smtp;550 5.1.1 <bob@yahoo.co.uk>: no'
    assert redact(line) == ('d,2024-05-01,[redacted]@shop.example,"[redacted]@Gmail.com",'
                            'smtp;550 5.1.1 <[redacted]@yahoo.co.uk>: no')
    assert redact("no address @ here, user@localhost") == "no address @ here, user@localhost"


def test_json_lines_with_redaction_for_every_logger():
    out = io.StringIO()
    logsetup.setup("info", "json", stream=out, redact_addresses=True)
    logging.getLogger("watchtower.parser").warning("%s:%d: bad line %.120r", "/l/acct.csv", 3,
                                                   "d,x,alice@gmail.com,broken")
    logging.getLogger("uvicorn.error").warning("from carol@outlook.com")
    try:
        raise ValueError("dave@example.org")
    except ValueError:
        logging.getLogger("x").exception("failed for eve@example.net")
    records = [json.loads(line) for line in out.getvalue().splitlines()]
    assert [r["logger"] for r in records] == ["watchtower.parser", "uvicorn.error", "x"]
    assert records[0]["msg"] == "/l/acct.csv:3: bad line 'd,x,[redacted]@gmail.com,broken'"
    assert records[1]["msg"] == "from [redacted]@outlook.com" and records[1]["level"] == "warning"
    assert "@example.org" in records[2]["exc"] and "dave@" not in records[2]["exc"]
    assert "@" not in out.getvalue().replace("[redacted]@", "")


def test_text_lines_without_redaction_by_default():
    out = io.StringIO()
    logsetup.setup("info", "text", stream=out)
    logging.getLogger("watchtower.x").info("rcpt alice@gmail.com")
    assert out.getvalue().rstrip().endswith("INFO watchtower.x: rcpt alice@gmail.com")


def test_uvicorn_lines_are_bounded_per_template():
    out = io.StringIO()
    logsetup.setup("info", "text", stream=out)
    for _ in range(500):
        logging.getLogger("uvicorn.error").warning("Invalid HTTP request received.")
        logging.getLogger("watchtower.daemon").warning("ours are never dropped")
    lines = out.getvalue().splitlines()
    assert sum("Invalid HTTP request" in ln for ln in lines) == logsetup.FLOOD_BURST
    assert sum("ours are never dropped" in ln for ln in lines) == 500
