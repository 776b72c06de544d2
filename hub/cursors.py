"""The hub's cursors: every host's place in a multi-page answer (search, a Message-Id's recipients) in one token, small
enough for the listener's 16 KiB request head with a thousand hosts.

Content: `{"f": fingerprint of the filters or Message-Id, "h": {host URL: place}, "n": the first page's clock (search),
"t": hosts at their top, "z": hosts with nothing more to give}`; what a place means is search.py's and messages.py's
business. A host done with nothing more to give (place 0: most hosts, for a Message-Id) is not named by its URL but by a
4-byte hash of it, in `z`. A current target neither in `h` nor in `z` is at its top (place `[null, 0]`: asked and
nothing of it handed out yet, or not asked yet): it needs a place only when it leaves the targets (it is then named
missing), so `t` says which targets the cursor was made for. While the cursor stays within TOP_SPELT_MAX characters, `t`
spells them out, front-coded (the URLs sorted, each as how many characters it shares with the one before and the rest):
read by any hub sharing the key. Longer (on the first pages of a big fleet nearly every host is at its top: 7-8
characters a host of unrelated names, deflated, left 2,000 hosts no second page), `t` is a keyed 8-byte digest of the
target list, which the hub remembers (`_LISTS`, the last MAX_LISTS lists it made or read cursors for): a few characters
in all. A digest the hub does not know (another hub behind the same address whose discovery sees another list, a restart
with hub.cursor_key_file, or more than MAX_LISTS lists since) is read as the current targets' list: a host that left the
targets meanwhile while at its top is then not named missing, as before hosts at their top kept a place. The two forms
read alike: a host `t` spells out that is no longer a target is at its top (named missing) only when the hub knows it, a
target of a list it remembers (`_KNOWN`), as a digest names only the hosts of a list it remembers; one it does not know
is read as under a digest it does not know. Hosts at their top that `t` says are not counted against MAX_AWAY and
MAX_AWAY_CHARS either way (they are hosts the hub had as targets, not names a cursor can make up). A host out of
the targets is named by its URL in `h`. Up to PLAIN_MAX characters the token is that JSON in base64, as a daemon's
cursors are; longer, the JSON is deflated first, each host's own cursor that is itself such a token stored as its JSON
(so the parts the hosts' cursors share compress). A cursor longer than CURSOR_BUDGET is not handed out: the page says
why; nor is one naming a host whose URL a cursor refuses (`_host_url`: the targets are checked so none does).
"""

from __future__ import annotations

import base64
import binascii
import json
import os
import secrets
import zlib
from collections import Counter, OrderedDict
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from hashlib import blake2b
from typing import Any
from urllib.parse import urlsplit

from correlator.api import BadRequest, _no_constant, decode_token, encode_token
from correlator.render import safe
from exporter.textrepair import first_surrogate_path, short_repr
from hub.targets import Target

CURSOR_KEY = secrets.token_bytes(32)
"""Keys the fingerprint a hub cursor carries of its search's filters or Message-Id. Unkeyed, a digest gave the
recipient searched back to anyone holding the cursor with a list of candidate addresses (100,000 tried in 0.27 s:
privacy review 2026-12-06); the hub keeps no key file, so a restarted hub refuses the cursors of the one before (400:
search again)."""

def fingerprint(value: Any) -> str:
    """A cursor's 6-byte fingerprint of what it pages (filters, a Message-Id), keyed with CURSOR_KEY."""
    return blake2b(json.dumps(value, sort_keys=True).encode(), key=CURSOR_KEY, digest_size=6).hexdigest()


NOT_ISSUED = ("cursor not issued by this hub for {these}: {differ}, or the hub restarted without hub.cursor_key_file; "
              "{again}")
"""The 400 on `cursor` when its fingerprint does not match. The hub cannot tell why: the filters (Message-Id) differ,
or the key changed (a restart, another hub behind the same address, without a shared `hub.cursor_key_file`)."""
OTHER_FILTERS = NOT_ISSUED.format(these="these filters", differ="the filters differ", again="start the search again")
OTHER_MESSAGE = NOT_ISSUED.format(these="this Message-Id", differ="the Message-Id differs",
                                  again="start again from the first page")


