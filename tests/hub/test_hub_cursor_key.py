"""A hub search cursor does not give back the recipient searched (privacy review 2026-12-06).

Its filters' fingerprint was an unkeyed 6-byte digest of the filters: whoever held the cursor (kept with the answer
by a proxy, Grafana or a browser's history) recovered the address from a list of candidates.
"""

from __future__ import annotations

import base64
import json
import subprocess
import sys
from hashlib import blake2b

from hub import search


def _printed_fingerprint() -> str:
    code = "from hub.search import fingerprint; print(fingerprint({'rcpt': 'alice@gmail.com'}))"
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()


def test_the_fingerprint_needs_the_hubs_key() -> None:
    filters = {"rcpt": "alice@gmail.com"}
    unkeyed = blake2b(json.dumps(filters, sort_keys=True).encode(), digest_size=6).hexdigest()
    assert search.fingerprint(filters) != unkeyed
    assert search.fingerprint(filters) == search.fingerprint(dict(filters))  # stable within one hub
    assert _printed_fingerprint() != _printed_fingerprint()  # each hub process has its own key


def test_a_cursor_holds_no_digest_a_dictionary_of_addresses_can_match() -> None:
    fp = search.fingerprint({"rcpt": "alice@gmail.com", "since": "1h"})
    candidates = [f"{name}@gmail.com" for name in ("bob", "carol", "alice", "dave")]
    guessed = [c for c in candidates
               if blake2b(json.dumps({"rcpt": c, "since": "1h"}, sort_keys=True).encode(),
                          digest_size=6).hexdigest() == fp]
    assert guessed == []
    assert base64.b16decode(fp.upper())  # still a 6-byte hex fingerprint


def test_a_message_cursor_needs_the_key_too() -> None:
    """A messages cursor carried an unkeyed digest of its Message-Id, the daemon's and the hub's alike: a Message-Id
    that embeds the recipient (`20240503.alice=gmail.com@news.example`) was given back to a list of candidates."""
    from correlator.api import _message_fingerprint
    from correlator.keys import RcptHasher
    from hub import messages

    mid = "20240503.alice=gmail.com@news.example"
    unkeyed = blake2b(json.dumps(["message", mid]).encode(), digest_size=6).hexdigest()
    assert _message_fingerprint(mid, RcptHasher()) == unkeyed  # hashing off: the cursors of before stay valid
    hashed = _message_fingerprint(mid, RcptHasher(b"k" * 32))
    assert hashed != unkeyed and hashed == _message_fingerprint(mid, RcptHasher(b"k" * 32))
    hub_unkeyed = blake2b(json.dumps(["hub-message", mid]).encode(), digest_size=6).hexdigest()
    assert messages.fingerprint(mid) != hub_unkeyed


def test_hubs_sharing_a_cursor_key_file_take_each_others_cursors(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """A key drawn at each start made every hub behind one address (docs/scaling.md: run as many as you like) and
    every restart refuse the others' cursors (regression review 2026-12-06): `hub.cursor_key_file` shares one."""
    key = tmp_path / "cursor.key"
    key.write_text("a shared secret of the operator's\n")
    code = ("import sys; from hub.config import HubConfig; from hub.app import build_hub_app; from hub import search; "
            "build_hub_app(HubConfig.model_validate({'hub': {'targets': ['http://127.0.0.1:9'], "
            "'cursor_key_file': sys.argv[1]}})); print(search.fingerprint({'rcpt': 'alice@gmail.com'}))")
    runs = [subprocess.run([sys.executable, "-c", code, str(key)], capture_output=True, text=True, check=True)
            .stdout.strip() for _ in range(2)]
    assert runs[0] == runs[1] and len(runs[0]) == 12
    assert runs[0] != _printed_fingerprint()
    from hub.config import HubConfig
    from hub.preflight import problems

    missing = HubConfig.model_validate({"hub": {"targets": ["http://127.0.0.1:9"],
                                                "cursor_key_file": str(tmp_path / "none.key")}})
    assert any("hub.cursor_key_file" in p for p in problems(missing))
    for text in (b"", b"  \n", b"short"):  # keyed with a constant anyone computes: refused
        key.write_bytes(text)
        found = [p for p in problems(missing.model_copy(update={"hub": missing.hub.model_copy(
            update={"cursor_key_file": key})})) if p.startswith("hub.cursor_key_file")]
        assert found == [f"hub.cursor_key_file: {key} holds {len(text.strip())} bytes, at least 16 are needed "
                         "(e.g. head -c 32 /dev/urandom > FILE)"], text
    key.write_bytes(bytes(range(256))[:32])  # random bytes, no text: taken
    assert not [p for p in problems(missing.model_copy(update={"hub": missing.hub.model_copy(
        update={"cursor_key_file": key})})) if p.startswith("hub.cursor_key_file")]
