"""Text every output can carry, from JSON that escapes what no UTF-8 text holds.

A JSON string can escape a lone surrogate (`\\ud800`), which no UTF-8 encodes: kept, it fails the first output
that encodes it (a /metrics render, a log line, an SQLite bind). It becomes U+FFFD, as invalid UTF-8 bytes do.
An escaped NUL (`\\u0000`) is dropped, as the CSV path drops NUL bytes: no label or timeline holds one. Both JSON
edges use this: the accounting form (`jsonrecords`) and PMTA's management API (`pmta_api`).
"""

from __future__ import annotations

import re
import reprlib
from typing import Any

UNSAFE_ESCAPE = re.compile(rb"\\u(?:[dD][89a-fA-F]|0000)")
"""The escape of a surrogate or of NUL in JSON bytes (a valid pair matches too: only the slower path for it)."""
_UNSAFE = re.compile("[\x00\ud800-\udfff]")
_SURROGATE = re.compile("[\ud800-\udfff]")


def may_need_repair(data: bytes) -> bool:
    """Whether decoding `data` as JSON can give text `repair_text` must mend. A memchr for the backslash first
    (~1 ms per 16 MiB), then the regex, whose literal prefix is searched as fast (~5 ms); `b"\\u" in data`, a
    two-byte search, took ~15 ms per 16 MiB chunk: 8% of a JSON backfill."""
    return b"\\" in data and UNSAFE_ESCAPE.search(data) is not None


def repair_text(value: str) -> tuple[str, bool]:
    """`value` with lone surrogates as U+FFFD and NULs dropped; and whether a surrogate was replaced."""
    if _UNSAFE.search(value) is None:
        return value, False
    surrogate = _SURROGATE.search(value) is not None
    if surrogate:
        value = _SURROGATE.sub("\ufffd", value)
    return value.replace("\x00", ""), surrogate


def repair_tree(obj: Any) -> Any:
    """A decoded JSON document with every key and string repaired (`repair_text`); other values as they are."""
    if isinstance(obj, str):
        return repair_text(obj)[0]
    if isinstance(obj, dict):
        return {repair_text(k)[0]: repair_tree(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [repair_tree(v) for v in obj]
    return obj


def surrogate_paths(obj: Any, path: str = "") -> list[str]:
    """Key paths (`sources.0.name`) of the keys and strings of a decoded YAML/JSON document that hold a lone
    surrogate. For files an operator writes (config, tables): named as a problem rather than repaired.

    Each list and mapping is looked at once, at its first path: a YAML alias shares its anchor's container, so a
    few hundred bytes of nested aliases name 10**8 paths, and an alias inside its own anchor (`&a [1, *a]`) names
    endless ones; the anchor is the place to correct. Without recursion: no nesting is too deep for the walk."""
    found: list[str] = []
    seen: set[int] = set()
    todo: list[tuple[str, Any]] = [(path, obj)]
    while todo:
        where, node = todo.pop()
        if isinstance(node, str):
            if _SURROGATE.search(node):
                found.append(where or "(top level)")
        elif isinstance(node, dict | list) and id(node) not in seen:
            seen.add(id(node))
            todo += reversed(_members(node, where))
    return found


def _members(node: dict[Any, Any] | list[Any], path: str) -> list[tuple[str, Any]]:
    """What `surrogate_paths` looks at inside `node`, in order, with their paths: a mapping's text keys (named by
    their own path) and values, a list's items."""
    if isinstance(node, list):
        return [(f"{path}.{i}" if path else str(i), v) for i, v in enumerate(node)]
    members: list[tuple[str, Any]] = []
    for k, v in node.items():
        key = f"{path}.{k}" if path else str(k)
        if isinstance(k, str):
            members.append((key, k))
        members.append((key, v))
    return members


SURROGATE_PROBLEM = ("holds an escaped lone surrogate (\\ud800-\\udfff), which is not text: write the character "
                     "itself, or a pair of escapes")


_SHORT = reprlib.Repr()
_SHORT.maxlevel, _SHORT.maxlist, _SHORT.maxdict, _SHORT.maxstring, _SHORT.maxother = 4, 12, 12, 400, 400


def short_repr(value: Any, limit: int = 80) -> str:
    """repr() of a value an operator's file gave, in at most `limit` characters and bounded work: a value a few nested
    YAML aliases expand (10^8 items in an 880-byte file) is shown by its first items, not written out whole to be cut
    (seconds per level of nesting)."""
    text = _SHORT.repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."