PLAIN_MAX = 1024
"""Characters up to which a cursor stays plain base64 JSON (readable as a daemon's cursor is)."""
CURSOR_BUDGET = 12 * 1024
"""Longest cursor handed out: the request head is at most 16 KiB (exporter.http.MAX_REQUEST_HEAD), and the path,
the other parameters and the headers (a browser's, a Referer is not sent: no-referrer) need the rest."""
MAX_HUB_CURSOR = 16_384
"""Longest cursor read (the listener lets no longer request head through anyway)."""
MAX_INFLATED = 512 * 1024
"""A deflated cursor's JSON is at most this long: a few KiB of deflate can inflate to GiBs. Room for some 2,500 hosts
handed out in part (a URL and a daemon's cursor each, ~200 characters): the targets are not bounded in number. What
it inflates to is checked for a cursor's shape first (`_shaped`): reading any 512 KiB then costs ~15 ms."""
KEYS = frozenset({"f", "h", "n", "t", "z"})
AT_TOP = [None, 0]
"""The place of a host asked and at its top (nothing of it handed out): said by `t`."""
TOP_SPELT_MAX = 2048
"""Longest cursor whose `t` spells out the targets' URLs (readable by any hub sharing the key); longer, a digest."""
LIST_BYTES = 8
MAX_LISTS = 256
"""Target lists remembered for the digests in `t` (a list is new only when discovery changes it)."""
MAX_LISTED = 500_000
"""Most URLs the remembered lists hold together (references to the targets' own strings: ~4 MB)."""
_LISTS: OrderedDict[bytes, tuple[str, ...]] = OrderedDict()
_UNNAMEABLE: dict[bytes, frozenset[str]] = {}
_KNOWN: dict[str, int] = {}
"""How many of the remembered lists hold each URL (`_remember`): a host a spelt-out `t` names that is no longer a target
is at its top only when it is here, as a digest says only the hosts of a remembered list (one entry per distinct URL of
those lists: ~1 MB at 10,000 hosts)."""
_listed = 0
CURSOR_DEPTH = 4
"""The deepest a cursor nests: its mapping, `h`, a place, a host's own cursor kept as its flat list (deflated form)."""
MAX_AWAY = 1000
"""Most hosts outside the current targets a cursor may hold a place for: each is named in missing_hosts, so a forged
cursor naming thousands (a few bytes each, deflated) made an answer some 20 times its size."""
MAX_AWAY_CHARS = 32 * 1024
"""Most characters of the URLs of those hosts: 1,000 forged names of 450 characters (a 5 KB cursor) made a 1 MB
answer."""
ZIPPED = b"\x01"
KEY_BYTES = 4
TOO_LONG = ("no next page: its cursor would be {length:,} characters, more than the {budget:,} a request to this hub "
            "may carry; narrow the search (since, until, rcpt, job_id, vmta, outcome), or split the hosts over "
            "several hubs")


def host_key(url: str) -> bytes:
    return blake2b(url.encode(), digest_size=KEY_BYTES).digest()


@dataclass
class Decoded:
    fp: str
    places: dict[str, Any]
    """Host URL -> place, the hosts of `z` that are among the current targets included (as 0)."""
    now: Any = None
    done_elsewhere: frozenset[bytes] = frozenset()
    """Keys in `z` of no current target: handed on as they are."""


