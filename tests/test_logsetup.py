"""Logging setup: text/json lines, uvicorn through the same handler, addresses redacted when hashing is on."""

from __future__ import annotations

import io
import json
import logging

import pytest

from exporter import logsetup
from exporter.redact import redact


def test_redact_keeps_domains_only():
    line = 'd,2024-05-01,bounce@shop.example,"Alice.O\'Hara+x@Gmail.com",smtp;550 5.1.1 <bob@yahoo.co.uk>: no'
    assert redact(line) == ('d,2024-05-01,[redacted]@shop.example,"[redacted]@Gmail.com",'
                            'smtp;550 5.1.1 <[redacted]@yahoo.co.uk>: no')
    # a dotless domain is still an address (audit 2026-12: `carol@localhost` was logged in full)
    assert redact("no address @ here, user@localhost") == "no address @ here, [redacted]@localhost"


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


def test_a_text_line_is_one_line_whatever_the_message_holds():
    """A file name or a client's input can hold a newline: in text format it must not forge a second log line."""
    out = io.StringIO()
    logsetup.setup("info", "text", stream=out)
    logging.getLogger("watchtower.tailer").warning("following %s", "/l/acct-1.csv\n2026-12-03 ERROR forged\r\x1b[31m"
                                                   "\u2028\x85\x9b")
    try:
        raise ValueError("boom")
    except ValueError:
        logging.getLogger("x").exception("failed")
    lines = out.getvalue().splitlines()
    assert lines[0].endswith("WARNING watchtower.tailer: following /l/acct-1.csv\\n2026-12-03 ERROR forged\\r\\x1b[31m"
                             "\\u2028\\x85\\x9b")
    assert lines[1].endswith("ERROR x: failed") and lines[2] == "Traceback (most recent call last):"  # kept as is


@pytest.mark.parametrize("fmt", ["text", "json"])
def test_bidi_controls_in_a_log_line_are_shown_not_obeyed(fmt: str):
    """A U+202E in a file name or a reply text reversed the rest of the log line on screen (Trojan Source: a
    `tail -f` or a log viewer showed "exe.png"). Shown as escapes in both formats, as the text API and the pages do;
    the JSON form stays valid JSON with the same message once parsed."""
    out = io.StringIO()
    logsetup.setup("info", fmt, stream=out)
    hostile = "reply \u202egnp.exe\u2066 from \u061c\u200e\u200f\u202a\u2069 x\x9b31m\x7f"
    logging.getLogger("watchtower.parser").warning("%s", hostile)
    line = out.getvalue()
    assert not any(c in line for c in "\u061c\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")
    shown = "reply \\u202egnp.exe\\u2066 from \\u061c\\u200e\\u200f\\u202a\\u2069 x"
    assert "\x9b" not in line and "\x7f" not in line  # C1's CSI and DEL: raw in JSON lines until now
    if fmt == "text":
        assert line.rstrip("\n").endswith("WARNING watchtower.parser: " + shown + "\\x9b31m\\x7f")
    else:
        assert json.loads(line)["msg"] == hostile  # JSON's own escapes: the reader gets the text back exactly
        assert "\\u202e" in line


def test_uvicorn_lines_are_bounded_per_template():
    out = io.StringIO()
    logsetup.setup("info", "text", stream=out)
    for _ in range(500):
        logging.getLogger("uvicorn.error").warning("Invalid HTTP request received.")
        logging.getLogger("watchtower.daemon").warning("ours are never dropped")
    lines = out.getvalue().splitlines()
    assert sum("Invalid HTTP request" in ln for ln in lines) == logsetup.FLOOD_BURST
    assert sum("ours are never dropped" in ln for ln in lines) == 500


@pytest.mark.parametrize(("level", "logged"), [("info", False), ("warning", False), ("debug", True)])
def test_each_http_request_is_logged_at_debug_only(level: str, logged: bool):
    """httpx logs every request at INFO: with pmta.url set that was ~11 lines per poll per host at the default
    level (one per VMTA queue read), and the hub's fan-out one per host per request. Debug keeps them."""
    import httpx

    out = io.StringIO()
    logsetup.setup(level, "text", stream=out)
    with httpx.Client(transport=httpx.MockTransport(lambda request: httpx.Response(200, text="ok"))) as client:
        assert client.get("http://127.0.0.1:8080/status?format=xml").status_code == 200
    assert ("HTTP Request: GET http://127.0.0.1:8080/status?format=xml" in out.getvalue()) is logged
    logging.getLogger("httpx").warning("a warning still shows")
    assert "WARNING httpx: a warning still shows" in out.getvalue()


RELAUNCH = "resource_tracker: process died unexpectedly, relaunching.  Some resources might leak."


@pytest.mark.parametrize("fmt", ["json", "text"])
def test_a_python_warning_is_one_log_line_in_the_configured_format(fmt: str) -> None:
    """A warning (the multiprocessing resource tracker relaunched after a kill) went to stderr as Python prints it:
    two raw lines, `path:123: UserWarning: ...` and the source line, outside the log's format."""
    import subprocess
    import sys
    from pathlib import Path

    script = ("import warnings\nfrom exporter import logsetup\n"
              f"logsetup.setup('info', {fmt!r})\nwarnings.warn({RELAUNCH!r}, UserWarning)\n")
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=30,
                          cwd=Path(logsetup.__file__).parent.parent)
    (line,) = proc.stderr.splitlines()
    if fmt == "json":
        record = json.loads(line)
        assert (record["level"], record["logger"]) == ("warning", "py.warnings")
        assert record["msg"] == f"UserWarning: {RELAUNCH} (<string>:4)"
    else:
        assert line.endswith(f" WARNING py.warnings: UserWarning: {RELAUNCH} (<string>:4)")


def test_a_warning_in_process_goes_through_the_handler_and_its_filters() -> None:
    """The same handler as every other line: redaction applies, and the location is the warning's own."""
    import sys
    import warnings

    out = io.StringIO()
    with warnings.catch_warnings():
        warnings.simplefilter("always")
        logsetup.setup("info", "json", stream=out, redact_addresses=True)
        line = sys._getframe().f_lineno + 1
        warnings.warn("odd reply from alice@gmail.com\nsecond line", RuntimeWarning, stacklevel=1)
    (record,) = [json.loads(text) for text in out.getvalue().splitlines()]
    assert record["msg"] == f"RuntimeWarning: odd reply from [redacted]@gmail.com\nsecond line ({__file__}:{line})"
