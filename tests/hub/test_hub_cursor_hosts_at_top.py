"""From the cursor review (2026-12-07): a host asked and still at its top was spelt out by URL in the hub cursor
(front-coded, `t`): on page 1 nearly every host is, and unrelated names cost 7-8 characters each even deflated, so a
fleet of 2,000 hosts got no second page (`would be 16,467 characters`). Past TOP_SPELT_MAX `t` is a digest of the
target list the hub remembers: pages go on as far as before hosts at their top kept a place, and a host that leaves the
targets while at its top is still named missing."""

from __future__ import annotations

import json
import random
import zlib
from base64 import urlsafe_b64decode
from typing import Any

import pytest

from correlator.api import encode_token
from hub import cursors
from hub.targets import Target

NOW = 1767225700.0


def _fleet(n: int) -> list[Target]:
    rnd = random.Random(7)
    urls = sorted({f"http://mta-{rnd.getrandbits(32):08x}.mail.example.com:9465" for _ in range(n)})
    return [Target(u.removeprefix("http://"), u) for u in urls]


def _place(i: int) -> list[Any]:
    return [encode_token([1767225600.5 + i, i, "abc", NOW]), 0]


def _pages(targets: list[Target], at_top: bool) -> tuple[int, int]:
    """(page 1's cursor length, the last page with a next cursor): page k has handed out 50 * k hosts in part; the
    rest asked and at their top (`at_top`), or left out as before they kept a place."""
    order = [t.url for t in targets]
    random.Random(8).shuffle(order)
    first, last = 0, 0
    for page in range(1, len(targets) // 50 + 1):
        in_part = {u: _place(i) for i, u in enumerate(order[:50 * page])}
        places = {t.url: [None, 0] for t in targets} | in_part if at_top else in_part
        token, _ = cursors.encode(cursors.fingerprint({}), places, targets, now=NOW)
        if token is None:
            break
        first, last = first or len(token), page
    return first, last


def _content(cursor: str) -> dict[str, Any]:
    raw = urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
    if raw[:1] == b"{":
        return json.loads(raw)  # type: ignore[no-any-return]
    return json.loads(zlib.decompressobj(-zlib.MAX_WBITS).decompress(raw[1:]))  # type: ignore[no-any-return]


def test_2000_unrelated_hosts_at_their_top_page_on_as_far_as_when_they_kept_no_place():
    targets = _fleet(2000)
    before_first, before_last = _pages(targets, at_top=False)
    first, last = _pages(targets, at_top=True)
    assert (before_last, last) == (15, 15)
    assert first - before_first <= 20  # (the digest: 12 characters of JSON)


def test_1000_hosts_at_their_top_cost_a_digest_not_a_name_each():
    targets = _fleet(1000)
    token, problem = cursors.encode("fp", {t.url: [None, 0] for t in targets}, targets)
    assert problem is None and token is not None
    assert (len(token), len(_content(token)["t"])) == (48, 12)


def _cursor_for(targets: list[Target], top: list[str]) -> str:
    places: dict[str, Any] = {t.url: _place(i) for i, t in enumerate(targets)}
    places |= {url: [None, 0] for url in top}
    token, _ = cursors.encode("fp", places, targets)
    assert token is not None and isinstance(_content(token)["t"], str)  # the digest form
    return token


def test_a_host_at_its_top_that_left_the_targets_is_named_from_the_remembered_list():
    targets = _fleet(400)
    token = _cursor_for(targets, [targets[5].url, targets[6].url])
    now = targets[:5] + targets[6:]  # 5 left (at its top), as did nothing else
    got = cursors.decode(token, now, lambda p: True)
    assert (got.places[targets[5].url], got.places[targets[6].url]) == ([None, 0], [None, 0])
    assert len(got.places) == 400


def test_a_host_back_in_the_targets_takes_its_place_again_and_a_new_one_starts_at_its_top():
    targets = _fleet(400)
    token = _cursor_for(targets, [targets[5].url])
    new = Target("new.example:1", "http://new.example:1")
    got = cursors.decode(token, [*targets, new], lambda p: True)
    assert new.url not in got.places and got.places[targets[5].url] == [None, 0] and len(got.places) == 400


def test_a_digest_the_hub_no_longer_knows_is_read_as_the_current_targets(monkeypatch: pytest.MonkeyPatch):
    """Documented: a host that left while at its top is then not named missing (a restart with a shared key, another
    hub, or more than MAX_LISTS target lists since)."""
    targets = _fleet(400)
    token = _cursor_for(targets, [targets[5].url])
    monkeypatch.setattr(cursors, "_LISTS", type(cursors._LISTS)())
    now = targets[:5] + targets[6:]
    got = cursors.decode(token, now, lambda p: True)
    assert targets[5].url not in got.places and len(got.places) == 399


@pytest.mark.parametrize("t", ["", "AAAA", "AAAAAAAAAAAA====", "!!!!!!!!!!!!", "AAAAAAAAAAAAAAAA"])
def test_a_forged_digest_is_a_400(t: str):
    from correlator.api import BadRequest

    token = encode_token({"f": "fp", "h": {}, "t": t or "A"})
    with pytest.raises(BadRequest) as exc:
        cursors.decode(token, [Target("a", "http://a.example")], lambda p: True)
    assert (exc.value.status, exc.value.parameter) == (400, "cursor")
