"""One line for a YAML syntax error or a file that is not UTF-8: the config and the classification tables are
checked by `check-config` and reloaded on SIGHUP, and both promise one line per problem (PyYAML's message runs
over several lines, with `in "<unicode string>"` marks that name no file; Python's decode error names no file).
"""

from __future__ import annotations

import re

import yaml

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


def yaml_problem(exc: yaml.YAMLError) -> str:
    """Where (line, column) and what, in one line."""
    mark = getattr(exc, "problem_mark", None)
    where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark is not None else ""
    what = _unnamed(getattr(exc, "problem", None) or str(exc).splitlines()[0])
    context, context_mark = getattr(exc, "context", None), getattr(exc, "context_mark", None)
    if context:
        what += f" ({_unnamed(context)}" + (f" started on line {context_mark.line + 1})" if context_mark else ")")
    return f"{where}not valid YAML: {what}"


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
