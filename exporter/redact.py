"""Redaction of recipient addresses in text bound for logs (when `correlator.hash_recipients` is on).

Hashing recipients in the store is pointless if a parser warning then logs the raw CSV line. The
local part of every address-like token is replaced (`[redacted]@gmail.com`): the domain stays,
since it says which ISP a bad line concerns and identifies nobody.
"""

from __future__ import annotations

import logging
import re

# local@domain, the domain with at least one dot; tolerant of the quoting PMTA and SMTP replies use.
_ADDRESS = re.compile(r"[A-Za-z0-9.!#$%&'*+/=?^_`{|}~-]+@([A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)+)")
REDACTED = "[redacted]"


def redact(text: str) -> str:
    """`text` with the local part of every e-mail address replaced by `[redacted]`."""
    if "@" not in text:
        return text
    return _ADDRESS.sub(lambda m: f"{REDACTED}@{m.group(1)}", text)


class RedactFilter(logging.Filter):
    """A handler filter applying `redact` to each record's final message and traceback text."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if "@" in message:
            record.msg, record.args = redact(message), None
        if record.exc_info:
            record.exc_text = redact(logging.Formatter().formatException(record.exc_info))
            record.exc_info = None
        return True
