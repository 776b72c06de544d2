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
    handler.setFormatter(JsonFormatter() if fmt == "json" else logging.Formatter(TEXT_FORMAT))
    if redact_addresses:
        handler.addFilter(RedactFilter())
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(getattr(logging, level.upper()))
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access", "uvicorn.asgi"):
        lg = logging.getLogger(name)
        for old in list(lg.handlers):
            lg.removeHandler(old)
        lg.propagate = True
    return handler
