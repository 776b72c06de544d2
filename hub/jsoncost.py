"""What parsing a remote JSON answer would cost in memory, told from its bytes before it is parsed.

`hub.max_answer_size` bounds an answer's bytes, not what `json.loads` makes of them: a daemon's answers (objects of
named fields) take ~4.5-6 bytes of Python objects per byte of JSON, but a body of many tiny values takes far more:
`{},` is 3 bytes and ~72 parsed (24x), so 32 MiB of empty objects (a few KiB of gzip, under the cap) held ~800 MB
for the moment the hub looked at it (hub review 2026-12-07). Such a body is refused before it is parsed."""

from __future__ import annotations

PARSED_PER_BYTE = 8
"""The most memory per byte of an answer its parse may take (estimated by `parse_cost`): a daemon's answers, with
every optional field null and its values as short as they come, estimate at 4.4-6; empty objects, lists, numbers
and one-letter strings side by side at 9-80."""
PARSED_ALWAYS = 64 * 1024
"""Answers up to this size are parsed whatever their shape (at most ~2 MB): a small error body is mostly
punctuation."""
OBJECT, LIST, VALUE = 184, 88, 56
"""Bytes CPython 3.11's json.loads allocates, at most, for an object of a few keys, a list, and each further value
of an object or list (its slot and a small object: a float, an int, a short string's header), measured."""


def parse_cost(raw: bytes | bytearray) -> int:
    """An estimate of the bytes `json.loads(raw)` allocates, counted without parsing: each `{` an object, each `[`
    a list, each `,` one more value, and the text of its strings (bytes for ASCII text). Braces and commas inside
    strings count too, which only makes the estimate larger."""
    return OBJECT * raw.count(b"{") + LIST * raw.count(b"[") + VALUE * raw.count(b",") + len(raw)


def too_costly(raw: bytes | bytearray) -> str | None:
    """Why `raw` is refused unparsed (its estimated parse takes more than PARSED_PER_BYTE times its size), or None."""
    if len(raw) <= PARSED_ALWAYS:
        return None
    ratio = parse_cost(raw) / len(raw)
    if ratio <= PARSED_PER_BYTE:
        return None
    return (f"{len(raw):,} bytes of JSON that would take ~{ratio:.0f} times as much memory parsed, "
            f"more and smaller values than an answer holds")
