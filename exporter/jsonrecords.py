"""PMTA's JSON accounting form -> the rows a CSV header would have given.

PMTA writes an `<acct-file>` as CSV or JSON (pmta-formats.md §1.3): in JSON every record is one object that
names its own fields, and no header line comes first. Such a file is read with one fixed set of columns
(`COLUMNS`: every field the exporter and correlator read, plus `header_Message-Id`), each object's fields mapped
by name in any case, as a CSV header's are; fields nothing reads are dropped. The columns' last name is
`JSON_MARK`, so a checkpoint, which keeps a file's header as text, brings the form back after a restart.

The framing is UNCERTAIN in the reference (one object per line, the one sample shown), so a JSON array written
one object per line (`[` and `]` around, a comma after each object) is read too. A record never spans lines. A
field named twice in one record is read from its first occurrence (as a CSV header's first column of a name).

PMTA writes every value as a string (the one real sample, pmta-formats.md §4); whether a numeric or flag field may
come as a JSON number or boolean is UNCERTAIN, so a scalar is read as the CSV form would carry it (`1234` -> "1234",
`true` -> "true", null -> ""). An object or an array is no PMTA value: a record holding one in a field read here
(its name in any case) is no row but a `bad_json` line naming that field (`to_row`), never a label or timeline key.

Two paths give the same rows (tests compare them): polars reads a chunk of plain records at C speed
(`frame_of`); a chunk it cannot judge exactly (a bad line, framing, a blank line, invalid UTF-8, a value that is
not a string, a read field named in another case, a surrogate or NUL escape) goes line by line through Python's
json (`to_row`).
"""

from __future__ import annotations

import json
import re
from typing import Any

import polars as pl

from exporter.records import KNOWN_FIELDS, Columns, col
from exporter.redact import InContext, clip
from exporter.textrepair import may_need_repair, repair_text

JSON_MARK = "{json}"
"""Last column name of a JSON file's columns (no CSV header names a field so)."""

COLUMNS = Columns.from_header([*KNOWN_FIELDS, "header_Message-Id", "arrivalDate", JSON_MARK])
"""An f record's time column is UNCERTAIN (pmta-formats.md §1.2): a record without `timeLogged` is timed by its
`arrivalDate`, as a CSV row whose timeLogged is empty is (`Columns.logged`: the readers take it; a record's fields are
kept as written, so which of the two timed it stays known, correlator/prepare.py `arrival_timed`)."""
WIDTH = len(COLUMNS.names)
_EXACT = {name: i for i, name in enumerate(COLUMNS.names[:-1])}
_FOLDED = {name.lower(): i for name, i in _EXACT.items()}
_SLOTS: dict[str, int] = dict(_EXACT)
"""Each key seen -> its column (exact name), column + WIDTH (the name in another case), or -1 (not read)."""
_MAX_SLOTS = 4096
BLANK = b" \t\r\n"
"""The bytes of a blank line: those before a file's first line decide nothing (its form is decided by the first
line that holds any other byte; the parser and the line counter of a file started at its end read it alike)."""


def is_json(columns: Columns | None) -> bool:
    """Whether `columns` are those of a JSON file (also when rebuilt from a checkpoint's header text)."""
    return columns is not None and bool(columns.names) and columns.names[-1] == JSON_MARK


def opens_json(first: int) -> bool:
    """Whether a file whose first byte that is not BLANK is `first` is in PMTA's JSON form: that byte opens an object
    or an array (a CSV file opens with its `type` header)."""
    return first in b"[{"


def object_text(line: str) -> str:
    """The object of one line without an array's framing ('' for a blank line or framing alone: `[`, `]`, `,`,
    and `[]`, a file closed with no record). The comma may end a line or, comma-first, open the next one."""
    text = line.strip()
    if text.startswith("["):
        text = text[1:].lstrip()
    if text.startswith(","):
        text = text[1:].lstrip()
    if text.endswith(","):
        text = text[:-1].rstrip()
    if text.endswith("]"):
        rest = text[:-1].rstrip()
        if not rest or rest.endswith("}"):
            text = rest
    return text


