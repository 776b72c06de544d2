"""Where a config key is written: a problem names its key path (`metrics.delay_buckets.1: ...`), and the operator
looking for it in a long file is told its line too (`line 12: metrics.delay_buckets.1: ...`), as a YAML syntax
error is. Found on the document as composed (the nodes keep their marks), never by searching the text.
"""

from __future__ import annotations

import re

import yaml

_MERGE_TAG = "tag:yaml.org,2002:merge"
_KEY_PATH = re.compile(r"([\w-]+(?:\.[\w-]+)*): ")
"""The key path a problem starts with (`sources.0.paths.1: `): words joined by dots, then `: `."""


class KeyLines:
    """The line of each key path of one YAML document (1-based), from its root node."""

    def __init__(self, root: yaml.Node | None):
        self._root = root

    def line_of(self, problem: str) -> int | None:
        """The line of the key path `problem` starts with: of the key itself when the document has it, else of the
        nearest key above it that is written (a required key missing in `sources.0`: that source's line); None for
        a path whose first key is not written, or a problem that names no key path."""
        found = _KEY_PATH.match(problem)
        if found is None or self._root is None:
            return None
        node, line = self._root, None
        for part in found.group(1).split("."):
            step = _child(node, part)
            if step is None:
                break
            node, line = step
        return line

    def numbered(self, problem: str) -> str:
        """`problem` with `line N: ` before it when its key's line is known."""
        line = self.line_of(problem)
        return problem if line is None else f"line {line}: {problem}"


NO_LINES = KeyLines(None)
"""For a config given as data (no file): every problem as it is."""


def _child(node: yaml.Node, part: str) -> tuple[yaml.Node, int] | None:
    """The node under `node` at `part` and the line it is written on: a mapping's key (its own keys first, then
    those it merges with `<<`, earlier mappings first, as YAML's merge gives them), or a list's item by index."""
    if isinstance(node, yaml.SequenceNode):
        if part.isdigit() and int(part) < len(node.value):
            item = node.value[int(part)]
            return item, item.start_mark.line + 1
        return None
    if not isinstance(node, yaml.MappingNode):
        return None
    merged: list[yaml.Node] = []
    for key, value in node.value:
        if key.tag == _MERGE_TAG:
            merged.extend(value.value if isinstance(value, yaml.SequenceNode) else [value])
        elif isinstance(key, yaml.ScalarNode) and key.value == part:
            return value, key.start_mark.line + 1
    for mapping in merged:
        found = _child(mapping, part)
        if found is not None:
            return found
    return None
