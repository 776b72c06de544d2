"""Logging for every command: one handler on the root logger, `text` or `json` lines on stderr.

uvicorn is started with `log_config=None`, so its loggers (`uvicorn`, `uvicorn.error`) have no
handlers of their own and propagate here: one format for the whole process, which is what a
journald or Loki pipeline needs.
"""

from __future__ import annotations

import json
import logging
import sys
import time
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


_CONTROLS = ({c: f"\\x{c:02x}" for c in (*range(0x20), *range(0x7F, 0xA0)) if c != 0x09}
             | {0x0A: "\\n", 0x0D: "\\r", 0x2028: "\\u2028", 0x2029: "\\u2029"})
"""C0 and C1 controls (tab kept) and the Unicode line separators: each ends or rewrites a line somewhere."""


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
        return json.dumps(out, ensure_ascii=False)


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