def to_row(text: str) -> list[str] | str | None:
    """The row of one record's object text; None when it is not a JSON object; a str when a member the exporter
    reads (its name in any case) holds an object or an array, which no PMTA field is: `FIELD VALUE` (the member's
    name as written, its value as compact JSON) for the `bad_json` log line. A scalar is read as the CSV form would
    carry it (`_text`).

    A raw control character in a string (a tab in a remote reply) is read as itself (`strict=False`), as the CSV
    form carries it, rather than costing the record. Values may still hold what only an escape can say (a lone
    surrogate, NUL): `repair` makes them text every output can carry."""
    try:
        record = json.loads(text, object_pairs_hook=_first_wins, strict=False)
    except (ValueError, RecursionError):
        return None
    if not isinstance(record, dict):
        return None
    row = [""] * WIDTH
    slots = _SLOTS
    for key, value in record.items():
        i = slots.get(key)
        if i is None:
            i = _slot(key)
        if i < 0:
            continue
        if value.__class__ is not str:  # rare: PMTA writes strings (a chunk of them is polars', `frame_of`)
            if isinstance(value, dict | list):
                return _not_a_value(key, value, _decoded_context(text, record))
            value = _text(value)
        if i >= WIDTH:  # another case of a name: an exact name's value, or the first other case's, is kept
            i -= WIDTH
            if row[i]:
                continue
        row[i] = value
    return row


def repair(row: list[str]) -> bool:
    """Make `row`'s values text every output can carry, in place (`textrepair`); True if a lone surrogate was
    replaced: the record then counts as repaired, as one with invalid UTF-8 does."""
    surrogate = False
    for i, value in enumerate(row):
        row[i], replaced = repair_text(value)
        surrogate = surrogate or replaced
    return surrogate


