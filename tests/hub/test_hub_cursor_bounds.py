"""A forged deflated cursor costs the hub what its shape allows, not what it inflates to (hub review 2026-12-06): a
700-character cursor inflating to 512 KiB of lists nested 900 deep was walked for lone surrogates first, a path
string per item (~0.5 GB, ~1 s of the event loop per request). Its shape (a mapping of f, h, n, z; flat places) is
checked first, as the plain form's nesting is; each is the same 400 "malformed cursor"."""

from __future__ import annotations

import base64
import json
import tracemalloc
import zlib
from collections.abc import Callable
from typing import Any

import pytest

from correlator.api import BadRequest
from hub import cursors, messages, search
from hub.targets import Target
from tests.hub.fakes import EMPTY_SEARCH, FakeHosts, Reply, running_hub


def zipped(text: str) -> str:
    deflate = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
    raw = cursors.ZIPPED + deflate.compress(text.encode()) + deflate.flush()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def nested(depth: int) -> str:
    """A deflated cursor of lists `depth` deep holding as many zeros as fit the inflated bound."""
    n = (cursors.MAX_INFLATED - 2 * depth) // 2 - 1
    return zipped("[" * depth + ",".join(["0"] * n) + "]" * depth)


def place(value: Any) -> str:
    """A deflated cursor of the right keys, one host's place being `value`."""
    return zipped(json.dumps({"f": search.fingerprint({}), "h": {"http://a:1": value}}))


def _peak(work: Callable[[], Any]) -> tuple[Any, int]:
    tracemalloc.start()
    try:
        try:
            got: Any = work()
        except BadRequest as exc:
            got = (exc.status, exc.error, exc.parameter)
        return got, tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


MALFORMED = (400, "malformed cursor", "cursor")
FORGED = [nested(900), nested(1), place(json.loads("[" * 400 + "0" + "]" * 400)), place([[[0]], 0]),
          place([[0], 0, 0]), zipped('{"f": "x", "h": {}, "q": [[[[[0]]]]]}'),
          zipped('{"f": "x", "h": {}, "n": [0]}'), zipped('{"f": "x", "h": {}, "z": [0]}'),
          zipped(json.dumps({"f": "x", "h": {}, "y": "\ud800"}))]


@pytest.mark.parametrize("cursor", FORGED, ids=["deep", "flat", "deep-place", "nested-place", "long-place",
                                                "other-key", "n-list", "z-list", "surrogate-key"])
@pytest.mark.parametrize("decode", [
    lambda c: search.decode_cursor(c, search.fingerprint({}), [Target("a", "http://a:1")]),
    lambda c: messages._decode(c, messages.fingerprint("m@x"), [Target("a", "http://a:1")]),
], ids=["search", "messages"])
def test_a_forged_deflated_cursor_is_a_400_read_in_memory_of_its_inflated_size(cursor: str, decode: Any):
    got, peak = _peak(lambda: decode(cursor))
    assert got == MALFORMED
    assert peak < 16 * cursors.MAX_INFLATED, f"{peak:,} bytes"


async def test_a_forged_cursor_nested_900_deep_is_a_400_on_every_paged_route():
    cursor = nested(900)
    async with FakeHosts(lambda req: Reply(body=EMPTY_SEARCH)) as fleet, \
            running_hub({"targets": [{"url": fleet.url("a"), "name": "a"}]}) as hub:
        answers = [await hub.get("/api/v1/search", params={"cursor": cursor}),
                   await hub.get("/api/v1/messages/m@x", params={"cursor": cursor})]
    for r in answers:
        assert (r.status_code, r.json()["error"], r.json()["parameter"]) == MALFORMED
    assert fleet.requests == []


def test_a_real_deflated_cursor_still_reads_back():
    """The shape check takes what the hub writes: places of hosts' own cursors kept as flat lists, done hosts in
    `z`, the first page's clock in `n`."""
    from correlator.api import encode_token

    targets = [Target(f"h{i}", f"http://h{i}.example:9469") for i in range(80)]
    places: dict[str, Any] = {t.url: [encode_token([1767225600.5 + i, i, "abc", 1767225700.0]), i % 3]
                              for i, t in enumerate(targets[:40])}
    places.update({t.url: 0 for t in targets[40:]})
    places[targets[0].url] = [None, 2]
    token, problem = cursors.encode(search.fingerprint({}), places, targets, now=1767225700.0)
    assert problem is None and token is not None
    assert base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))[:1] == cursors.ZIPPED
    got = search.decode_cursor(token, search.fingerprint({}), targets)
    assert (got.places, got.now) == (places, 1767225700.0)
