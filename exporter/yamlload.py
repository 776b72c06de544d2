"""The YAML loader of the config files (the daemon's and the hub's): PyYAML's SafeLoader, with what an operator's
file must not do refused before anything is built, each with its line: a key repeated in one mapping (PyYAML keeps
the last one silently), `<<` twice, an alias to a node that holds it, and merges that copy without bound.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import yaml

from exporter.textrepair import shown_user

TOO_DEEP = "nested too deeply (past Python's recursion limit)"
"""A YAML or JSON file an operator writes, nested past what a recursive parser can read: one line, no traceback."""


class _Checked:
    """A SafeLoader's document checked before anything is built (`_check_merges`), its mappings by `_unique_mapping`."""

    def construct_document(self, node: yaml.Node) -> Any:
        _check_merges(node)
        _check_expansion(node)
        return super().construct_document(node)  # type: ignore[misc]


class UniqueKeyLoader(_Checked, yaml.SafeLoader):
    """SafeLoader that refuses a key repeated in one mapping (PyYAML silently keeps the last one), and checks a
    document's merge keys before anything is built."""


class UniqueKeyCLoader(_Checked, getattr(yaml, "CSafeLoader", yaml.SafeLoader)):  # type: ignore[misc]
    """UniqueKeyLoader's checks over libyaml's parser, where PyYAML has it: an operator's classification tables (up
    to a few MiB, read again at each SIGHUP) refused a repeated key (a second `providers:` dropped the first)
    nor bounded their merges (2,000 copies of a 9,999-key anchor held the event loop 33 s)."""


MERGE_TAG = "tag:yaml.org,2002:merge"
"""The tag of a merge key (`<<: *anchor`): YAML's own, handled apart by every walk of a document's nodes."""
MAX_MERGED_KEYS = 100_000
"""Keys a config's merges may copy in all: merges of merges multiply (ten aliases a level, eight levels: 10**8 keys,
which PyYAML before 6.0.2 builds), and mappings each merging one big anchor add up (each copies it)."""


def _check_merges(root: yaml.Node) -> None:
    """Every mapping's own keys (as written: PyYAML's flattening adds the merged ones to a merged mapping) repeated,
    `<<` twice in one mapping, merges copying more than MAX_MERGED_KEYS keys in all, or an alias to a mapping or list
    holding it, refused as a repeated key is, before anything is built: checked on the document as composed, each
    node once. A config is a tree: a cycle (through a key, a value or a merge) made PyYAML walk a mapping's pairs once
    per alias in whatever order it builds them (a 139 kB file: 21.7 s), which no count in another order bounds."""
    mappings = _mappings_of_tree(root)
    merged = {id(m) for node in mappings for k, v in node.value if k.tag == MERGE_TAG
              for m in (v.value if isinstance(v, yaml.SequenceNode) else [v])}
    sizes: dict[int, int] = {}
    total = 0
    for node in sorted(mappings, key=lambda m: m.start_mark.index):  # in file order: the mapping named is the one
        # where the copies pass the bound
        merges = [(k, v) for k, v in node.value if k.tag == MERGE_TAG]
        _own_keys_once(node, merges, id(node) in merged)
        if merges:
            total += _flattened_size(node, sizes) - (len(node.value) - len(merges))
            if total > MAX_MERGED_KEYS:
                raise yaml.constructor.ConstructorError(
                    None, None, f"merges copy more than {MAX_MERGED_KEYS:,} keys in all", merges[0][0].start_mark)


def _mappings_of_tree(root: yaml.Node) -> list[yaml.MappingNode]:
    """Every mapping of the document, each once; an alias to a node that holds it refused (depth first, no recursion:
    the nesting may be deep)."""
    mappings: list[yaml.MappingNode] = []
    done: set[int] = set()
    open_: set[int] = set()
    stack: list[tuple[yaml.Node, Iterator[yaml.Node]]] = []

    def enter(node: yaml.Node) -> None:
        if id(node) in open_:
            raise yaml.constructor.ConstructorError(None, None, "an alias refers to a mapping or list that holds it (a "
                                                    "config is a tree of values)", node.start_mark)
        if id(node) in done or not isinstance(node, yaml.MappingNode | yaml.SequenceNode):
            return
        open_.add(id(node))
        if isinstance(node, yaml.MappingNode):
            mappings.append(node)
            stack.append((node, (n for pair in node.value for n in pair)))
        else:
            stack.append((node, iter(node.value)))

    enter(root)
    while stack:
        node, children = stack[-1]
        child = next(children, None)
        if child is None:
            stack.pop()
            open_.discard(id(node))
            done.add(id(node))
        else:
            enter(child)
    return mappings


def _own_keys_once(node: yaml.MappingNode, merges: list[tuple[yaml.Node, yaml.Node]], is_merged: bool) -> None:
    """`<<` twice in `node`, or, in a mapping merged into another, a key written twice: refused. A mapping built is
    checked by `_unique_mapping`; one only merged is never built, so its keys are looked at here."""
    if len(merges) > 1:
        raise yaml.constructor.ConstructorError(None, None, "merge key `<<` repeated in one mapping (give one `<<` a "
                                                "list of the mappings to merge)", merges[1][0].start_mark)
    if not is_merged:
        return
    lines: dict[tuple[str, str], int] = {}
    for key_node, _ in node.value:
        if key_node.tag == MERGE_TAG or not isinstance(key_node, yaml.ScalarNode):
            continue
        ident, line = (key_node.tag, key_node.value), key_node.start_mark.line + 1
        if ident in lines:
            raise yaml.constructor.ConstructorError(
                None, None, f"duplicate key {_shown_key(key_node.value)} (first on line {lines[ident]}, again on line "
                f"{line})",
                key_node.start_mark)
        lines[ident] = line