def _first_wins(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """An object with each name's first value (json's own dict keeps the last; polars keeps the first)."""
    record: dict[str, Any] = {}
    for key, value in pairs:
        record.setdefault(key, value)
    return record


_TEXT_TYPES = (pl.String, pl.Null)
_NOT_TEXT_PATTERN = r'"[ \t\r]*:[ \t\r]*[^" \t\rn]'
_NOT_TEXT = re.compile(_NOT_TEXT_PATTERN.encode())
"""A member whose value is neither a string nor null (a number, true/false, an object, a list). polars would turn
it into text of its own in a column that also holds strings ("0.0" -> "0"): such a chunk is Python's. JSON's
whitespace around `:` is space, tab, CR or LF (a line holds no LF). An escaped quote inside a string can match too,
which only costs that chunk the slower path."""
_READ_SCHEMA = {name: pl.String for name in COLUMNS.names[:-1]}
SCHEMA_READ_MIN_BYTES = 128 * 1024
"""Below this a chunk (a daemon's poll) is read with inference: the schema read's polars checks cost ~1 ms more on
4 KiB, the same on 64 KiB, and ~25% less from 1 MiB (a backfill's 16 MiB: ~180 ms instead of ~255)."""
_NAMES_EXACT = "|".join(f'"{name}"' for name in COLUMNS.names[:-1])  # names are letters, `_` and `-`: no escaping
_NAMES_ANY_CASE = "(?i)" + _NAMES_EXACT
"""Every read name quoted, in any case: more matches than `_NAMES_EXACT` means a name written in another case (or a
string value that is one), which only the inferred read (it lists the names) or Python may judge."""


def frame_of(data: bytes, lines: int) -> pl.DataFrame | None:
    """The chunk's records as a frame of COLUMNS (`c0`..: strings, empty and absent fields null), read by polars;
    None when it holds anything the line-by-line path must judge (see the module's docstring).

    A large chunk is read with the schema of the read fields (no inference: ~3x faster), once one polars pass
    has shown that every value is a string or null and every read name is spelt exactly; a chunk with a `\\u`
    escape (it may spell a name) or a name in another case is read with inference, which lists the names."""
    if may_need_repair(data):  # polars reads a lone surrogate as NUL or refuses it: `repair` on the Python path
        return None
    if len(data) < SCHEMA_READ_MIN_BYTES or (b"\\" in data and b"\\u" in data):  # memchr first: ~1 ms, not ~18
        return _inferred_frame(data, lines)
    try:  # a Series, not a str literal (which scans ~2x slower); from the bytes: no Python str (~1.5x faster)
        text = pl.lit(pl.Series([data]).cast(pl.String))
    except pl.exceptions.ComputeError:  # invalid UTF-8
        return None
    not_text, exact, any_case = pl.select(text.str.contains(_NOT_TEXT_PATTERN).alias("t"),
                                          text.str.count_matches(_NAMES_EXACT).alias("e"),
                                          text.str.count_matches(_NAMES_ANY_CASE).alias("a")).row(0)
    if not_text:
        return None
    if exact != any_case:
        return _inferred_frame(data, lines)
    try:
        frame = pl.read_ndjson(data, schema=_READ_SCHEMA)
    except Exception:  # noqa: BLE001 - polars raises several types for input it refuses
        return None
    if frame.height != lines or frame.get_column(COLUMNS.names[0]).null_count() == frame.height:
        return None  # a blank line (skipped by polars) or framing: numbering needs every line; or no typed record
    return frame.select([pl.col(name).replace("", None).alias(col(i)) for i, name in enumerate(COLUMNS.names[:-1])]
                        + [pl.lit(None, pl.String).alias(col(WIDTH - 1))])


def _inferred_frame(data: bytes, lines: int) -> pl.DataFrame | None:
    """frame_of by polars' inferred schema: the names as written (escapes decoded), each one's type."""
    if _NOT_TEXT.search(data):  # a value that may not be text (one C scan, ~55 ms for 16 MiB)
        return None
    try:
        frame = pl.read_ndjson(data, infer_schema_length=None)
    except Exception:  # noqa: BLE001 - polars raises several types for input it refuses
        return None
    if frame.height != lines:  # a blank line (skipped by polars) or framing: numbering needs every line
        return None
    picked: dict[int, str] = {}
    for name, dtype in frame.schema.items():
        i = _EXACT.get(name)
        if i is None:
            if name.lower() in _FOLDED:  # another case of a read name: which one wins is the slow path's call
                return None
            continue
        if dtype not in _TEXT_TYPES:  # a number, bool, object or list: Python gives their text
            return None
        picked[i] = name
    if 0 not in picked:
        return None  # no record names its type
    return frame.select([
        (pl.col(picked[i]).cast(pl.String).replace("", None) if i in picked else pl.lit(None, pl.String)).alias(col(i))
        for i in range(WIDTH)
    ])


def _slot(key: str) -> int:
    """The slot of a key not seen before (remembered while there are few: a file's keys repeat on every line)."""
    folded = _FOLDED.get(key.lower())
    slot = -1 if folded is None else folded + WIDTH
    if len(_SLOTS) < _MAX_SLOTS:
        _SLOTS[key] = slot
    return slot


def _text(value: str | float | bool | None) -> str:
    """A JSON scalar as the CSV form would carry it. PMTA writes strings (pmta-formats.md §4); whether a numeric or
    flag field may come as a JSON number or boolean is UNCERTAIN, so those are taken as meant (`1234` -> "1234",
    `true` -> "true", in any field: a scalar is a value the CSV form could carry), and null as an empty field."""
    if isinstance(value, str):
        return value
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


_SHOWN_CHARS = 200
"""Of a value `_not_a_value` shows (the log line clips it to 120 characters anyway; a line can be megabytes)."""


def _decoded_context(text: str, record: dict[str, Any]) -> str:
    """The record as written and its string values as read: an address the line JSON-escapes (`j\\u00fcrgen@x`)
    is then found as the words a log line shows (`<jürgen>`)."""
    return "\n".join([text, *(v for v in record.values() if v.__class__ is str)])


def _not_a_value(key: str, value: dict[str, Any] | list[Any], record: str) -> InContext:
    """`FIELD VALUE` for the log line of a record whose read member `key` holds an object or list (not a row).

    With hashing on, the log line is redacted (exporter.redact.RedactFilter) after this cut: it is made where no local
    part is split from its `@` (`clip`), and the text carries the whole `record` (`InContext`), so a bare copy of
    the rcpt's local part in the value (`["550 5.1.1 <alice>... User unknown"]`) is redacted as in a CSV line."""
    try:
        shown = clip(json.dumps(value, separators=(",", ":"), ensure_ascii=False), _SHOWN_CHARS)
    except (ValueError, RecursionError):  # as deep as json.loads would go: the name is what the reader needs
        shown = "[...]" if isinstance(value, list) else "{...}"
    # an escaped lone surrogate or NUL: text a log line can carry
    return InContext(f"{key} {repair_text(shown)[0]}", record)
