"""Ranges read again for the correlator (exporter/spans.py): what they say when the file is no longer the one read."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from exporter.fingerprint import fingerprint_len, read_fingerprint
from exporter.spans import Span, SpanGone, append_span, read_span, span_at

HEADER = "type,timeLogged,rcpt"


def _span(path: Path, fingerprint: bytes) -> Span:
    st = path.stat()
    return span_at("f1", "acct", str(path), st.st_dev, st.st_ino, (len(HEADER) + 1, 1, HEADER), st.st_size, None,
                   fingerprint=fingerprint)


def test_a_file_truncated_under_its_span_is_reported_truncated_not_replaced(tmp_path: Path):
    path = tmp_path / "acct.csv"
    path.write_text(HEADER + "\n" + "".join(f"d,2026-11-25 12:00:00+0000,u{i}@gmail.com\n" for i in range(50)))
    span = _span(path, read_fingerprint(str(path)))
    os.truncate(path, 0)
    with pytest.raises(SpanGone, match="truncated to 0 bytes"):
        read_span(span, 1 << 20)


def test_merged_spans_keep_the_digest_of_the_longer_head(tmp_path: Path):
    """A file's first span may be taken while its head is short; the digest of more of it decides better."""
    path = tmp_path / "acct.csv"
    path.write_text(HEADER + "\n")
    short = read_fingerprint(str(path))
    with open(path, "a") as f:
        f.write("".join(f"d,2026-11-25 12:00:00+0000,u{i}@gmail.com\n" for i in range(50)))
    longer = read_fingerprint(str(path))
    assert fingerprint_len(short) < fingerprint_len(longer) and len(short) == len(longer)
    first = _span(path, short)
    first.end = first.start + 10
    second = _span(path, longer)
    second.start = first.end
    spans: list[Span] = []
    append_span(spans, first)
    append_span(spans, second)
    assert len(spans) == 1 and spans[0].fingerprint == longer


def _range(file_id: str, source: str, start: int, end: int, allowed: frozenset[str] | None) -> Span:
    return Span(file_id, source, f"/l/{source}", 1, len(file_id), start, end, 0, None, allowed, None, b"")


def test_a_report_range_read_later_is_not_merged_ahead_of_a_delivery_range_between() -> None:
    """Spans are stored one after the other (thread worker once spilling): fbl 50-80, read after acct 0-100, was
    merged into fbl 0-50 ahead of it, so its complaints were stored before the deliveries they are about (each stayed
    a timeline of its own). A delivery range may still join its own earlier range (deliveries first is the order a
    report needs)."""
    fbl, acct = frozenset({"f"}), None
    spans: list[Span] = []
    for s in (_range("F", "fbl", 0, 50, fbl), _range("A", "acct", 0, 100, acct), _range("F", "fbl", 50, 80, fbl),
              _range("A", "acct", 100, 200, acct)):
        append_span(spans, s)
    assert [(s.file_id, s.start, s.end) for s in spans] == [("F", 0, 50), ("A", 0, 200), ("F", 50, 80)]
