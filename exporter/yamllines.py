"""Where a config key is written: a problem names its key path (`metrics.delay_buckets.1: ...`), and the operator
looking for it in a long file is told its line too (`line 12: metrics.delay_buckets.1: ...`), as a YAML syntax
error is. Found on the document's nodes (they keep their marks) by the problem's key path as pydantic gives it (a
tuple: a key written with dots in it is one key), never by searching the text.
"""

from __future__ import annotations

from collections.abc import Sequence

import yaml

from exporter.yamlload import MERGE_TAG
from exporter.yamlproblem import EditorLines

_Entry = tuple[yaml.Node, int]
"""A key's value node, and the line the key is written on."""


class KeyLines:
    """The line (1-based) of each key path of one YAML document, from its root node: as composed, or as built (PyYAML
    flattens a mapping's merges while building it: the merged pairs first, its own after, the last pair of a key
    being the value it builds). Each mapping's keys are indexed once, the first time a path goes through it: a file
    of 100k unknown keys in one mapping is 100k look-ups, not 100k scans of it."""

    def __init__(self, root: yaml.Node | None, text: str | None = None):
        self._root = root
        self._lines = EditorLines(text)
        """Lines counted in the document's text as an editor counts them (by newlines alone)."""
        self._keys: dict[int, tuple[dict[str, _Entry], dict[str, _Entry], bool]] = {}

    def line_of(self, loc: Sequence[str | int], not_a_string: bool = False) -> int | None:
        """The line of the key at `loc`: of the key itself when the document has it, else of the nearest key above it
        that is written (a required key missing in `sources.0`: that source's line); None when its first key is not
        written (a required key missing at the top level). `not_a_string`: the last key is one YAML read as another
        kind (`yes:`, `null:`, `0x10:`; pydantic's `invalid_key`, which names it `1`, `None`, `16`), never a string
        key spelled so."""
        node, line = self._root, None
        for n, part in enumerate(loc):
            step = self._child(node, part, not_a_string and n == len(loc) - 1) if node is not None else None
            if step is None:
                break
            node, line = step
        return line

    def _child(self, node: yaml.Node, part: str | int, not_a_string: bool) -> _Entry | None:
        """The node under `node` at `part` and the line it is written on: a list's item by index, or a mapping's key
        (the last pair of it, as when the mapping is built)."""
        if isinstance(node, yaml.SequenceNode):
            index = part if isinstance(part, int) else int(part) if part.isascii() and part.isdigit() else None
            if index is not None and 0 <= index < len(node.value):
                item = node.value[index]
                return item, self._line(item.start_mark)
            return None
        if not isinstance(node, yaml.MappingNode) or (isinstance(part, int) and not not_a_string):
            return None  # an index into a mapping: a `!!set` given for a list, whose order is the hash's
        strings, others, merges = self._keys.get(id(node)) or self._index(node)
        if merges:  # a mapping not built (composed only): its merges not flattened
            found = _merged_child(node, str(part))
            return None if found is None else (found[0], self._line(found[1]))
        if not_a_string:
            return others.get(str(part))
        return strings.get(str(part)) if isinstance(part, str) else others.get(str(part)) or strings.get(str(part))

    def _line(self, mark: yaml.Mark) -> int:
        return self._lines.of(mark)[0]

    def _index(self, node: yaml.MappingNode) -> tuple[dict[str, _Entry], dict[str, _Entry], bool]:
        """A mapping's string keys, its other keys as pydantic names them (`True` as `1`, `None` as `None`), and
        whether it holds a merge key (`<<`: not flattened, as composed)."""
        strings: dict[str, _Entry] = {}
        others: dict[str, _Entry] = {}
        merges = False
        builder = yaml.constructor.SafeConstructor()
        for key, value in node.value:
            merges = merges or key.tag == MERGE_TAG
            if not isinstance(key, yaml.ScalarNode) or key.tag == MERGE_TAG:
                continue
            try:
                built = builder.construct_object(key)
            except (yaml.YAMLError, ValueError, TypeError, OverflowError):
                continue
            entry = value, self._line(key.start_mark)
            if isinstance(built, str):
                strings[built] = entry
            else:  # (pydantic names a date key by its repr: `datetime.date(2024, 1, 1)`)
                others[str(int(built)) if isinstance(built, bool) else repr(built)] = entry
        self._keys[id(node)] = strings, others, merges
        return strings, others, merges


MAX_SHOWN_PROBLEMS = 100
"""Problems of one config shown at most, then how many more: a file of a million aliases of one wrong mapping (within
yamlload's bound) had 480k problems, a 23 MB report on stderr and one log line of it at SIGHUP."""


def numbered(problems: list[str], lines: Sequence[int | None] | None) -> list[str]:
    """Each problem with `line N: ` before it when its key's line is known (`lines` beside `problems`; a problem
    past its end has none): the first MAX_SHOWN_PROBLEMS, then one line saying how many more there are."""
    known = lines or ()
    shown = [problem if i >= len(known) or known[i] is None else f"line {known[i]}: {problem}"
             for i, problem in enumerate(problems[:MAX_SHOWN_PROBLEMS])]
    if len(problems) > MAX_SHOWN_PROBLEMS:
        shown.append(f"... and {len(problems) - MAX_SHOWN_PROBLEMS:,} more problems (not shown)")
    return shown


def _merged_child(node: yaml.MappingNode, part: str) -> tuple[yaml.Node, yaml.Mark] | None:
    """In a mapping as composed, the key `part` by its text: its own last pair, else the first of the mappings it
    merges with `<<` that has it, as PyYAML flattens them."""
    found: tuple[yaml.Node, yaml.Mark] | None = None
    merged: list[yaml.Node] = []
    for key, value in node.value:
        if key.tag == MERGE_TAG:
            merged[:0] = value.value if isinstance(value, yaml.SequenceNode) else [value]
        elif isinstance(key, yaml.ScalarNode) and key.value == part:
            found = value, key.start_mark
    if found is not None:
        return found
    for mapping in merged:
        if isinstance(mapping, yaml.MappingNode):
            found = _merged_child(mapping, part)
            if found is not None:
                return found
    return None
