"""A bad line logged while hashing is on never shows a recipient's local part, even when cut short."""

from __future__ import annotations

import io
import logging

from exporter.logsetup import setup
from exporter.parser import ErrorLog


def test_a_long_bad_line_is_cut_at_a_field_and_redacted():
    stream = io.StringIO()
    handler = setup("info", "text", stream=stream, redact_addresses=True)
    try:
        pad = "x" * 100
        sample = f"d,{pad},someone.private@gmail.com,more,fields,jane.doe@example.org,end" + ",y" * 50
        ErrorLog().report("acct", "/var/log/pmta/acct.csv", 7, "short_row", sample)
    finally:
        logging.getLogger().removeHandler(handler)
    out = stream.getvalue()
    assert "acct.csv:7: short_row" in out
    assert "someone" not in out and "priv" not in out and "jane" not in out
