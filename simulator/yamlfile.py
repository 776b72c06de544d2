"""A YAML file the user names (a scenario, the simulator's settings), read into its top-level mapping.

Both `pmta-sim` and `watchtower demo` print a `YamlFileError` as it is, so every problem is one line naming the file
(and the key, for a value that does not validate). The file is read with exporter.boundedfile, as the exporter's own
config is: /dev/zero filled the memory, a FIFO nobody wrote to hung the command, a non-UTF-8 file ended in a
traceback.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from exporter.boundedfile import FileProblem, read_bounded
from exporter.yamlproblem import CONSTRUCTOR_ERRORS, unreadable_line, utf8_line_problem, yaml_problem

MAX_BYTES = 1024**2
"""Largest scenario or settings file read: they are a few KiB, so a bigger file is the wrong file (a log,
/dev/zero)."""

SHOWN_PROBLEMS = 3
"""Validation problems spelled out in the one line; a list of 5000 bad events made a 375 KB line."""


class YamlFileError(ValueError):
    """`file: what is wrong`, in one line (the commands show it as is)."""


def read_mapping(path: str | Path, what: str, keys: str, empty: bool = False) -> dict[str, Any]:
    """The top-level mapping of the YAML file `path`, a `what` ("scenario") of at most MAX_BYTES: a regular file, or
    a pipe read to its end (`--scenario <(envsubst < tmpl.yaml)`). `keys` says what the mapping holds, for an empty
    file, which is an error unless `empty` (then it is {}). YamlFileError for anything else."""
    try:
        raw = read_bounded(path, MAX_BYTES, f"a YAML {what} file", f"a {what} file")
    except FileProblem as exc:
        raise YamlFileError(str(exc)) from None
    except OSError as exc:
        raise YamlFileError(f"{path}: cannot read: {exc.strerror or exc}") from None
    return parse_mapping(raw, str(path), what, keys, empty)


def parse_mapping(text: str | bytes, where: str, what: str, keys: str, empty: bool = False) -> dict[str, Any]:
    """The top-level mapping of YAML `text` (bytes: UTF-8) from `where`; see read_mapping."""
    if isinstance(text, bytes):
        try:
            text = text.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise YamlFileError(f"{where}: {utf8_line_problem(text, exc)}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise YamlFileError(f"{where}: {yaml_problem(exc)}") from None
    except RecursionError:  # PyYAML's composer recurses once per level of nesting
        from exporter.yamlload import TOO_DEEP  # the exporter's words

        raise YamlFileError(f"{where}: not valid YAML: {TOO_DEEP}") from None
    except CONSTRUCTOR_ERRORS as exc:
        # PyYAML's constructors: `2026-02-30` (day is out of range), `!!timestamp x` (AttributeError), ...
        line = unreadable_line(text)
        raise YamlFileError(f"{where}:{f' line {line}:' if line else ''} a value YAML cannot read: "
                            f"{_why(exc)}") from None
    if data is None:  # nothing but blanks, comments or `---` (or /dev/null)
        if empty:
            return {}
        why = "the file is empty" if not text.strip() else "the file holds no keys (only comments or blank lines)"
        raise YamlFileError(f"{where}: {why}: a {what} is a YAML mapping of {keys} (docs/simulator.md)")
    if not isinstance(data, dict):
        raise YamlFileError(f"{where}: expected a mapping at the top level, got {_kind(data)}")
    return data


def validation_problem(exc: ValidationError, where: str) -> YamlFileError:
    """Pydantic's errors as `where: key.path: message; ...`, the first SHOWN_PROBLEMS of them, in one line."""
    errors = exc.errors()
    shown = "; ".join(_problem(e) for e in errors[:SHOWN_PROBLEMS])
    more = len(errors) - SHOWN_PROBLEMS
    return YamlFileError(f"{where}: {shown}" + (f" (and {more} more problems)" if more > 0 else ""))


def _problem(error: Any) -> str:
    """`key.path: message`; a model's own check (no location) says which key itself."""
    msg = _one_line(error["msg"])
    if not error["loc"] and error["type"] == "value_error":
        return msg.removeprefix("Value error, ")
    return f"{_location(error['loc'])}: {msg}"


def keys_of(model: type[Any]) -> str:
    """`a, b and c`: the keys of a model's mapping, for the message about an empty file."""
    names = list(model.model_fields)
    return ", ".join(names[:-1]) + f" and {names[-1]}" if len(names) > 1 else names[0]


def _location(loc: tuple[int | str, ...]) -> str:
    """`events.0.inject.vmtaa`; a key of the user's with a line break or a dot in it is quoted."""
    return ".".join(str(p) if isinstance(p, int) or (p.isprintable() and "." not in p and p) else repr(p)
                    for p in loc) or "(top level)"


def _why(exc: Exception) -> str:
    """What a PyYAML constructor's exception says, in the user's terms."""
    if isinstance(exc, ValueError | OverflowError) and str(exc):
        return _one_line(str(exc))
    return "a value that does not fit its tag (e.g. `!!timestamp` on something that is not a date)"


def _one_line(text: str) -> str:
    return " ".join(text.split()) if not text.isprintable() else text


def _kind(data: Any) -> str:
    """What the top level is instead of a mapping, in the user's terms."""
    if isinstance(data, bool):
        return "true/false"
    if isinstance(data, int | float):
        return "a number"
    return {list: "a list", str: "a string", bytes: "binary data"}.get(type(data), f"a {type(data).__name__}")
