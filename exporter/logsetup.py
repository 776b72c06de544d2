"""Logging for every command: one handler on the root logger, `text` or `json` lines on stderr.

uvicorn is started with `log_config=None`, so its loggers (`uvicorn`, `uvicorn.error`) have no
handlers of their own and propagate here: one format for the whole process, which is what a
journald or Loki pipeline needs. Python warnings come here too, as one `py.warnings` line each.
"""

from __future__ import annotations

import json
import logging
import sys
import time
import warnings
from typing import Any, TextIO

from exporter.redact import RedactFilter

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
PER_REQUEST_LOGGERS = ("httpx",)
"""Libraries that log every request they make at INFO (the PMTA poller, the hub's fan-out): at the default
level that is a line per queue read per poll, so their INFO lines show at `log_level: debug` only."""
FLOOD_BURST = 10
FLOOD_INTERVAL = 60.0


class FloodFilter(logging.Filter):
    """At most FLOOD_BURST records per message template per FLOOD_INTERVAL from uvicorn's loggers.

    Any client can make uvicorn log ("Invalid HTTP request received."): without a bound, garbage
    requests fill the disk. The first record after a quiet window says how many were dropped.
    """

    def __init__(self, burst: int = FLOOD_BURST, interval: float = FLOOD_INTERVAL) -> None:
        super().__init__()
        self.burst, self.interval = burst, interval
        self._windows: dict[str, list[float]] = {}  # template -> [window start, shown, dropped]

    def filter(self, record: logging.LogRecord) -> bool:
        if not record.name.startswith("uvicorn"):
            return True
        now = time.monotonic()
        key = str(record.msg)[:200]
        window = self._windows.get(key)
        if window is None or now - window[0] >= self.interval:
            dropped = int(window[2]) if window else 0
            self._windows[key] = [now, 1, 0]
            if len(self._windows) > 1000:
                self._windows = {key: self._windows[key]}
            if dropped:
                record.msg, record.args = f"{record.getMessage()} ({dropped} similar lines dropped)", None
            return True
        if window[1] < self.burst:
            window[1] += 1
            return True
        window[2] += 1
        return False


BIDI_CONTROLS = (0x061C, 0x200E, 0x200F, *range(0x202A, 0x202F), *range(0x2066, 0x206A))
"""Bidi marks, embeddings, overrides and isolates: each reorders what follows it on screen (Trojan Source), so
every place that shows a remote party's text (log lines, the text API, the pages) shows these as escapes."""

_UNICODE_ESCAPES = {c: f"\\u{c:04x}" for c in (0x2028, 0x2029, *BIDI_CONTROLS)}
"""The line separators and bidi controls, as escapes that read the same in a text line and in JSON."""

_JSON_ESCAPES = {c: f"\\u{c:04x}" for c in range(0x7F, 0xA0)} | _UNICODE_ESCAPES
"""What json.dumps(ensure_ascii=False) leaves raw in a string that a terminal obeys: DEL, C1 (0x9b opens an escape
sequence), the line separators, the bidi controls. JSON escapes, so a reader parses the same text back."""

_CONTROLS = ({c: f"\\x{c:02x}" for c in (*range(0x20), *range(0x7F, 0xA0)) if c != 0x09}
             | {0x0A: "\\n", 0x0D: "\\r"} | _UNICODE_ESCAPES)
"""C0 and C1 controls (tab kept), the Unicode line separators and the bidi controls: each ends, rewrites or
reorders a line somewhere."""


class TextFormatter(logging.Formatter):
    """TEXT_FORMAT with the message on one line: a file name or a client's input holding a newline or a terminal
    escape cannot forge or hide a line (tracebacks, appended by the formatter after the message, stay as they are)."""

    def __init__(self) -> None:
        super().__init__(TEXT_FORMAT)

    def formatMessage(self, record: logging.LogRecord) -> str:  # noqa: N802 - logging's name
        record.message = record.message.translate(_CONTROLS)
        return super().formatMessage(record)


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ts (RFC 3339 UTC), level, logger, msg, and exc when there is one."""

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        elif record.exc_text:
            out["exc"] = record.exc_text
        return json.dumps(out, ensure_ascii=False).translate(_JSON_ESCAPES)  # they only occur inside strings


def log_warning(message: Warning | str, category: type[Warning], filename: str, lineno: int,
                file: TextIO | None = None, line: str | None = None) -> None:
    """`warnings.showwarning` for the whole process: a warning (the multiprocessing resource tracker relaunched
    after a kill) is one `py.warnings` line in the log's format, through its filters, instead of the two raw lines
    Python writes to stderr (`path:123: UserWarning: ...` and the source line)."""
    logging.getLogger("py.warnings").warning("%s: %s (%s:%d)", category.__name__, message, filename, lineno)


def setup(level: str = "info", fmt: str = "text", stream: TextIO | None = None,
          redact_addresses: bool = False) -> logging.Handler:
    """Install the one handler (replacing earlier ones, so calling twice is harmless).

    `redact_addresses` (on when `correlator.hash_recipients` is) removes the local part of every
    e-mail address from every line, whichever module logged it.
    """
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    handler.addFilter(FloodFilter())
    if redact_addresses:
        handler.addFilter(RedactFilter())
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    warnings.showwarning = log_warning
    level_no = getattr(logging, level.upper())
    root.setLevel(level_no)
    for name in PER_REQUEST_LOGGERS:
        logging.getLogger(name).setLevel(level_no if level_no <= logging.DEBUG else max(level_no, logging.WARNING))
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access", "uvicorn.asgi"):
        lg = logging.getLogger(name)
        for old in list(lg.handlers):
            lg.removeHandler(old)
        lg.propagate = True
    return handler