def encode(fp: str, places: dict[str, Any], targets: list[Target], now: float | None = None,
           done_elsewhere: frozenset[bytes] = frozenset()) -> tuple[str | None, str | None]:
    """(cursor, None), or (None, why there is none) when it would be longer than CURSOR_BUDGET or would name a host
    whose URL decode() refuses. A current target without a place, or at its top, is said by `t`."""
    keys = {t.url: host_key(t.url) for t in targets}
    shared = {k for k, n in Counter(keys.values()).items() if n > 1}
    named: dict[str, Any] = {}
    done = set(done_elsewhere)
    for url, place in places.items():
        key = keys.get(url)
        if _is_zero(place) and key is not None and key not in shared:
            done.add(key)
        elif not (place == AT_TOP and key is not None):  # one out of the targets keeps its URL: named missing
            named[url] = place
    # the hosts it holds a place for out of the targets, as decode() counts them (a digest `t` adds none: it is of
    # these targets, so decode() with them reads no host at its top out of them)
    away = [url for url in named if url not in keys]
    beyond = _beyond_away(away)
    if beyond is not None:
        return None, AWAY_UNISSUED[beyond].format(count=len(away), chars=sum(map(len, away)),
                                                  most=MAX_AWAY if beyond == "hosts" else MAX_AWAY_CHARS)
    listed = tuple(sorted(keys))
    digest = _remember(listed)
    unnameable = _unnameable(digest, listed)  # the targets' URLs checked once per target list, not per page
    refused = next((url for url in named if (url in unnameable if url in keys else not _host_url(url))), None)
    if refused is not None:
        return None, UNNAMEABLE.format(url=safe(short_repr(refused)))
    value: dict[str, Any] = {"f": fp, "h": named}
    if now is not None:
        value["n"] = now
    if done:
        value["z"] = base64.b64encode(b"".join(sorted(done))).decode()
    top = sorted(url for url, key in keys.items() if url not in named and not (key in done and key not in shared))
    token = None
    if top:
        if unnameable.isdisjoint(top):
            token = _spelt(value, top)
        if token is None:
            token = _token({**value, "t": base64.b64encode(digest).decode()})
    else:
        token = _token(value)
    if len(token) > CURSOR_BUDGET:
        return None, TOO_LONG.format(length=len(token), budget=CURSOR_BUDGET)
    return token, None


UNNAMEABLE = "no next page: host {url} cannot be named in a cursor (it holds a control or invisible character)"
AWAY_UNISSUED = {
    "hosts": "no next page: its cursor would hold a place for {count:,} hosts that are not targets, more than the "
             "{most:,} a cursor may hold; ask for this page again once they are among the targets again",
    "chars": "no next page: its cursor would hold a place for hosts that are not targets in {chars:,} characters of "
             "their URLs, more than the {most:,} a cursor may hold; ask for this page again once they are among the "
             "targets again"}
"""Why a page has no next cursor when that cursor would be refused (`_beyond_away`): service discovery dropped more
hosts with a place (or at their top on the page before: each is then named missing and keeps a place) than a cursor
may name. Its own cursor still reads: asked again once discovery lists them, the page goes on."""
AWAY_REFUSED = {"hosts": f"cursor names more than {MAX_AWAY} hosts that are not targets",
                "chars": f"cursor names hosts that are not targets in more than {MAX_AWAY_CHARS:,} characters"}


def _beyond_away(away: list[str]) -> str | None:
    """Which limit the hosts a cursor holds a place for out of the current targets pass: "hosts" (MAX_AWAY), "chars"
    (MAX_AWAY_CHARS), or None. The one check of decode() (a 400) and encode() (no cursor, AWAY_UNISSUED)."""
    if len(away) > MAX_AWAY:
        return "hosts"
    if sum(map(len, away)) > MAX_AWAY_CHARS:
        return "chars"
    return None


def _spelt(value: dict[str, Any], top: list[str]) -> str | None:
    """The cursor `value` with `t` spelling out `top` (front-coded), or None when it would be longer than
    TOP_SPELT_MAX. Deflated as it is front-coded: the output deflate has given so far is the start of the whole, so
    once it alone is too long the rest is not coded (its first block: some 4,500 unrelated names of 10,000)."""
    flat = {**value, "h": {url: _unwrapped(place) for url, place in value["h"].items()}}
    deflate = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
    head = json.dumps(flat, separators=(",", ":"))[:-1] + ',"t":['  # `t` last, as in {**value, "t": ...}
    out = len(deflate.compress(head.encode()))
    coded: list[Any] = []
    chunk: list[str] = []
    for shared, rest in _fronts(top):
        chunk.append(f'{"," if coded else ""}{shared},{json.dumps(rest)}')
        coded += [shared, rest]
        if len(chunk) == 64:
            out += len(deflate.compress("".join(chunk).encode()))
            chunk = []
            if _b64_length(len(ZIPPED) + out) > TOP_SPELT_MAX:
                return None
    token = _token({**value, "t": coded})
    return token if len(token) <= TOP_SPELT_MAX else None


