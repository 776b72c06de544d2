"""The lone-surrogate walk (exporter.textrepair) costs memory in proportion to the document, not to its nesting:
a path string per list item, each as long as the nesting is deep, made a few KiB of gzip from a hub target (and a
700-character hub cursor) allocate GBs (hub review 2026-12-06). A path is written out for a hit only."""

from __future__ import annotations

import tracemalloc
from collections.abc import Callable
from typing import Any

import pytest

from exporter.textrepair import TooDeep, first_surrogate_path, surrogate_paths

DEPTH, WIDTH = 300, 100_000


def _nested(depth: int, leaves: list[Any]) -> list[Any]:
    """`leaves` inside `depth` lists, one in the other."""
    out: list[Any] = leaves
    for _ in range(depth - 1):
        out = [out]
    return out


def _peak(walk: Callable[[], Any]) -> tuple[Any, int]:
    """What `walk()` returns and the most memory it held at once (bytes)."""
    tracemalloc.start()
    try:
        got = walk()
        return got, tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_a_wide_deep_document_is_walked_in_memory_of_its_nesting_not_of_its_items():
    """100,000 numbers 300 lists deep with one lone surrogate after them: the walk wrote a 600-character path for
    each number (~100 MB); now it holds one place per level and writes out the path of the hit alone."""
    doc = {"a": _nested(DEPTH, [0] * WIDTH + ["x\ud800"])}
    where = "a" + ".0" * (DEPTH - 1) + f".{WIDTH}"
    got, peak = _peak(lambda: surrogate_paths(doc))
    assert got == [where]
    assert peak < 1024**2, f"{peak:,} bytes"
    assert first_surrogate_path(doc) == where


def test_the_first_hit_is_the_first_in_document_order_and_the_walk_stops_there():
    plain = {"sources": [{"name": "a\ud800", "paths": ["x", "y\udfff"]}], "k\udc00": {"z": "ok"}, "n": 3}
    assert first_surrogate_path(plain) == "sources.0.name"
    assert first_surrogate_path({"ok": ["fine", {"k": 1}]}) is None
    assert first_surrogate_path("\udfff") == "(top level)"
    many = [f"{i}\ud800" for i in range(WIDTH)]  # every item a hit: only the first path is written
    got, peak = _peak(lambda: first_surrogate_path(many))
    assert got == "0" and peak < 64 * 1024, f"{peak:,} bytes"


@pytest.mark.parametrize(("doc", "where"), [
    ({"a": [[["x"]]]}, "a.0.0"),
    ({"ok": [{"k": "v"}], "b": {"c": {"d": {}}}}, "b.c.d"),
    ([_nested(DEPTH, [0])], "0.0.0"),
])
def test_a_walk_bounded_in_depth_names_the_first_container_past_it(doc: Any, where: str):
    """A JSON answer whose model nests three levels is no answer nested deeper: the walk stops at the first
    container past its bound (named), before looking at what it holds."""
    with pytest.raises(TooDeep) as caught:
        first_surrogate_path(doc, max_depth=3, aliases=False)
    assert caught.value.where == where
    assert first_surrogate_path({"ok": [{"k": "v\ud800"}]}, max_depth=3) == "ok.0.k"
