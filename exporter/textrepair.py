"""Text every output can carry, from JSON that escapes what no UTF-8 text holds.

A JSON string can escape a lone surrogate (`\\ud800`), which no UTF-8 encodes: kept, it fails the first output
that encodes it (a /metrics render, a log line, an SQLite bind). It becomes U+FFFD, as invalid UTF-8 bytes do.
An escaped NUL (`\\u0000`) is dropped, as the CSV path drops NUL bytes: no label or timeline holds one. Both JSON
edges use this: the accounting form (`jsonrecords`) and PMTA's management API (`pmta_api`).
"""

from __future__ import annotations

import re
import reprlib
from collections.abc import Iterator
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
    return list(_surrogate_hits(obj, path))


def first_surrogate_path(obj: Any, path: str = "", *, max_depth: int | None = None, aliases: bool = True,
                         ) -> str | None:
    """The key path of the first key or string of `obj` (in document order) holding a lone surrogate, or None; the
    walk stops there. `max_depth` bounds the nesting of lists and mappings (the top one is 1): TooDeep names the
    first container past it, for a document whose shape has a known depth (a daemon's answer, a cursor). `aliases`
    False for a JSON document, which shares no container: no set of those already seen is kept."""
    return next(_surrogate_hits(obj, path, max_depth, aliases), None)


class TooDeep(ValueError):
    """A list or mapping nested deeper than a walk's `max_depth`; `where` is its key path."""

    def __init__(self, where: str) -> None:
        super().__init__(f"{where} is nested too deep")
        self.where = where


def _surrogate_hits(obj: Any, path: str = "", max_depth: int | None = None, aliases: bool = True,
                    ) -> Iterator[str]:
    """The paths of `surrogate_paths`, one at a time. Memory is one iterator and one key per level of nesting (and the
    containers seen, with `aliases`); a path is written out for a hit only: a string per item, as long as the
    nesting is deep, made a few KiB of gzip nested hundreds deep cost GBs."""
    if isinstance(obj, str):
        if _SURROGATE.search(obj):
            yield path or "(top level)"
        return
    if not isinstance(obj, dict | list):
        return
    seen: set[int] = {id(obj)}
    levels: list[Iterator[tuple[Any, Any]]] = [_members(obj)]
    keys: list[Any] = []  # the key of each level's container in the one above it
    while levels:
        for key, node in levels[-1]:
            if isinstance(node, str):
                if _SURROGATE.search(node):
                    yield _path(path, keys, key)
            elif isinstance(node, dict | list):
                if max_depth is not None and len(levels) >= max_depth:
                    raise TooDeep(_path(path, keys, key))
                if not node or (aliases and id(node) in seen):
                    continue
                if aliases:
                    seen.add(id(node))
                levels.append(_members(node))
                keys.append(key)
                break
        else:  # this container is done: back to the one holding it
            levels.pop()
            if keys:
                keys.pop()


def _members(node: dict[Any, Any] | list[Any]) -> Iterator[tuple[Any, Any]]:
    """What the walk looks at inside `node`, in order, with their keys: a list's items by index (C's own iterator:
    nothing made per item; none when it holds no text or container, told apart by their types at C speed: a list of
    16 million numbers took the walk ~2.5 s), a mapping's text keys (named by their own key) and values."""
    if isinstance(node, list):
        kinds = set(map(type, node))
        return enumerate(node) if any(issubclass(kind, str | dict | list) for kind in kinds) else iter(())
    return _mapping_members(node)


def _mapping_members(node: dict[Any, Any]) -> Iterator[tuple[Any, Any]]:
    for k, v in node.items():
        if isinstance(k, str):
            yield k, k
        yield k, v


def _path(path: str, keys: list[Any], key: Any) -> str:
    """`sources.0.name`: `path`, then the keys down to the hit (a key as str() gives it: a YAML mapping may have
    numbers for keys)."""
    return ".".join([*([path] if path else []), *map(str, keys), str(key)])


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


def shown_user(user: str) -> str:
    """A user name as a problem shows it: up to its first `:` (HTTP basic auth reads what follows as the password:
    `admin:hunter2:` pasted as a name)."""
    head, colon, _ = user.partition(":")
    return head + ":..." if colon else user