def _token(value: dict[str, Any]) -> str:
    token = encode_token(value)
    return _zipped(value) if len(token) > PLAIN_MAX else token


def _digest(urls: tuple[str, ...]) -> bytes:
    """A target list's digest (keyed: it says nothing of the list to one without the key)."""
    return blake2b("\n".join(urls).encode(), key=CURSOR_KEY, digest_size=LIST_BYTES).digest()


def _remember(urls: tuple[str, ...]) -> bytes:
    """The digest of a sorted target list, the list remembered under it (the most recent MAX_LISTS, MAX_LISTED)."""
    global _listed
    digest = _digest(urls)
    if digest in _LISTS:
        _LISTS.move_to_end(digest)
        return digest
    _LISTS[digest] = urls
    _listed += len(urls)
    for url in urls:  # (a list's URLs are distinct: the sorted URLs of a set of targets)
        _KNOWN[url] = _KNOWN.get(url, 0) + 1
    while len(_LISTS) > MAX_LISTS or (_listed > MAX_LISTED and len(_LISTS) > 1):
        gone, urls = _LISTS.popitem(last=False)
        _listed -= len(urls)
        _UNNAMEABLE.pop(gone, None)
        for url in urls:
            left = _KNOWN.get(url, 0) - 1
            if left > 0:
                _KNOWN[url] = left
            else:
                _KNOWN.pop(url, None)
    return digest


def _unnameable(digest: bytes, urls: tuple[str, ...]) -> frozenset[str]:
    """The URLs of the remembered target list `digest` that a cursor refuses (`_host_url`: none, as the targets are
    checked where they are read), checked once per list: per page, that was ~8 us a target on the event loop."""
    got = _UNNAMEABLE.get(digest)
    if got is None:
        got = frozenset(url for url in urls if not _host_url(url))
        _UNNAMEABLE[digest] = got  # (forgotten with its list: `_remember`, which every caller runs first)
    return got


def decode(cursor: str, targets: list[Target], valid_place: Callable[[Any], bool]) -> Decoded:
    """The content of a hub cursor, or a 400 naming `cursor` for anything that is not one (bounded in length,
    inflated size and nesting before anything else is read)."""
    value = _value(cursor)
    # its shape first (a forged deflated one inflates to 512 KiB of anything), then no lone surrogate: a host URL is
    # named in answers and a host cursor sent on (a 500 or a 503); the shape bounds that walk to CURSOR_DEPTH
    if not _shaped(value) or first_surrogate_path(value, max_depth=CURSOR_DEPTH, aliases=False) is not None:
        raise BadRequest(400, "malformed cursor", "cursor")
    try:
        return _decoded(value, targets, valid_place, _made_for(value.get("t"), targets), _spelt_top(value))
    except (TypeError, ValueError, KeyError, binascii.Error):
        raise BadRequest(400, "malformed cursor", "cursor") from None


def _value(cursor: str) -> Any:
    if len(cursor) > MAX_HUB_CURSOR:
        raise BadRequest(400, "malformed cursor", "cursor")
    try:
        raw = base64.b64decode(cursor + "=" * (-len(cursor) % 4), altchars=b"-_", validate=True)
    except (binascii.Error, ValueError):
        raise BadRequest(400, "malformed cursor", "cursor") from None
    if not raw.startswith(ZIPPED):
        return decode_token(cursor, max_chars=MAX_HUB_CURSOR, max_depth=3)
    try:
        inflate = zlib.decompressobj(-zlib.MAX_WBITS)
        text = inflate.decompress(raw[1:], MAX_INFLATED)
        if inflate.unconsumed_tail or not inflate.eof:
            raise ValueError("too long, or cut")
        return json.loads(text.decode("utf-8"), parse_constant=_no_constant)
    except (zlib.error, ValueError, RecursionError):
        raise BadRequest(400, "malformed cursor", "cursor") from None


