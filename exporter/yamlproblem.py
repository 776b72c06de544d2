"""One line for a YAML syntax error or a file that is not UTF-8: the config and the classification tables are
checked by `check-config` and reloaded on SIGHUP, and both promise one line per problem (PyYAML's message runs
over several lines, with `in "<unicode string>"` marks that name no file; Python's decode error names no file).
"""

from __future__ import annotations

import bisect
import re
from typing import Any

import yaml

from exporter.yamlload import MERGE_TAG

_NAMED = re.compile(r"\b(alias|anchor|tag)(?: handle)? (?:'[^']*'|\"[^\"]*\")")
"""PyYAML quotes the name of an alias, anchor or tag it cannot use: an unquoted password starting with `*` or `!`
(`password: *Hunter2`), which a log line (SIGHUP's too) must not repeat."""
_HINTS = {"alias": "a value starting with `*` is an alias to YAML: quote it",
          "anchor": "a value starting with `&` is an anchor to YAML: quote it",
          "tag": "a value starting with `!` is a tag to YAML: quote it"}


def _unnamed(text: str) -> str:
    """`text` without the names PyYAML quotes (`_NAMED`), with what to do instead."""
    found = _NAMED.search(text)
    return _NAMED.sub(r"\1", text) + f" ({_HINTS[found.group(1)]})" if found else text


_OTHER_BREAKS = ("\r", "\x85", "\u2028", "\u2029")
"""What PyYAML also counts as a line break (a lone CR, NEL, the Unicode line and paragraph separators), where an
editor, `grep -n` and `sed -n` count only newlines."""


class EditorLines:
    """(line, column), 1-based, of a mark in a text as an editor counts them: by newlines alone. A `name: "a\u2028b"`
    put every later problem one line past the one `grep -n` shows. In a text of newlines alone (nearly every file),
    PyYAML's own count; else by the newlines' positions, found once (a look-up per key of a 1 MiB file rescanned
    it: 28 s for 100k keys)."""

    def __init__(self, text: str | None) -> None:
        odd = text is not None and any(brk in text for brk in _OTHER_BREAKS)
        self._newlines = [at for at, char in enumerate(text or "") if char == "\n"] if odd else None

    def of(self, mark: yaml.Mark) -> tuple[int, int]:
        if self._newlines is None:
            return mark.line + 1, mark.column + 1
        before = bisect.bisect_left(self._newlines, mark.index)  # newlines before the mark
        start = self._newlines[before - 1] + 1 if before else 0
        return before + 1, mark.index - start + 1


def unreadable_line(text: str) -> int | None:
    """The line (1-based, by newlines) of the first scalar in `text` PyYAML composes but cannot construct (`!!bool
    hunter2`, `2026-02-30`), or None: the one-line problem of a constructor's error says where, never what (the
    value may be a secret given a tag)."""
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
        loader = yaml.SafeLoader("")
    except Exception:  # noqa: BLE001 - only a hint for the message
        return None
    todo: list[Any] = [root] if root is not None else []
    while todo:
        node = todo.pop()
        if isinstance(node, yaml.ScalarNode):
            try:
                loader.construct_object(node)
            except Exception:  # noqa: BLE001 - the value that cannot be read
                return EditorLines(text).of(node.start_mark)[0]
        elif isinstance(node, yaml.SequenceNode):
            todo.extend(reversed(node.value))
        elif isinstance(node, yaml.MappingNode):  # a merge key `<<` has no constructor of its own: its value only
            todo.extend(reversed([n for key, value in node.value
                                  for n in ((value,) if key.tag == MERGE_TAG else (key, value))]))
    return None


def yaml_problem(exc: yaml.YAMLError, text: str | None = None) -> str:
    """Where (line, column) and what, in one line; lines counted in `text` (the document parsed) as an editor does."""
    lines = EditorLines(text)
    mark = getattr(exc, "problem_mark", None)
    where = "line {}, column {}: ".format(*lines.of(mark)) if mark is not None else ""
    what = _unnamed(getattr(exc, "problem", None) or str(exc).splitlines()[0])
    context, context_mark = getattr(exc, "context", None), getattr(exc, "context_mark", None)
    if context:
        started = f" started on line {lines.of(context_mark)[0]})" if context_mark else ")"
        what += f" ({_unnamed(context)}" + started
    return f"{where}not valid YAML: {what}"


CONSTRUCTOR_ERRORS = (ValueError, OverflowError, TypeError, AttributeError, LookupError)
"""What PyYAML's constructors raise besides a YAMLError: `2026-02-30` (ValueError), an integer of 5,000 digits,
`!!timestamp x` (AttributeError), `!!bool hunter2` (KeyError, naming the value: a password given a tag)."""

_QUOTED = re.compile(r"'[^']*'|\"[^\"]*\"")


def value_problem(exc: Exception) -> str:
    """A value PyYAML's constructors refused with another error than a YAMLError (`2026-02-30` read as a date, an
    integer of more than 4300 digits, `!!int Hunter2`): one line, as yaml_problem, without what the message quotes
    (`invalid literal for int() with base 10: 'Hunter2'`: a secret given a type tag)."""
    return f"not valid YAML: a value it cannot read ({_QUOTED.sub('...', str(exc))}); quote it if it is text"


def utf8_line_problem(raw: bytes, exc: UnicodeDecodeError) -> str:
    """`line N: ` and utf8_problem: the line of a text file an operator edits, where the bad byte is."""
    line = raw[: exc.start].count(b"\n") + 1
    return f"line {line}: {utf8_problem(raw, exc)}"


def utf8_problem(raw: bytes, exc: UnicodeDecodeError) -> str:
    """The first byte that is not UTF-8 and where, in one line: Python's own words name no file and say
    `position`, which reads as a character count."""
    return f"not UTF-8 (byte 0x{raw[exc.start]:02x} at offset {exc.start}); save the file as UTF-8"