def _shown_key(key: Any) -> str:
    """A repeated key as its problem quotes it: up to its first `:` (a basic-auth user name `admin:hunter2` pasted
    with its password: what follows the `:` is never shown)."""
    return repr(shown_user(key)) if isinstance(key, str) else shown_user(repr(key))


def _flattened_size(node: yaml.MappingNode, sizes: dict[int, int]) -> int:
    """The pairs `node` holds once its merges are flattened, without building them (at most MAX_MERGED_KEYS + 1: past
    that the caller refuses)."""
    if id(node) in sizes:
        return sizes[id(node)]
    sizes[id(node)] = sum(1 for key_node, _ in node.value if key_node.tag != MERGE_TAG)  # (no cycle gets here:
    # `_mappings_of_tree` refused it; a guard all the same)
    size = 0
    for key_node, value in node.value:
        if key_node.tag != MERGE_TAG:
            size += 1
            continue
        for merged in value.value if isinstance(value, yaml.SequenceNode) else [value]:
            if isinstance(merged, yaml.MappingNode):
                size = min(size + _flattened_size(merged, sizes), MAX_MERGED_KEYS + 1)
    sizes[id(node)] = size
    return size


def _unique_mapping(loader: UniqueKeyLoader, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
    """The mapping, a key repeated among its own refused. A merge key (`<<: *anchor`) is YAML's own: the base
    constructor merges it, the mapping's own keys overriding the merged ones (constructed here, it was refused as
    an unknown tag; which of two merged mappings giving one key wins is PyYAML's choice); the document's merges
    were checked before (`_check_merges`)."""
    seen: dict[Any, int] = {}
    for key_node, _ in node.value:
        if key_node.tag == MERGE_TAG:
            continue
        key = loader.construct_object(key_node, deep=deep)
        line = key_node.start_mark.line + 1
        try:
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"duplicate key {_shown_key(key)} (first on line {seen[key]}, again on line {line})",
                    key_node.start_mark)
            seen[key] = line
        except TypeError:  # unhashable key: let the base constructor report it
            break
    return loader.construct_mapping(node, deep=deep)


for _loader in (UniqueKeyLoader, UniqueKeyCLoader):
    _loader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _unique_mapping)


MAX_ALIASED_VALUES = 1_000_000
"""Values a document's aliases may add to what it writes, in all, every 10 characters of a text counting as one
more: each `*alias` stands for all its anchor holds, and whatever reads the document walks it once per alias (1 MiB
of `- *b`, `b` a mapping of 3,000 keys: 750 M values, one error each to the config's checks, which ran out of memory
at 24 GB; a 2 MiB example of a replies table aliased 690,000 times: each searched in full, hours: reviews
2026-12-07)."""
CHARACTERS_A_VALUE = 10


def _check_expansion(root: yaml.Node) -> None:
    """A document whose aliases expand it by more than MAX_ALIASED_VALUES values refused, naming the list or mapping
    where the repeats add up (the largest expansion whose parts are each within the bound), before anything is
    built. Each node is counted once (`_expanded_sizes`); cycles were refused before (`_check_merges`)."""
    sizes, written = _expanded_sizes(root)
    if sizes[id(root)] - written <= MAX_ALIASED_VALUES:
        return
    node = root
    while True:
        children = _children(node)
        largest = max(children, key=lambda child: sizes[id(child)], default=None)
        if largest is None or sizes[id(largest)] - written <= MAX_ALIASED_VALUES:
            break
        node = largest
    raise yaml.constructor.ConstructorError(
        None, None, f"aliases expand this to more than {MAX_ALIASED_VALUES:,} values more than the file writes "
        f"(each `*alias` stands for all its anchor holds; {CHARACTERS_A_VALUE} characters of a text count as one "
        "value)", node.start_mark)


def _children(node: yaml.Node) -> list[yaml.Node]:
    if isinstance(node, yaml.MappingNode):
        return [n for pair in node.value for n in pair]
    return list(node.value) if isinstance(node, yaml.SequenceNode) else []


def _weight(node: yaml.Node) -> int:
    """One value, and one more every CHARACTERS_A_VALUE characters of a text."""
    return 1 + len(node.value) // CHARACTERS_A_VALUE if isinstance(node, yaml.ScalarNode) else 1


def _expanded_sizes(root: yaml.Node) -> tuple[dict[int, int], int]:
    """Each node's size with its aliases expanded (its weight and all it holds, by id), capped just past the bound,
    and what the document writes (each node's weight once). Depth first without recursion (the nesting may be deep),
    each node once; capped, a size stays a small number (anchors each holding the one before twice made sizes of
    2**n: 1.8 GB for a 4 MB table before the refusal, review 2026-12-07)."""
    order: list[yaml.Node] = []  # children before the nodes that hold them
    seen: set[int] = set()
    stack: list[tuple[yaml.Node, bool]] = [(root, False)]
    while stack:
        node, done = stack.pop()
        if done:
            order.append(node)
            continue
        if id(node) in seen:
            continue
        seen.add(id(node))
        stack.append((node, True))
        stack.extend((child, False) for child in _children(node) if id(child) not in seen)
    written = sum(_weight(node) for node in order)
    cap = MAX_ALIASED_VALUES + written + 1
    sizes: dict[int, int] = {}
    for node in order:
        sizes[id(node)] = min(cap, _weight(node) + sum(sizes[id(child)] for child in _children(node)))
    return sizes, written