def _shaped(value: Any) -> bool:
    """Has `value` a hub cursor's shape: a mapping of `f` (text), `h` (host -> place), `n` (a number) and `z`
    (text), each place flat (`_flat_place`)? Checked before anything walks it: no deeper than CURSOR_DEPTH, and what
    each place means is search.py's and messages.py's to check."""
    if not isinstance(value, dict) or not {"f", "h"} <= value.keys() <= KEYS:
        return False
    now = value.get("n")
    if not isinstance(value["f"], str) or not isinstance(value["h"], dict) or not isinstance(value.get("z", ""), str) \
            or (now is not None and (isinstance(now, bool) or not isinstance(now, int | float))):
        return False
    top = value.get("t", [])
    if isinstance(top, str):
        return all(_flat_place(place) for place in value["h"].values())
    if not isinstance(top, list) or len(top) % 2 or not all(
            type(n) is int and isinstance(rest, str) for n, rest in zip(top[::2], top[1::2], strict=True)):
        return False
    return all(_flat_place(place) for place in value["h"].values())


def _flat_place(place: Any) -> bool:
    """A count (`0`, a host's total), or [its own cursor: null, a token or that token's flat list; a count]."""
    if type(place) is int:
        return True
    if not (isinstance(place, list) and len(place) == 2 and type(place[1]) is int):
        return False
    own = place[0]
    return own is None or isinstance(own, str) or (isinstance(own, list) and all(map(_scalar, own)))


def _scalar(value: Any) -> bool:
    return isinstance(value, str | int | float | bool) or value is None


def _made_for(top: Any, targets: list[Target]) -> tuple[str, ...]:
    """The sorted URLs of the targets a cursor with digest `top` was made for: the current ones when it names them
    (or when the hub no longer knows it: see the module's doc); () for a cursor that spells its hosts out."""
    if not isinstance(top, str):
        return ()
    digest = base64.b64decode(top, validate=True)
    if len(digest) != LIST_BYTES:
        raise ValueError("targets")
    current = tuple(sorted({t.url for t in targets}))
    if _remember(current) == digest:
        return current
    return _LISTS.get(digest, current)


def _decoded(value: dict[str, Any], targets: list[Target], valid_place: Callable[[Any], bool],
             made_for: tuple[str, ...] = (), spelt: list[str] | None = None) -> Decoded:
    """The places of a cursor of `value`'s shape: `h`'s, then the hosts at their top `t` says, as `spelt` (the URLs a
    spelt-out `t` gives, `_spelt_top`) or as `made_for` (the list a digest `t` stands for, `_made_for`)."""
    current = {t.url for t in targets}
    # only the hosts `h` names count: those at their top that `t` says out of the targets (`made_for`'s, or
    # `spelt`'s that the hub knows) come from the hub's own remembered lists, not the cursor, which cannot make them
    # up; named missing on this page, they keep a place in its cursor, which encode() hands out only within these
    # limits. Counted, a cursor the hub handed out was a 400 once discovery dropped 1,001 hosts at their top.
    beyond = _beyond_away([url for url in value["h"] if url not in current])
    if beyond is not None:
        raise BadRequest(400, AWAY_REFUSED[beyond], "cursor")
    places = {}
    for url, place in value["h"].items():
        if not _host_url(url):  # named in missing_hosts when it is no longer a target: parsed for its name
            raise ValueError("host")
        place = _wrapped(place)
        if not valid_place(place):
            raise TypeError("place")
        places[url] = place
    for url in spelt or ():  # one the hub does not know is read as under a digest it does not know: not at its top
        if url in current or url in _KNOWN:  # (both targets' URLs, checked where read: `_host_url` not run again)
            places[url] = list(AT_TOP)
    raw = base64.b64decode(value.get("z", ""), validate=True)
    if len(raw) % KEY_BYTES:
        raise ValueError("keys")
    done = {raw[i:i + KEY_BYTES] for i in range(0, len(raw), KEY_BYTES)}
    by_key: dict[bytes, list[str]] = {}
    for t in targets:
        by_key.setdefault(host_key(t.url), []).append(t.url)
    for key in done:
        urls = by_key.get(key, [])
        if len(urls) == 1:  # (two current targets of one key: neither is taken for done)
            places.setdefault(urls[0], 0)
    elsewhere = frozenset(k for k in done if k not in by_key)
    listed = {url: host_key(url) for url in made_for}
    shared = {k for k, n in Counter(listed.values()).items() if n > 1}
    for url, key in listed.items():  # the targets it was made for neither in `h` nor in `z`: at their top
        if url not in places and (key not in done or key in shared):
            places[url] = list(AT_TOP)
    return Decoded(value["f"], places, value.get("n"), elsewhere)


