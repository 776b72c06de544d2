"""With hash_recipients, the Message-Id and jobId keys (mid_h, job_h) are keyed with the store's HMAC key.

They were plain blake2b of the raw Message-Id, jobId and (without a jobId) sender + timeQueued, while the stored texts
keep everything but the recipient's address (`<rcpt>.1234@shop.example`, `bounce-<rcpt>@news.shop.example`) and
t_queued is stored: anyone holding only a copy of the database could fill `<rcpt>` with guessed addresses, hash them
and compare (a reviewer confirmed 100k candidates in 1.1 s). A store written before keeps its unkeyed keys (they
cannot be computed again from redacted texts) and says so once at start.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
from pathlib import Path

import pytest

from correlator import store
from correlator.keys import (
    LINKS_AS_WRITTEN,
    LINKS_KEYED,
    LINKS_UNKEYED,
    h64,
    job_hash,
    message_hash,
    mid_key,
    queued_hash,
)
from exporter.config import CorrelatorConfig
from tests.test_correlator_support import Harness, batch

T_QUEUED = 1714557600.0  # 2024-05-01 10:00:00 UTC
CLOCK = T_QUEUED + 3600
ALICE, BOB, ZOE = "alice.secret@example.com", "bob.hidden@example.net", "zoe.verp@example.org"
MID_A = "alice.secret=example.com.1234@shop.example"  # the Message-Id embeds the recipient (VERP-encoded)
JOB_B = "job-bob.hidden=example.net"  # so does the jobId
VERP_Z = "bounce-zoe.verp=example.org@news.shop.example"  # no jobId: sender + timeQueued key the message
DELIVERIES = batch("/l/acct-2024-05-01-0000.csv", f"""
type,timeLogged,timeQueued,orig,rcpt,dsnAction,dsnStatus,dsnDiag,dsnMta,bounceCat,vmta,jobId,queue,vmtaPool,\
header_Message-Id
d,2024-05-01 10:00:05+0000,2024-05-01 10:00:00+0000,news@shop.example,{ALICE},relayed,2.0.0,smtp;250 ok,\
mx.example.com (1.2.3.4),,vmta-a,JA,example.com/vmta-a,pool-a,<{MID_A}>
d,2024-05-01 10:00:06+0000,2024-05-01 10:00:00+0000,news@shop.example,{BOB},relayed,2.0.0,smtp;250 ok,\
mx.example.net (1.2.3.4),,vmta-b,{JOB_B},example.net/vmta-b,pool-b,<plain.1@shop.example>
d,2024-05-01 10:00:07+0000,2024-05-01 10:00:00+0000,{VERP_Z},{ZOE},relayed,2.0.0,smtp;250 ok,\
mx.example.org (1.2.3.4),,vmta-z,,example.org/vmta-z,pool-z,
""")
OTHER = batch("/l/acct-2024-05-01-0001.csv", """
type,timeLogged,timeQueued,orig,rcpt,dsnAction,dsnStatus,dsnDiag,dsnMta,bounceCat,vmta,jobId,queue,vmtaPool
d,2024-05-01 10:01:05+0000,2024-05-01 10:01:00+0000,x@news.example,carl@yahoo.com,relayed,2.0.0,smtp;250 ok,\
mx.yahoo.com (1.2.3.4),,vmta-o,JO,yahoo.com/vmta-o,pool-o
""")
COMPLAINT = batch("/l/fbl-2024-05-01-0000.csv", f"""
type,timeLogged,orig,rcpt,feedbackType,userAgent,reportingMta,header_Message-Id
f,2024-05-01 10:30:00+0000,news@shop.example,,abuse,UA,fbl.example,<{MID_A}>
""")
CANDIDATES = [f"user{i}@example.com" for i in range(300)] + [ALICE, BOB, ZOE, "bob@gmail.com"]


def _hashed(tmp_path: Path) -> Harness:
    return Harness(tmp_path, CorrelatorConfig(hash_recipients=True, hmac_key_file=tmp_path / "hmac.key"),
                   clock=lambda: CLOCK)


def _guessed(db: Path) -> list[tuple[str, str]]:
    """The reviewer's attack (only the database file, no key): fill `<rcpt>` of each stored Message-Id, jobId or
    sender with each candidate (as written and VERP-encoded), hash as the unkeyed scheme does, compare."""
    found = []
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    rows = conn.execute("SELECT mid_h, message_id, job_h, job_id, orig, t_queued FROM corr_timelines").fetchall()
    conn.close()
    for mid_h, mid, job_h, job, orig, tq in rows:
        for c in CANDIDATES:
            local, _, dom = c.rpartition("@")
            for form in (c, f"{local}={dom}"):
                if mid and "<rcpt>" in mid and mid_h == h64("m\0" + mid_key(mid.replace("<rcpt>", form))):
                    found.append((c, "mid_h"))
                if job and "<rcpt>" in job and job_h == h64("j\0" + job.replace("<rcpt>", form)):
                    found.append((c, "job_h"))
                if not job and orig and "<rcpt>" in orig and tq is not None and \
                        job_h == h64(f"q\0{orig.replace('<rcpt>', form)}\0{tq:.0f}"):
                    found.append((c, "queued"))
    return found


def test_a_copy_of_the_store_does_not_confirm_guessed_recipients(tmp_path: Path) -> None:
    h = _hashed(tmp_path)
    h.commit(DELIVERIES)
    h.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    texts = h.conn.execute("SELECT message_id, job_id, orig FROM corr_timelines ORDER BY id").fetchall()
    meta = h.conn.execute("SELECT value FROM corr_meta WHERE key = ?", (store.LINK_KEYS,)).fetchone()
    h.close()
    # the precondition of the attack: the texts keep all but the recipient's address
    assert texts == [("<rcpt>.1234@shop.example", "JA", "news@shop.example"),
                     ("plain.1@shop.example", "job-<rcpt>", "news@shop.example"),
                     (None, None, "bounce-<rcpt>@news.shop.example")]
    assert meta == (LINKS_KEYED,)
    assert _guessed(h.db) == []  # before the fix: alice via mid_h, bob via job_h, zoe via the queued hash


async def test_lookups_by_message_id_and_job_id_work_with_hashing_on(tmp_path: Path) -> None:
    h = _hashed(tmp_path)
    h.commit(DELIVERIES)
    async with h.client() as c:
        by_mid = await c.get(f"/api/v1/messages/<{MID_A}>")
        by_job = await c.get("/api/v1/timeline", params={"rcpt": BOB, "job_id": JOB_B})
        by_mid_rcpt = await c.get("/api/v1/timeline", params={"rcpt": ALICE, "message_id": MID_A})
        search = await c.get("/api/v1/search", params={"job_id": JOB_B, "since": "3650d"})
        lookup = await c.get("/api/v1/lookup", params={"message_id": MID_A})
        lookup_job = await c.get("/api/v1/lookup", params={"job_id": JOB_B, "rcpt": BOB})
        missing = await c.get("/api/v1/messages/nobody.1234@shop.example")
    h.close()
    assert [r.status_code for r in (by_mid, by_job, by_mid_rcpt, search, lookup, lookup_job)] == [200] * 6
    assert [t["vmta"] for t in by_mid.json()["recipients"]] == ["vmta-a"]
    assert [t["vmta"] for t in by_job.json()["timelines"]] == ["vmta-b"]
    assert [t["vmta"] for t in by_mid_rcpt.json()["timelines"]] == ["vmta-a"]
    assert [t["vmta"] for t in search.json()["items"]] == ["vmta-b"]
    assert [t["vmta"] for t in lookup.json()["timelines"]] == ["vmta-a"]
    assert [t["vmta"] for t in lookup_job.json()["timelines"]] == ["vmta-b"]
    assert missing.status_code == 404


def test_a_report_with_only_a_message_id_joins_its_delivery(tmp_path: Path) -> None:
    h = _hashed(tmp_path)
    h.commit(DELIVERIES)
    h.commit(OTHER)  # the first write known committed: its deliveries leave memory, attribution reads the store
    h.commit(OTHER)
    got = h.sink.lookup_vmta(COMPLAINT.columns, COMPLAINT.rows)
    h.commit(COMPLAINT)
    f = store.FLAG[store.TYPE_CODES["f"]]
    rows = h.conn.execute("SELECT vmta, flags & ? != 0 FROM corr_timelines WHERE vmta = 'vmta-a'", (f,)).fetchall()
    count = h.conn.execute("SELECT count(*) FROM corr_timelines").fetchone()[0]
    h.close()
    assert [(d.vmta, d.pool) if d else None for d in got] == [("vmta-a", "pool-a")]
    assert rows == [("vmta-a", 1)] and count == 4  # joined its delivery: no timeline of its own


def _old_store(tmp_path: Path) -> None:
    """A store as a build before keyed Message-Id and jobId keys wrote it with hashing on: unkeyed keys, schema 3,
    no LINK_KEYS (the rows are rewritten from the texts as logged, which a real old store no longer holds)."""
    h = _hashed(tmp_path)
    h.commit(DELIVERIES)
    h.conn.execute("UPDATE corr_timelines SET mid_h = ? WHERE vmta = 'vmta-a'", (message_hash(MID_A),))
    h.conn.execute("UPDATE corr_timelines SET mid_h = ?, job_h = ? WHERE vmta = 'vmta-b'",
                   (message_hash("plain.1@shop.example"), job_hash(JOB_B)))
    h.conn.execute("UPDATE corr_timelines SET job_h = ? WHERE vmta = 'vmta-z'", (queued_hash(VERP_Z, T_QUEUED),))
    h.conn.execute("UPDATE corr_timelines SET job_h = ? WHERE vmta = 'vmta-a'", (job_hash("JA"),))
    h.conn.execute("DELETE FROM corr_meta WHERE key = ?", (store.LINK_KEYS,))
    h.conn.execute("UPDATE corr_meta SET value = '3' WHERE key = 'schema_version'")
    h.close()


async def test_an_old_unkeyed_store_keeps_its_scheme_serves_links_and_warns_once(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    _old_store(tmp_path)
    assert [c for c, _how in _guessed(tmp_path / "state.db")] == [ALICE, BOB, ZOE]  # what the warning is about
    with caplog.at_level(logging.WARNING):
        h = _hashed(tmp_path)
    said = [r.getMessage() for r in caplog.records if "not keyed" in r.getMessage()]
    assert len(said) == 1, said
    assert "guessed addresses" in said[0] and "another state_dir" in said[0] and "moved aside" in said[0]
    assert not h.sink.hasher.links.keyed
    meta = dict(h.conn.execute("SELECT key, value FROM corr_meta").fetchall())
    assert meta[store.LINK_KEYS] == LINKS_AS_WRITTEN and meta["schema_version"] == str(store.SCHEMA_VERSION)
    async with h.client() as c:
        by_mid = await c.get(f"/api/v1/messages/{MID_A}")
        by_job = await c.get("/api/v1/timeline", params={"rcpt": BOB, "job_id": JOB_B})
    assert by_mid.status_code == 200 and by_job.status_code == 200, (by_mid.text, by_job.text)
    h.commit(OTHER)
    h.commit(OTHER)
    assert [d.vmta if d else None for d in h.sink.lookup_vmta(COMPLAINT.columns, COMPLAINT.rows)] == ["vmta-a"]
    h.commit(COMPLAINT)
    f = store.FLAG[store.TYPE_CODES["f"]]
    assert h.conn.execute("SELECT count(*) FROM corr_timelines WHERE flags & ?", (f,)).fetchone() == (1,)
    # new timelines are keyed as the store's are: never two schemes in one index
    assert h.conn.execute("SELECT job_h FROM corr_timelines WHERE vmta = 'vmta-o'").fetchone() == (job_hash("JO"),)
    # the correlator process sets the same store up after the daemon: it says nothing more
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        h.sink.says_store_warnings = False
        h.sink.setup(h.conn)
    assert not [r for r in caplog.records if "not keyed" in r.getMessage()]
    h.close()
    caplog.clear()
    with caplog.at_level(logging.WARNING):  # the next start says it again, once
        h = _hashed(tmp_path)
        h.close()
    assert len([r for r in caplog.records if "not keyed" in r.getMessage()]) == 1


def test_an_old_store_without_timelines_is_keyed_from_now_on(tmp_path: Path) -> None:
    _old_store(tmp_path)
    conn = sqlite3.connect(tmp_path / "state.db", isolation_level=None)
    conn.execute("DELETE FROM corr_events")
    conn.execute("DELETE FROM corr_timelines")
    conn.close()
    h = _hashed(tmp_path)
    assert h.sink.hasher.links.keyed
    assert h.conn.execute("SELECT value FROM corr_meta WHERE key = ?", (store.LINK_KEYS,)).fetchone() == (LINKS_KEYED,)
    h.close()


def test_hashing_off_keeps_the_unkeyed_keys(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING):
        h = Harness(tmp_path, clock=lambda: CLOCK)
        h.commit(DELIVERIES)
    rows = h.conn.execute("SELECT vmta, mid_h, job_h FROM corr_timelines ORDER BY id").fetchall()
    meta = h.conn.execute("SELECT value FROM corr_meta WHERE key = ?", (store.LINK_KEYS,)).fetchone()
    h.close()
    assert rows == [("vmta-a", message_hash(MID_A), job_hash("JA")),
                    ("vmta-b", message_hash("plain.1@shop.example"), job_hash(JOB_B)),
                    ("vmta-z", None, queued_hash(VERP_Z, T_QUEUED))]
    assert meta == (LINKS_UNKEYED,)
    assert not [r for r in caplog.records if "not keyed" in r.getMessage()]


def test_turning_hashing_on_over_plain_timelines_keeps_them_unkeyed(tmp_path: Path,
                                                                    caplog: pytest.LogCaptureFixture) -> None:
    h = Harness(tmp_path, clock=lambda: CLOCK)
    h.commit(DELIVERIES)
    h.close()
    with caplog.at_level(logging.WARNING):
        h = _hashed(tmp_path)
    assert not h.sink.hasher.links.keyed
    assert len([r for r in caplog.records if "not keyed" in r.getMessage()]) == 1
    asyncio.run(_found_by_mid(h))
    h.close()


async def _found_by_mid(h: Harness) -> None:
    async with h.client() as c:
        assert (await c.get(f"/api/v1/messages/{MID_A}")).status_code == 200


def test_a_keyed_store_refuses_an_earlier_build_and_a_start_with_hashing_off(tmp_path: Path) -> None:
    """Schema 4: an earlier build (schema 3) would add unkeyed keys to it. Hashing off over its timelines is refused
    as before (rcpt_mode), and a LINK_KEYS this build does not know is refused rather than guessed."""
    from exporter.state import StateRefused

    h = _hashed(tmp_path)
    h.commit(DELIVERIES)
    assert h.conn.execute("SELECT value FROM corr_meta WHERE key='schema_version'").fetchone() == ("4",)
    h.conn.execute("UPDATE corr_meta SET value = 'rot13' WHERE key = ?", (store.LINK_KEYS,))
    with pytest.raises(StateRefused, match="link_keys 'rot13'"):
        h.sink.setup(h.conn)
    h.close()
    with pytest.raises(StateRefused, match="hash_recipients: false"):
        Harness(tmp_path, clock=lambda: CLOCK)


def test_only_the_daemon_switches_the_scheme_of_a_store_retention_emptied(tmp_path: Path) -> None:
    """Regression review 2026-12-06: the correlator process, restarted alone after retention had emptied an unkeyed
    store, switched it to keyed and wrote keyed keys, while the daemon's API and attribution kept hashing unkeyed
    (its `/api/v1/messages` answered 404 for timelines just stored)."""
    _old_store(tmp_path)
    daemon = _hashed(tmp_path)
    assert daemon.sink.hasher.links.scheme == LINKS_AS_WRITTEN
    daemon.conn.execute("DELETE FROM corr_timelines")  # what pruning leaves
    sink = daemon.sink
    sink.says_store_warnings = False  # as exporter/follower.py sets its own sink
    sink.setup(daemon.conn)
    assert sink.hasher.links.scheme == LINKS_AS_WRITTEN
    assert daemon.conn.execute("SELECT value FROM corr_meta WHERE key = ?", (store.LINK_KEYS,)).fetchone() == (
        LINKS_AS_WRITTEN,)
    sink.says_store_warnings = True  # the daemon's next start: nothing stored, nothing to mix
    sink.setup(daemon.conn)
    assert sink.hasher.links.scheme == LINKS_KEYED
    daemon.close()


def test_check_config_says_a_store_keeps_unkeyed_keys(tmp_path: Path) -> None:
    """`run` logs it as the store is set up; check-config said nothing of it (review of the keyed store, 2026-12-06)."""
    from exporter import preflight
    from tests.conftest import write_config

    _old_store(tmp_path)
    state = tmp_path / "state"
    state.mkdir()
    (tmp_path / "state.db").rename(state / "watchtower.db")
    cfg = write_config(tmp_path, state_dir=str(state), correlator={
        "enabled": True, "hash_recipients": True, "hmac_key_file": str(tmp_path / "hmac.key")})
    from exporter.config import load_config

    said = [w for w in preflight.warnings(load_config(cfg)) if w.startswith("correlator.hash_recipients: ")]
    assert len(said) == 1 and "are not keyed" in said[0] and str(state / "watchtower.db") in said[0], said
    h = _hashed(tmp_path / "fresh")  # a store keyed from its start: nothing to say
    h.commit(DELIVERIES)
    h.close()
    (tmp_path / "fresh" / "state.db").rename(state / "watchtower.db")
    assert not [w for w in preflight.warnings(load_config(cfg)) if w.startswith("correlator.hash_recipients: ")]


def test_check_config_says_hashing_turned_on_over_plain_timelines(tmp_path: Path) -> None:
    """docs/security.md: `plain` store, hash_recipients on, timelines held: the start goes on with a WARNING that the
    older timelines keep their addresses and are no longer found by recipient. `run` logged it; check-config, which an
    operator runs first, said only `ok` (newcomer review, 2026-12-06)."""
    from correlator.keys import RcptHasher
    from exporter import preflight
    from exporter.config import load_config
    from tests.conftest import write_config

    h = Harness(tmp_path, CorrelatorConfig(hash_recipients=False), clock=lambda: CLOCK)
    h.commit(DELIVERIES)
    h.close()
    state = tmp_path / "state"
    state.mkdir()
    (tmp_path / "state.db").rename(state / "watchtower.db")
    key = tmp_path / "hmac.key"
    key.write_text("k" * 64)
    cfg = write_config(tmp_path, state_dir=str(state), correlator={
        "enabled": True, "hash_recipients": True, "hmac_key_file": str(key)})
    fingerprint = RcptHasher(b"k" * 64).fingerprint()
    said = [w for w in preflight.warnings(load_config(cfg)) if "stored as plain" in w]
    assert said == [f"correlator.hash_recipients: correlator recipients were stored as plain but are now keyed as "
                    f"{fingerprint}: older timelines will not be found by recipient"]
    key.unlink()  # no key yet: `run` makes one
    said = [w for w in preflight.warnings(load_config(cfg)) if "stored as plain" in w]
    assert said == ["correlator.hash_recipients: correlator recipients were stored as plain but are now keyed as the "
                    "HMAC key the next start makes: older timelines will not be found by recipient"]
