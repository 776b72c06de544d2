"""Where a config key is written: a problem names its key path (`metrics.delay_buckets.1: ...`), and the operator
looking for it in a long file is told its line too (`line 12: metrics.delay_buckets.1: ...`), as a YAML syntax
error is. Found on the document's nodes (they keep their marks) by the problem's key path as pydantic gives it (a
tuple: a key written with dots in it is one key), never by searching the text.
"""

from __future__ import annotations

from collections.abc import Sequence

import yaml

_MERGE_TAG = "tag:yaml.org,2002:merge"


class KeyLines:
    """The line (1-based) of each key path of one YAML document, from its root node: as composed, or as built (PyYAML
    flattens a mapping's merges while building it: the merged pairs first, its own after, the last pair of a key
    being the value it builds)."""

    def __init__(self, root: yaml.Node | None):
        self._root = root

    def line_of(self, loc: Sequence[str | int]) -> int | None:
        """The line of the key at `loc`: of the key itself when the document has it, else of the nearest key above it
        that is written (a required key missing in `sources.0`: that source's line); None when its first key is not
        written (a required key missing at the top level)."""
        node, line = self._root, None
        for part in loc:
            step = _child(node, part) if node is not None else None
            if step is None:
                break
            node, line = step
        return line


def numbered(problems: list[str], lines: Sequence[int | None] | None) -> list[str]:
    """Each problem with `line N: ` before it when its key's line is known (`lines` beside `problems`; a problem
    past its end has none)."""
    known = list(lines or ())
    return [problem if i >= len(known) or known[i] is None else f"line {known[i]}: {problem}"
            for i, problem in enumerate(problems)]


def _child(node: yaml.Node, part: str | int) -> tuple[yaml.Node, int] | None:
    """The node under `node` at `part` and the line it is written on: a list's item by index, or a mapping's key, the
    last pair of it winning as when the mapping is built (own keys after merged ones); in a mapping not built yet, a
    key it merges with `<<` when it has no own pair of it, the merged mappings taken as PyYAML flattens them."""
    if isinstance(node, yaml.SequenceNode):
        index = part if isinstance(part, int) else int(part) if isinstance(part, str) and part.isascii() \
            and part.isdigit() else None
        if index is not None and 0 <= index < len(node.value):
            item = node.value[index]
            return item, item.start_mark.line + 1
        return None
    if not isinstance(node, yaml.MappingNode):
        return None
    found: tuple[yaml.Node, int] | None = None
    merged: list[yaml.Node] = []
    for key, value in node.value:
        if key.tag == _MERGE_TAG:
            merged[:0] = value.value if isinstance(value, yaml.SequenceNode) else [value]
        elif isinstance(key, yaml.ScalarNode) and key.value == str(part):
            found = value, key.start_mark.line + 1
    if found is not None:
        return found
    for mapping in merged:
        found = _child(mapping, part)
        if found is not None:
            return found
    return None