def _front_coded(urls: list[str]) -> list[Any]:
    """`[shared, rest, ...]` per URL: how many leading characters it shares with the URL before it, and the rest."""
    return [part for entry in _fronts(urls) for part in entry]


def _fronts(urls: list[str]) -> Iterator[tuple[int, str]]:
    """(shared, rest) per URL, one at a time (`_front_coded`)."""
    before = ""
    for url in urls:
        shared = len(os.path.commonprefix((before, url)))
        yield shared, url[shared:]
        before = url


def _b64_length(size: int) -> int:
    """Characters of `size` bytes in unpadded base64."""
    return (4 * size + 2) // 3


def _spelt_top(value: dict[str, Any]) -> list[str]:
    """The URLs of the hosts at their top that `t` spells out ([] for a digest). ValueError on a prefix that is not
    one, a URL twice (or named in `h` too), or more than MAX_INFLATED characters of URLs: a forged `t` of short
    entries sharing long prefixes would spell out GiBs."""
    coded = value.get("t")
    if not coded or isinstance(coded, str):
        return []
    named = value["h"]
    urls: list[str] = []
    seen: set[str] = set()
    before, spelt = "", 0
    for shared, rest in zip(coded[::2], coded[1::2], strict=True):
        if not 0 <= shared <= len(before):
            raise ValueError("prefix")
        url = before[:shared] + rest
        spelt += len(url)
        if spelt > MAX_INFLATED or url in named or url in seen:
            raise ValueError("hosts at their top")
        seen.add(url)
        urls.append(url)
        before = url
    return urls


def _host_url(url: Any) -> bool:
    """Is a cursor's host key an http(s) URL with a host, as every target's is? None holds a control character: a
    host that left the targets is named (by its URL's host) in missing_hosts and text answers, so a forged one
    carried terminal escapes there (urlsplit keeps them, and drops tabs and newlines unseen)."""
    if isinstance(url, str) and safe(url) != url:
        return False
    try:
        parts = urlsplit(url)
        return parts.scheme in ("http", "https") and bool(parts.hostname)
    except (TypeError, ValueError):
        return False


def _is_zero(place: Any) -> bool:
    return type(place) is int and place == 0


# --- deflated form: a host's own cursor that is a token of a flat JSON list is kept as that list -----------------


def _zipped(value: dict[str, Any]) -> str:
    flat = {**value, "h": {url: _unwrapped(place) for url, place in value["h"].items()}}
    deflate = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
    raw = ZIPPED + deflate.compress(json.dumps(flat, separators=(",", ":")).encode()) + deflate.flush()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _unwrapped(place: Any) -> Any:
    if isinstance(place, list) and len(place) == 2 and isinstance(place[0], str):
        inner = _token_list(place[0])
        if inner is not None:
            return [inner, place[1]]
    return place


def _wrapped(place: Any) -> Any:
    if isinstance(place, list) and len(place) == 2 and isinstance(place[0], list):
        return [encode_token(place[0]), place[1]]
    return place


def _token_list(token: str) -> list[Any] | None:
    """The flat JSON list `token` encodes, if re-encoding it gives `token` back exactly (else it stays a string)."""
    try:
        value = json.loads(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
        flat = isinstance(value, list) and all(map(_scalar, value))
        return value if flat and encode_token(value) == token else None
    except (ValueError, RecursionError, binascii.Error):
        return None
