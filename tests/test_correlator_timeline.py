"""Timelines built from a multi-file corpus: exact events, order and content, whatever the file order."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from correlator import store
from correlator.keys import job_hash, message_hash
from tests.test_correlator_support import (
    ACCT_0,
    ACCT_1,
    BOUNCE,
    CORPUS_RECORDS,
    DIAG_0,
    DIAG_1,
    FBL,
    LOG,
    NOW,
    RECV,
    Harness,
    batch,
    brief,
    split,
)

ORDERS = {
    "acct-first": [(ACCT_0, ACCT_1, RECV), (DIAG_0, DIAG_1), (BOUNCE, FBL)],
    "diag-first": [(DIAG_1,), (DIAG_0, RECV), (ACCT_1, ACCT_0), (FBL, BOUNCE)],
    "one-commit": [(RECV, ACCT_0, DIAG_0, ACCT_1, DIAG_1, BOUNCE, FBL)],
    "small-reads": [tuple(split(DIAG_0, 1, 1, 1)), tuple(split(ACCT_0, 1)), (ACCT_1, DIAG_1, RECV), (BOUNCE,),
                    tuple(split(FBL, 2))],
}


@pytest.fixture(params=list(ORDERS))
def h(request: pytest.FixtureRequest, tmp_path: Path) -> Harness:
    harness = Harness(tmp_path)
    for commit in ORDERS[request.param]:
        harness.commit(*commit)
    yield harness
    harness.close()


def _by_rcpt(h: Harness, rcpt: str) -> dict:
    rh = h.sink.hasher(rcpt.strip().lower())[0]
    with h.reader() as r:
        rows = r.conn.execute("SELECT id FROM corr_timelines WHERE rcpt_h=?", (rh,)).fetchall()
        assert len(rows) == 1, f"{rcpt}: {len(rows)} timelines"
        item = r.by_id(rows[0][0])
    assert item is not None
    return item


def test_every_record_stored_once(h: Harness) -> None:
    events = h.conn.execute("SELECT count(*), count(DISTINCT id) FROM corr_events").fetchone()
    queue = h.conn.execute("SELECT count(*) FROM corr_queue_events").fetchone()[0]
    assert events[0] == events[1]
    assert events[0] + queue == CORPUS_RECORDS
    assert h.conn.execute("SELECT count(*) FROM corr_timelines").fetchone()[0] == 5  # alice bob carol dave eve


def test_alice_receipt_deferral_queue_event_delivery_status_and_fbl_by_message_id(h: Harness) -> None:
    tl = _by_rcpt(h, "alice@gmail.com")
    assert brief(tl["events"]) == [
        ("2024-05-01T10:00:00Z", "received", "r", None, None, None, None, "recv-2024-05-01-0000.csv:2"),
        ("2024-05-01T10:05:00Z", "deferred", "t", 1, "4.7.28 (unusual rate)", "vmta1", "deferred",
         "diag-2024-05-01-0000.csv:2"),
        ("2024-05-01T10:10:00Z", "queue_deferred", "tq", None, "4.0.0 (other)", "vmta1", "deferred",
         "diag-2024-05-01-0000.csv:3"),
        ("2024-05-01T10:20:00Z", "delivered", "d", 2, "2.0.0 (success)", "vmta1", None,
         "acct-2024-05-01-0000.csv:2"),
        ("2024-05-01T10:40:00Z", "remote_status", "rs", None, "2.0.0 (success)", None, None,
         "bounce-2024-05-01-0000.csv:3"),
        ("2024-05-02T08:00:00Z", "complaint", "f", None, None, None, None, "fbl-2024-05-01-0000.csv:2"),
    ]
    ev = tl["events"]
    assert ev[1]["dsn_diag"] == "smtp;421-4.7.28 unusual rate of unsolicited mail, try later"
    assert ev[1]["dsn_mta"] == "gmail-smtp-in.l.google.com (142.250.1.27)"
    assert ev[1]["bounce_category"] == "policy-related" and ev[1]["dsn_action"] == "delayed"
    assert ev[2]["queue"] == "gmail.com/vmta1"
    assert ev[3]["vmta_pool"] == "pool-a" and ev[3]["source_ip"] == "192.0.2.10"
    assert ev[5]["feedback_type"] == "abuse" and ev[5]["user_agent"] == "Yahoo!-Mail-Feedback/2.0"
    assert ev[5]["reporting_mta"] == "fbl.example"
    assert {k: tl[k] for k in ("message_id", "job_id", "rcpt", "orig", "sender_domain", "vmta", "vmta_pool",
                               "queue", "isp", "outcome", "attempts", "complained", "remote_bounced")} == {
        "message_id": "m1@shop.example", "job_id": "J1", "rcpt": "alice@gmail.com", "orig": "news@shop.example",
        "sender_domain": "shop.example", "vmta": "vmta1", "vmta_pool": "pool-a", "queue": "gmail.com/vmta1",
        "isp": "gmail", "outcome": "complained", "attempts": 2, "complained": True, "remote_bounced": False,
    }
    assert (tl["first_seen"], tl["queued_at"], tl["done_at"], tl["last_seen"]) == (
        "2024-05-01T10:00:00Z", "2024-05-01T10:00:00Z", "2024-05-01T10:20:00Z", "2024-05-02T08:00:00Z")
    assert tl["queue_events_omitted"] == 0  # the 12:00 tq came after the delivery: not part of it


def test_bob_linked_by_job_across_rotated_reordered_files_and_fbl_by_job(h: Harness) -> None:
    tl = _by_rcpt(h, "bob@yahoo.com")
    assert brief(tl["events"]) == [
        ("2024-05-01T10:00:00Z", "queued", None, None, None, None, None, None),
        ("2024-05-01T10:30:00Z", "deferred", "t", 1, "4.7.0 (TSS04)", "vmta1", "deferred",
         "diag-2024-05-01-0000.csv:4"),
        ("2024-05-01T11:00:00Z", "bounced", "b", 2, "5.1.1 (bad destination mailbox address)", "vmta1",
         "rejected", "acct-2024-05-01-0001.csv:2"),
        ("2024-05-02T09:00:00Z", "complaint", "f", None, None, None, None, "fbl-2024-05-01-0000.csv:3"),
    ]
    assert tl["message_id"] is None and tl["job_id"] == "J1" and tl["isp"] == "yahoo"
    assert tl["events"][2]["dsn_diag"] == "smtp;550 5.1.1 <bob@yahoo.com>: user unknown"
    assert tl["outcome"] == "complained" and tl["attempts"] == 2


def test_carol_delivery_then_remote_bounce_by_message_id_and_iso_offsets(h: Harness) -> None:
    tl = _by_rcpt(h, "carol@outlook.com")
    assert brief(tl["events"]) == [
        ("2024-05-01T09:59:00Z", "queued", None, None, None, None, None, None),
        ("2024-05-01T10:00:00Z", "delivered", "d", 1, "2.0.0 (success)", "vmta2", None,
         "acct-2024-05-01-0000.csv:3"),
        ("2024-05-01T14:00:00Z", "remote_bounce", "rb", None, "5.2.2 (mailbox full)", None, "rejected",
         "bounce-2024-05-01-0000.csv:2"),
    ]
    assert tl["events"][2]["reporting_mta"] == "bounce.outlook.com"
    assert tl["events"][2]["bounce_category"] == "quota-issues"
    assert (tl["outcome"], tl["remote_bounced"], tl["vmta"], tl["isp"]) == ("bounced", True, "vmta2", "microsoft")


def test_dave_without_ids_links_by_sender_and_queue_time_and_fbl_by_rcpt_orig(h: Harness) -> None:
    tl = _by_rcpt(h, "dave@gmail.com")
    assert brief(tl["events"]) == [
        ("2024-05-01T09:00:00Z", "queued", None, None, None, None, None, None),
        ("2024-05-01T09:10:00Z", "deferred", "t", 1, "4.2.2 (mailbox full)", "vmta3", "deferred",
         "diag-2024-05-01-0001.csv:2"),
        ("2024-05-01T09:30:00Z", "delivered", "d", 2, "2.0.0 (success)", "vmta3", None,
         "acct-2024-05-01-0001.csv:3"),
        ("2024-05-03T09:00:00Z", "complaint", "f", None, None, None, None, "fbl-2024-05-01-0000.csv:4"),
    ]
    assert tl["job_id"] is None and tl["message_id"] is None
    assert tl["queue"] == "gmail.com/vmta3"


def test_unmatched_fbl_stands_alone(h: Harness) -> None:
    tl = _by_rcpt(h, "eve@example.net")
    assert [e["kind"] for e in tl["events"]] == ["complaint"]
    assert (tl["vmta"], tl["outcome"], tl["attempts"], tl["orig"]) == (None, "complained", 0, "nobody@else.example")


def test_message_and_job_lookups(h: Harness) -> None:
    with h.reader() as r:
        items, total = r.by_message(message_hash("m1@shop.example"), 10)
        assert total == 1 and items[0]["rcpt"] == "alice@gmail.com"
        job, _ = r.by_job_rcpt(job_hash("J1"), h.sink.hasher("bob@yahoo.com")[0])
        assert [t["rcpt"] for t in job] == ["bob@yahoo.com"]
        assert r.by_job_rcpt(job_hash("J1"), h.sink.hasher("nobody@yahoo.com")[0]) == ([], 0)


def test_flows_count_each_outcome_under_sender_vmta_isp(h: Harness) -> None:
    rows = h.conn.execute(
        "SELECT sender, vmta, isp, sum(delivered), sum(bounced), sum(deferred), sum(complained), sum(remote_bounced)"
        " FROM corr_flows GROUP BY sender, vmta, isp ORDER BY sender, vmta, isp").fetchall()
    assert rows == [
        ("else.example", "", "other", 0, 0, 0, 1, 0),
        ("other.example", "vmta3", "gmail", 1, 0, 1, 1, 0),
        ("shop.example", "vmta1", "gmail", 1, 0, 1, 1, 0),
        ("shop.example", "vmta1", "yahoo", 0, 1, 1, 1, 0),
        ("shop.example", "vmta2", "microsoft", 1, 0, 0, 0, 1),
    ]


def test_records_with_two_keys_merge_partial_timelines(tmp_path: Path) -> None:
    """A t known by job only and an f known by Message-Id only become one timeline when a d names both."""
    h = Harness(tmp_path)
    t = batch("/l/diag-0.csv", """
type,timeLogged,timeQueued,orig,rcpt,vmta,jobId,dsnStatus
t,2024-05-01 10:05:00+0000,2024-05-01 10:00:00+0000,a@s.example,zed@gmail.com,vmta9,J7,4.0.0 (x)
""")
    f = batch("/l/fbl-0.csv", """
type,timeLogged,orig,rcpt,header_Message-Id
f,2024-05-01 11:00:00+0000,a@s.example,zed@gmail.com,<mz@s.example>
""")
    d = batch("/l/acct-0.csv", """
type,timeLogged,timeQueued,orig,rcpt,vmta,jobId,dsnStatus,header_Message-Id
d,2024-05-01 10:10:00+0000,2024-05-01 10:00:00+0000,a@s.example,zed@gmail.com,vmta9,J7,2.0.0 (ok),<mz@s.example>
""")
    h.commit(t)
    h.commit(f)  # a complaint comes after a delivery: a deferral-only timeline is not its send (rcpt + orig or not)
    assert h.conn.execute("SELECT count(*) FROM corr_timelines").fetchone()[0] == 2
    h.commit(d)
    assert h.conn.execute("SELECT count(*) FROM corr_timelines").fetchone()[0] == 1
    (tmp_path / "x").mkdir()
    h2 = Harness(tmp_path / "x")
    h2.commit(f)  # here the f comes first: nothing to fall back on
    h2.commit(t)
    assert h2.conn.execute("SELECT count(*) FROM corr_timelines").fetchone()[0] == 2
    h2.commit(d)
    assert h2.conn.execute("SELECT count(*) FROM corr_timelines").fetchone()[0] == 1
    tl = _by_rcpt(h2, "zed@gmail.com")
    assert [(e["kind"], e["attempt"]) for e in tl["events"]] == [
        ("queued", None), ("deferred", 1), ("delivered", 2), ("complaint", None)]
    assert (tl["message_id"], tl["job_id"], tl["outcome"], tl["attempts"]) == ("mz@s.example", "J7", "complained", 2)
    # later records of either key still land on the merged timeline, also after the caches are dropped
    h2.sink.ingestor.forget()
    h2.commit(batch("/l/bounce-0.csv", """
type,timeLogged,orig,rcpt,jobId,dsnStatus
rs,2024-05-01 12:00:00+0000,a@s.example,zed@gmail.com,J7,2.0.0 (delivered)
"""))
    assert h2.conn.execute("SELECT count(*) FROM corr_timelines").fetchone()[0] == 1
    h.close()
    h2.close()


def test_message_id_only_report_with_several_recipients_stays_apart(tmp_path: Path) -> None:
    h = Harness(tmp_path)
    h.commit(batch("/l/acct.csv", """
type,timeLogged,orig,rcpt,vmta,header_Message-Id
d,2024-05-01 10:00:00+0000,a@s.example,one@gmail.com,v1,<multi@s.example>
d,2024-05-01 10:00:01+0000,a@s.example,two@gmail.com,v1,<multi@s.example>
"""))
    h.commit(batch("/l/fbl.csv", """
type,timeLogged,orig,rcpt,header_Message-Id
f,2024-05-02 10:00:00+0000,a@s.example,,<multi@s.example>
"""))
    with h.reader() as r:
        items, total = r.by_message(message_hash("multi@s.example"), 10)
    assert total == 3
    assert sorted((i["rcpt"] or "?", i["outcome"]) for i in items) == [
        ("?", "complained"), ("one@gmail.com", "delivered"), ("two@gmail.com", "delivered")]
    h.close()


def test_hashed_recipients_leave_no_address_in_the_db(tmp_path: Path) -> None:
    from exporter.config import CorrelatorConfig

    key = tmp_path / "keys" / "hmac.key"
    key.parent.mkdir()
    h = Harness(tmp_path, CorrelatorConfig(hash_recipients=True, hmac_key_file=key))
    assert key.stat().st_mode & 0o777 == 0o600
    for b in (ACCT_0, ACCT_1, DIAG_0, DIAG_1, BOUNCE, FBL, RECV):
        h.commit(b)
    h.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    blob = b"".join(p.read_bytes() for p in tmp_path.glob("state.db*")).lower()
    for local in (b"alice@", b"bob@", b"carol@", b"dave@", b"eve@"):
        assert local not in blob
    tl = _by_rcpt(h, "Bob@Yahoo.com")  # lookups by address still work
    assert tl["rcpt"].startswith("hmac-sha256:") and tl["rcpt_hashed"] and tl["rcpt_domain"] == "yahoo.com"
    assert tl["events"][2]["dsn_diag"] == "smtp;550 5.1.1 <<rcpt>>: user unknown"
    # the same key file gives the same hashes in a new process
    h2 = Harness(tmp_path / "keys", CorrelatorConfig(hash_recipients=True, hmac_key_file=key))
    assert h2.sink.hasher("bob@yahoo.com") == h.sink.hasher("bob@yahoo.com")
    h.close()
    h2.close()


@pytest.mark.parametrize(("diag", "want"), [
    # "İ".lower() is two characters: positions found in the lowered text are not the original's
    ("smtp;550 5.1.1 İstanbul relay: <Kai.Secret@Yahoo.com> user unknown",
     "smtp;550 5.1.1 İstanbul relay: <<rcpt>> user unknown"),
    ("smtp;550 " + "İ" * 22 + " <kai.secret@yahoo.com> and KAI.SECRET@YAHOO.COM",
     "smtp;550 " + "İ" * 22 + " <<rcpt>> and <rcpt>"),
    ("smtp;550 ẞ ﬃ Σ <kai.secret@yahoo.com>", "smtp;550 ẞ ﬃ Σ <<rcpt>>"),
    ("smtp;550 no address here: İ", "smtp;550 no address here: İ"),
])
def test_hashed_recipients_are_cut_from_any_reply_text(tmp_path: Path, diag: str, want: str) -> None:
    """The address is replaced wherever it stands, whatever characters before it change length when lowered."""
    from exporter.config import CorrelatorConfig

    h = Harness(tmp_path, CorrelatorConfig(hash_recipients=True, hmac_key_file=tmp_path / "hmac.key"))
    h.commit(batch("/l/acct-9.csv", f"""
type,timeLogged,timeQueued,orig,rcpt,dsnStatus,dsnDiag,header_Message-Id
b,2024-05-01 10:00:00+0000,2024-05-01 09:59:00+0000,a@s.example,Kai.Secret@Yahoo.com,5.1.1,"{diag}",<m9@s.example>
"""))
    (stored,) = h.conn.execute("SELECT diag FROM corr_events").fetchone()
    assert stored == want
    assert "kai.secret" not in stored.lower()
    h.close()


async def test_the_hashed_form_a_page_shows_finds_its_timeline_again(tmp_path: Path) -> None:
    """With hash_recipients, pages and answers show `hmac-sha256:<hex>`: pasted into a recipient search it was
    hashed once more and found nothing. It is the recipient's key itself; any other text is hashed as before."""
    from exporter.config import CorrelatorConfig

    h = Harness(tmp_path, CorrelatorConfig(hash_recipients=True, hmac_key_file=tmp_path / "hmac.key"))
    for b in (ACCT_0, ACCT_1, DIAG_0, DIAG_1, BOUNCE, FBL, RECV):
        h.commit(b)
    shown = _by_rcpt(h, "bob@yahoo.com")["rcpt"]
    async with h.client() as c:
        by_address = (await c.get("/api/v1/search", params={"rcpt": "Bob@Yahoo.com"})).json()["items"]
        by_shown = (await c.get("/api/v1/search", params={"rcpt": shown.upper().replace("HMAC", "hmac")})).json()
        other = await c.get("/api/v1/search", params={"rcpt": "hmac-sha256:" + "0" * 64})
    assert by_address and by_shown["items"] == by_address
    assert other.status_code == 200 and other.json()["items"] == []
    h.close()


async def test_hashed_answers_never_echo_the_address_asked_for(tmp_path: Path) -> None:
    """With hash_recipients, no answer carries the address a caller sent (a proxy or Grafana may keep answers):
    /timeline (JSON and text) and /lookup show the recipient as `hmac-sha256:<hex>`, stored or not."""
    from exporter.config import CorrelatorConfig

    h = Harness(tmp_path, CorrelatorConfig(hash_recipients=True, hmac_key_file=tmp_path / "hmac.key"))
    for b in (ACCT_0, ACCT_1, DIAG_0, DIAG_1, BOUNCE, FBL, RECV):
        h.commit(b)
    shown = _by_rcpt(h, "bob@yahoo.com")["rcpt"]
    async with h.client() as c:
        answers = [
            await c.get("/api/v1/timeline", params={"job_id": "J1", "rcpt": "Bob@Yahoo.com"}),
            await c.get("/api/v1/timeline", params={"job_id": "J1", "rcpt": "Bob@Yahoo.com", "format": "text"}),
            await c.get("/api/v1/lookup", params={"job_id": "J1", "rcpt": "Bob@Yahoo.com"}),
            await c.get("/api/v1/lookup", params={"job_id": "J1", "rcpt": "Nobody@Yahoo.com"}),
            await c.get("/api/v1/timeline", params={"job_id": "J1", "rcpt": "Nobody@Yahoo.com"}),
            await c.get("/api/v1/timeline", params={"job_id": "J1", "rcpt": shown.upper().replace("HMAC", "hmac")}),
        ]
    assert [a.status_code for a in answers] == [200, 200, 200, 200, 404, 200]
    for answer in answers:
        assert "bob@" not in answer.text.lower() and "nobody@" not in answer.text.lower(), answer.text[:300]
    assert answers[0].json()["rcpt"] == shown == answers[5].json()["rcpt"]
    assert f"rcpt {shown}" in answers[1].text
    assert answers[2].json()["rcpt"] == shown and answers[2].json()["timelines"]
    assert answers[3].json()["rcpt"].startswith("hmac-sha256:") and answers[3].json()["timelines"] == []
    h.close()


def _deferred_then_reported(h: Harness, deferrals: int, reports: int) -> None:
    """One timeline (J9, a@gmail.com, <M@x>): `deferrals` t records, its delivery, then `reports` rb records."""
    head = "type,timeLogged,timeQueued,orig,rcpt,dsnStatus,dsnDiag,vmta,jobId,header_Message-Id\n"
    rows = "".join(f"t,{1714557600 + 60 * i},2024-05-01 10:00:00+0000,s@shop.example,a@gmail.com,4.2.1,"
                   f"smtp;421 try later {i},v1,J9,<M@x>\n" for i in range(1, deferrals + 1))
    rows += (f"d,{1714557600 + 60 * (deferrals + 1)},2024-05-01 10:00:00+0000,s@shop.example,a@gmail.com,2.0.0,"
             "smtp;250 ok,v1,J9,<M@x>\n")
    h.commit(batch("/l/acct-9.csv", head + rows))
    if reports:
        h.commit(batch("/l/bounce-9.csv", "type,timeLogged,orig,rcpt,dsnStatus,dsnDiag,header_Message-Id\n" + "".join(
            f"rb,{1714640000 + i},s@shop.example,a@gmail.com,5.2.2,smtp;552 mailbox full {i},<M@x>\n"
            for i in range(reports))))


@pytest.fixture(params=["sorted whole", "flooded"])
def flooded(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> None:
    """A timeline's events sorted whole, or past timeline.FLOODED: its latest FLOODED by id sorted, its totals
    counted apart (a million reports took ~5 s to sort: every page that held the timeline answered 503, review
    2026-12-05). Both give the same answer while those latest by id hold the latest by time."""
    if request.param == "flooded":
        from correlator import timeline

        monkeypatch.setattr(timeline, "FLOODED", 1005)


@pytest.mark.usefixtures("flooded")
async def test_a_timeline_lists_its_latest_events_within_a_bound_and_counts_the_rest(tmp_path: Path) -> None:
    """Anyone who can mail the bounce address can attach reports to a timeline without end: an answer lists
    at most timeline.MAX_TIMELINE_EVENTS of a timeline's latest events and says how many older ones it left
    out; attempt numbers stay those of the whole timeline."""
    from correlator.timeline import MAX_TIMELINE_EVENTS

    h = Harness(tmp_path)
    _deferred_then_reported(h, deferrals=30, reports=MAX_TIMELINE_EVENTS + 5)
    async with h.client() as c:
        one = (await c.get("/api/v1/timeline", params={"job_id": "J9", "rcpt": "a@gmail.com"})).json()["timelines"]
        page = (await c.get("/api/v1/messages/M@x", params={"limit": 1})).json()["recipients"]
        text = (await c.get("/api/v1/timeline", params={"job_id": "J9", "rcpt": "a@gmail.com", "format": "text"}))
    for (tl,) in (one, page):
        events = tl["events"]
        assert len(events) == MAX_TIMELINE_EVENTS
        assert tl["events_omitted"] == 30 + 1 + MAX_TIMELINE_EVENTS + 5 + 1 - MAX_TIMELINE_EVENTS  # + queued
        assert events[0]["kind"] == "remote_bounce" and events[0]["dsn_diag"].endswith(" 5")  # rb 0-4 left out
        assert events[-1]["kind"] == "remote_bounce" and events[-1]["dsn_diag"].endswith(f"{MAX_TIMELINE_EVENTS + 4}")
    assert f"{one[0]['events_omitted']} older events omitted" in text.text
    h.close()


@pytest.mark.usefixtures("flooded")
async def test_attempt_numbers_count_the_events_left_out(tmp_path: Path) -> None:
    from correlator.timeline import MAX_TIMELINE_EVENTS

    h = Harness(tmp_path)
    _deferred_then_reported(h, deferrals=MAX_TIMELINE_EVENTS + 10, reports=0)
    async with h.client() as c:
        (tl,) = (await c.get("/api/v1/timeline", params={"job_id": "J9", "rcpt": "a@gmail.com"})).json()["timelines"]
    attempts = [ev["attempt"] for ev in tl["events"] if "attempt" in ev]
    assert tl["attempts"] == MAX_TIMELINE_EVENTS + 11
    assert attempts == list(range(12, MAX_TIMELINE_EVENTS + 12))  # the latest 1000 of 1011 attempts, numbered as such
    assert tl["events_omitted"] == 12  # 11 older deferrals and the queued mark
    assert tl["events"][-1]["kind"] == "delivered"
    h.close()


async def test_a_large_message_page_shares_one_event_budget(tmp_path: Path) -> None:
    """A page of many timelines lists fewer events of each (timeline.PAGE_EVENTS in all, at least
    timeline.MIN_EVENTS each), so a 1,000-recipient page stays a few MB."""
    from correlator.timeline import MIN_EVENTS, PAGE_EVENTS

    h = Harness(tmp_path)
    head = "type,timeLogged,timeQueued,orig,rcpt,dsnStatus,dsnDiag,vmta,jobId,header_Message-Id\n"
    n = 1000
    rows = "".join(f"t,{1714557600 + 60 * k},2024-05-01 10:00:00+0000,s@shop.example,r{i}@gmail.com,4.2.1,"
                   f"smtp;421 later,v1,J9,<Big@x>\n" for i in range(n) for k in range(1, 16))
    h.commit(batch("/l/acct-big.csv", head + rows))
    async with h.client() as c:
        big = (await c.get("/api/v1/messages/Big@x", params={"limit": n})).json()["recipients"]
        small = (await c.get("/api/v1/messages/Big@x", params={"limit": 10})).json()["recipients"]
    each = max(MIN_EVENTS, PAGE_EVENTS // n)
    assert len(big) == n and {len(tl["events"]) for tl in big} == {each}
    assert {tl["events_omitted"] for tl in big} == {16 - each}  # 15 deferrals and the queued mark
    assert {len(tl["events"]) for tl in small} == {16} and {tl["events_omitted"] for tl in small} == {0}
    h.close()


def test_schema_is_created_once_and_versioned(tmp_path: Path) -> None:
    h = Harness(tmp_path)
    h.sink.setup(h.conn)  # idempotent
    conn = sqlite3.connect(h.db)
    assert conn.execute("SELECT value FROM corr_meta WHERE key='schema_version'").fetchone() == (str(store.SCHEMA_VERSION),)
    assert conn.execute("PRAGMA journal_mode").fetchone() == ("wal",)
    conn.close()
    h.close()


def test_day_slices_join_one_delivery_across_midnight_and_split_resends(tmp_path: Path) -> None:
    h = Harness(tmp_path)
    h.commit(batch("/l/recv.csv", """
type,timeLogged,orig,rcpt,jobId
r,2024-05-01 23:58:00+0000,a@s.example,yan@gmail.com,J5
"""))  # no timeQueued: queued when logged (prepare._reception_queued), its day's slice
    h.commit(batch("/l/diag.csv", """
type,timeLogged,timeQueued,orig,rcpt,vmta,jobId,dsnStatus,queue
t,2024-05-02 00:05:00+0000,2024-05-01 23:58:00+0000,a@s.example,yan@gmail.com,v1,J5,4.0.0 (later),
tq,2024-05-02 00:06:00+0000,,,,v1,,4.0.0 (busy),
"""))
    h.commit(batch("/l/acct.csv", """
type,timeLogged,timeQueued,orig,rcpt,vmta,jobId,dsnStatus
d,2024-05-02 00:10:00+0000,2024-05-01 23:58:00+0000,a@s.example,yan@gmail.com,v1,J5,2.0.0 (ok)
d,2024-05-01 10:00:00+0000,2024-05-01 09:00:00+0000,a@s.example,zoe@gmail.com,v1,J5,2.0.0 (ok)
d,2024-05-03 10:00:00+0000,2024-05-03 09:00:00+0000,a@s.example,zoe@gmail.com,v1,J5,2.0.0 (ok)
"""))
    with h.reader() as r:
        rows = r.conn.execute("SELECT id FROM corr_timelines ORDER BY id").fetchall()
        first, zoe1, zoe2 = (r.by_id(x[0]) for x in rows)
    # the receipt (no timeQueued: timed as queued when it was logged) started the timeline in its day's slice; the
    # attempts queued before midnight and logged after it join it
    assert [(e["kind"], e["attempt"]) for e in first["events"]] == [
        ("received", None), ("deferred", 1), ("delivered", 2)]  # the tq has no queue field: shown nowhere
    # the same job sent to the same recipient again two days later is another message
    assert [(e["kind"], e["time"]) for e in zoe1["events"] + zoe2["events"]] == [
        ("queued", "2024-05-01T09:00:00Z"), ("delivered", "2024-05-01T10:00:00Z"),
        ("queued", "2024-05-03T09:00:00Z"), ("delivered", "2024-05-03T10:00:00Z")]
    assert h.conn.execute("SELECT count(*) FROM corr_queue_events").fetchone()[0] == 1
    slices = [d for (d,) in h.conn.execute("SELECT day FROM corr_days ORDER BY day")]
    # 2024-05-01 and 2024-05-03 (UTC days since the epoch), both of generation 1; no undated slice (the legacy
    # no-day slice -1 is always listed)
    assert [(store.day_of_slice(v), max(v, 0) >> store.DAY_BITS) for v in slices] == [
        (-1, 0), (19844, 1), (19846, 1)]
    h.close()


def test_receipt_only_is_pending(tmp_path: Path) -> None:
    h = Harness(tmp_path)
    h.commit(RECV)
    tl = _by_rcpt(h, "alice@gmail.com")
    assert (tl["outcome"], tl["attempts"], [e["kind"] for e in tl["events"]]) == ("pending", 0, ["received"])
    h.close()


def test_undated_and_dated_records_of_one_delivery_link_within_one_batch(tmp_path: Path) -> None:
    h = Harness(tmp_path)
    h.commit(batch("/l/all.csv", """
type,timeLogged,timeQueued,orig,rcpt,vmta,jobId,header_Message-Id
r,2024-05-01 10:00:00+0000,,a@s.example,kim@gmail.com,,J8,<k1@s>
t,2024-05-01 10:01:00+0000,2024-05-01 10:00:00+0000,a@s.example,kim@gmail.com,v1,J8,
d,2024-05-01 10:02:00+0000,2024-05-01 10:00:00+0000,a@s.example,kim@gmail.com,v1,,<k1@s>
f,2024-05-02 10:00:00+0000,,a@s.example,kim@gmail.com,,J8,
"""))
    tl = _by_rcpt(h, "kim@gmail.com")
    assert [(e["kind"], e["attempt"]) for e in tl["events"]] == [
        ("received", None), ("deferred", 1), ("delivered", 2), ("complaint", None)]
    h.close()


def test_without_address_of_an_empty_address_is_the_text() -> None:
    """(It looped for ever: `find("")` matches at every position without moving on.)"""
    from correlator.linking import without_address

    assert without_address("smtp;550 x", "") == "smtp;550 x"
    assert without_address("A@B.c and a@b.C", "a@b.c") == "<rcpt> and <rcpt>"


def _capped(h: Harness, monkeypatch: pytest.MonkeyPatch, most: int) -> tuple[dict, dict]:
    """The timeline of <M@x> whole, then with at most `most` events."""
    import correlator.timeline as timeline_module

    with h.reader() as r:
        whole = r.by_message(message_hash("M@x"), 10)[0][0]
    monkeypatch.setattr(timeline_module, "MAX_TIMELINE_EVENTS", most)
    with h.reader() as r:
        capped = r.by_message(message_hash("M@x"), 10)[0][0]
    return whole, capped


def _brief_events(tl: dict) -> list[tuple]:
    return [(e["time"], e["record_type"] or e["kind"], e.get("attempt")) for e in tl["events"]]


def test_the_events_left_out_are_the_oldest_in_the_order_shown(tmp_path: Path, monkeypatch: pytest.MonkeyPatch
                                                              ) -> None:
    """A d and a t logged in the same second: shown, the t comes first (attempts before outcomes). The cut took the
    latest by time and id, so it kept the t (a later file: a higher id) and left the delivery out, numbered the t
    attempt 3 and the timeline showed no outcome. The cut follows the order shown, so the shown events are the last
    ones of the whole timeline, numbered as there."""
    h = Harness(tmp_path)
    head = "type,timeLogged,timeQueued,orig,rcpt,dsnStatus,dsnDiag,vmta,jobId,header_Message-Id\n"
    h.commit(batch("/l/acct-1.csv", head + "d,1714557700,1714557600,s@x.example,a@gmail.com,2.0.0,smtp;250,v1,J9,<M@x>\n"))
    h.commit(batch("/l/diag-1.csv", head
                   + "t,1714557650,1714557600,s@x.example,a@gmail.com,4.2.1,smtp;421 a,v1,J9,<M@x>\n"
                   + "t,1714557700,1714557600,s@x.example,a@gmail.com,4.2.1,smtp;421 b,v1,J9,<M@x>\n"))
    h.commit(batch("/l/bounce-1.csv", "type,timeLogged,orig,rcpt,dsnStatus,dsnDiag,header_Message-Id\n"
                   "rb,1714640000,s@x.example,a@gmail.com,5.2.2,smtp;552 full,<M@x>\n"
                   "rb,1714640001,s@x.example,a@gmail.com,5.2.2,smtp;552 full,<M@x>\n"))
    whole, capped = _capped(h, monkeypatch, 3)
    assert _brief_events(capped) == _brief_events(whole)[-3:]
    assert [e[1:] for e in _brief_events(capped)] == [("d", 3), ("rb", None), ("rb", None)]
    assert capped["events_omitted"] == len(whole["events"]) - 3
    h.close()


def test_a_reception_left_out_is_counted_once_and_no_queued_mark_stands_in(tmp_path: Path,
                                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """A timeline with an r (reception) shows no `queued` mark; with the r among the events left out, the mark was
    counted as left out too (one too many)."""
    h = Harness(tmp_path)
    h.commit(batch("/l/acct-2.csv", "type,timeLogged,timeQueued,orig,rcpt,dsnStatus,vmta,jobId,header_Message-Id\n"
                   "r,1714557600,1714557600,s@x.example,a@gmail.com,,,J9,<M@x>\n"
                   + "".join(f"t,{1714557600 + 60 * i},1714557600,s@x.example,a@gmail.com,4.2.1,v1,J9,<M@x>\n"
                             for i in range(1, 6))
                   + "d,1714558000,1714557600,s@x.example,a@gmail.com,2.0.0,v1,J9,<M@x>\n"))
    whole, capped = _capped(h, monkeypatch, 3)
    assert "queued" not in [e["kind"] for e in whole["events"]]
    assert _brief_events(capped) == _brief_events(whole)[-3:]
    assert capped["events_omitted"] == len(whole["events"]) - 3 == 4
    h.close()


async def test_a_recipient_sent_the_same_job_every_day_lists_its_latest_sends_within_a_bound(tmp_path: Path) -> None:
    """A seed or monitoring address gets the same job (or template Message-Id) day after day: /timeline listed every
    send (15,000 of them: a 24 MB page, the event loop held 0.8 s). It lists the latest MAX_TIMELINES, oldest first,
    and says how many older ones it left out."""
    from correlator.timeline import MAX_TIMELINES

    n = MAX_TIMELINES + 7
    h = Harness(tmp_path, clock=lambda: 1714557600 + 3600 * n)  # the clock after the sends (none is ahead of it)
    head = "type,timeLogged,timeQueued,orig,rcpt,vmta,jobId,header_Message-Id\n"
    h.commit(batch("/l/acct-seed.csv", head + "".join(
        f"d,{1714557600 + 3600 * i + 5},{1714557600 + 3600 * i},s@x.example,seed@gmail.com,v1,jseed,<tpl@x>\n"
        for i in range(n))))
    async with h.client() as c:
        by_job = (await c.get("/api/v1/timeline", params={"job_id": "jseed", "rcpt": "seed@gmail.com"})).json()
        by_mid = (await c.get("/api/v1/timeline", params={"message_id": "tpl@x", "rcpt": "seed@gmail.com"})).json()
    for body in (by_job, by_mid):
        firsts = [tl["first_seen"] for tl in body["timelines"]]
        assert len(firsts) == MAX_TIMELINES and body["timelines_omitted"] == 7
        assert firsts == sorted(firsts) and (firsts[0], firsts[-1]) == ("2024-05-01T17:00:00Z", "2024-05-05T20:00:00Z")
    h.close()


async def test_the_text_timeline_says_how_many_older_sends_it_left_out(tmp_path: Path) -> None:
    from correlator.timeline import MAX_TIMELINES

    h = Harness(tmp_path, clock=lambda: 1714557600 + 3600 * (MAX_TIMELINES + 2))
    head = "type,timeLogged,timeQueued,orig,rcpt,vmta,jobId\n"
    h.commit(batch("/l/acct-seed.csv", head + "".join(
        f"d,{1714557600 + 3600 * i + 5},{1714557600 + 3600 * i},s@x.example,seed@gmail.com,v1,jseed\n"
        for i in range(MAX_TIMELINES + 2))))
    async with h.client() as c:
        text = (await c.get("/api/v1/timeline", params={"job_id": "jseed", "rcpt": "seed@gmail.com",
                                                         "format": "text"})).text
    assert text.splitlines()[0] == "job jseed rcpt seed@gmail.com  2 older sends not listed"
    h.close()


IMPLAUSIBLE_TIMES = batch(f"{LOG}/acct-2024-05-03-0009.csv", """
type,timeLogged,timeQueued,orig,rcpt,dsnAction,dsnStatus,dsnDiag,dsnMta,bounceCat,dlvSize,vmta,jobId,queue,vmtaPool
d,2036-01-01 00:00:00+0000,2036-01-01 00:00:00+0000,n@shop.example,future@gmail.com,relayed,2.0.0 (success),\
smtp;250 ok,gmail-smtp-in.l.google.com (1.2.3.4),,100,vmta1,J1,gmail.com/vmta1,pool-a
t,2024-05-03 23:20:00+0000,0,n@shop.example,zero@yahoo.com,delayed,4.7.0 (TSS04),smtp;421 4.7.0 [TSS04] deferred,\
mta7.am0.yahoodns.net (67.195.1.1),,,vmta1,J2,yahoo.com/vmta1,pool-a
d,2024-05-03 23:30:00+0000,2024-05-03 23:29:00+0000,n@shop.example,now@gmail.com,relayed,2.0.0 (success),\
smtp;250 ok,gmail-smtp-in.l.google.com (1.2.3.4),,100,vmta1,J3,gmail.com/vmta1,pool-a
d,2024-05-06 00:00:00+0000,2024-05-04 20:00:00+0000,n@shop.example,ahead@gmail.com,relayed,2.0.0 (success),\
smtp;250 ok,gmail-smtp-in.l.google.com (1.2.3.4),,100,vmta1,J4,gmail.com/vmta1,pool-a
""")


def test_times_the_metrics_do_not_believe_are_not_a_timelines_times_either(tmp_path: Path) -> None:
    """A record stamped 2036 (a PMTA host's clock before NTP synced it) was stored as first seen in 2036: never pruned,
    first in every search for years; a timeQueued of 0 (a placeholder) made a timeline first seen in 1970, outside
    every window. The metrics count both as bad_timestamp; the correlator now reads them as the records without that
    time: a timeLogged more than a day ahead of the clock is the time it was read, a timeQueued more than a year
    from its timeLogged is none."""
    from correlator.timeline import iso

    h = Harness(tmp_path)
    try:
        h.commit(IMPLAUSIBLE_TIMES)
        got = {rcpt: _by_rcpt(h, rcpt) for rcpt in ("future@gmail.com", "zero@yahoo.com", "now@gmail.com",
                                                    "ahead@gmail.com")}
    finally:
        h.close()
    seen = {rcpt: (t["first_seen"], t["queued_at"], t["last_seen"]) for rcpt, t in got.items()}
    assert seen == {
        "future@gmail.com": (iso(NOW), None, iso(NOW)),
        "zero@yahoo.com": ("2024-05-03T23:20:00Z", None, "2024-05-03T23:20:00Z"),
        "now@gmail.com": ("2024-05-03T23:29:00Z", "2024-05-03T23:29:00Z", "2024-05-03T23:30:00Z"),
        # its timeLogged 2 days ahead: timed when read, not by its timeQueued (20 h ahead, from the same clock)
        "ahead@gmail.com": (iso(NOW), "2024-05-04T20:00:00Z", iso(NOW)),
    }


@pytest.mark.parametrize("key_now", ["missing", "another"])
def test_a_store_keyed_with_one_hmac_key_refuses_another_or_none_naming_the_key_file(tmp_path: Path,
                                                                                      key_now: str) -> None:
    """A state directory restored or moved without its key file got a new key silently: every stored timeline was
    lost to lookups by recipient, and the store was marked with the new key, so putting the old one back lost the
    timelines written meanwhile. The start is refused instead, naming the key file; a missing key is not created."""
    from exporter.config import CorrelatorConfig
    from exporter.state import StateError

    key = tmp_path / "keys" / "hmac.key"
    key.parent.mkdir()
    config = CorrelatorConfig(hash_recipients=True, hmac_key_file=key)
    h = Harness(tmp_path, config)
    h.commit(ACCT_0)
    h.close()
    if key_now == "missing":
        key.unlink()
    else:
        key.write_text("f" * 64 + "\n")
    with pytest.raises(StateError) as refused:
        Harness(tmp_path, config)
    said = str(refused.value)
    assert said.startswith(f"{key}: ") and "move the store aside" in said, said
    assert key.exists() is (key_now == "another")
    mode = sqlite3.connect(tmp_path / "state.db").execute("SELECT value FROM corr_meta WHERE key='rcpt_mode'")
    assert mode.fetchone()[0].startswith("hmac:")  # still the first key's


async def test_a_hashed_search_cursor_carries_nothing_derived_from_the_address_alone(tmp_path: Path) -> None:
    """A search's next_cursor held an unkeyed 48-bit digest of the address searched: a dictionary of 200k candidate
    addresses recovered it from a saved answer in 0.5 s. Derived from the recipient's key, it differs with the HMAC
    key (and means nothing without it), and it still pages."""
    from correlator.api import decode_token
    from exporter.config import CorrelatorConfig

    two = batch("/l/acct-2.csv", """
type,timeLogged,timeQueued,orig,rcpt,dsnStatus,jobId
d,2024-05-01 10:00:00+0000,2024-05-01 09:59:00+0000,a@s.example,Alice@Gmail.com,2.0.0,J1
d,2024-05-01 11:00:00+0000,2024-05-01 10:59:00+0000,a@s.example,alice@gmail.com,2.0.0,J2
""")
    fingerprints = []
    for name in ("one", "two"):
        (tmp_path / name).mkdir()
        h = Harness(tmp_path / name, CorrelatorConfig(hash_recipients=True, hmac_key_file=tmp_path / name / "k"))
        h.commit(two)
        async with h.client() as c:
            first = (await c.get("/api/v1/search", params={"rcpt": "alice@gmail.com", "limit": 1})).json()
            second = (await c.get("/api/v1/search", params={"rcpt": "alice@gmail.com", "limit": 1,
                                                             "cursor": first["next_cursor"]})).json()
        assert [i["job_id"] for i in first["items"] + second["items"]] == ["J2", "J1"]
        assert second["next_cursor"] is None
        fingerprints.append(decode_token(first["next_cursor"], max_chars=1000, max_depth=1)[2])
        h.close()
    assert fingerprints[0] != fingerprints[1]


async def test_an_answer_cuts_every_long_text_field_so_its_size_is_bounded(tmp_path: Path) -> None:
    """Anyone who can mail the bounce or FBL address writes the reply, user agent, reporting MTA and envelope
    fields of a report: 100 reports with a 200,000-character reply made each answer naming the timeline 20 MB
    (hostile review 2026-12-06). Every text field of an answer is cut to timeline.TEXT_CAP characters with a mark,
    in SQL, so neither the answer nor the rows read for it hold the rest; a field within the cap is whole."""
    from correlator.timeline import CUT_MARK, TEXT_CAP

    h = Harness(tmp_path)
    _deferred_then_reported(h, deferrals=1, reports=0)
    long = "smtp;552 " + "A" * 100_000  # csv.reader (the test batches) stops at 131,072
    ua = "UA/" + "u" * 50_000
    rmta = "r" * (TEXT_CAP + 1)
    head = "type,timeLogged,orig,rcpt,dsnStatus,dsnDiag,reportingMta,header_Message-Id\n"
    h.commit(batch("/l/bounce-9.csv", head + "".join(
        f"rb,{1714640000 + i},s@shop.example,a@gmail.com,5.2.2,{long},{rmta},<M@x>\n" for i in range(20))))
    h.commit(batch("/l/fbl-9.csv", "type,timeLogged,orig,rcpt,feedbackType,userAgent,reportingMta,header_Message-Id\n"
                   f"f,1714650000,s@shop.example,a@gmail.com,abuse,{ua},{'f' * TEXT_CAP},<M@x>\n"))
    async with h.client() as c:
        answers = [await c.get("/api/v1/timeline", params={"job_id": "J9", "rcpt": "a@gmail.com"}),
                   await c.get("/api/v1/messages/M@x"),
                   await c.get("/api/v1/timeline", params={"job_id": "J9", "rcpt": "a@gmail.com", "format": "text"})]
    assert [a.status_code for a in answers] == [200, 200, 200]
    for answer in answers:
        assert len(answer.content) < 21 * 3 * (TEXT_CAP + 200) + 20_000, len(answer.content)
    for (tl,) in (answers[0].json()["timelines"], answers[1].json()["recipients"]):
        reports = [ev for ev in tl["events"] if ev["kind"] == "remote_bounce"]
        assert len(reports) == 20
        for ev in reports:
            assert ev["dsn_diag"] == long[:TEXT_CAP] + CUT_MARK
            assert ev["reporting_mta"] == rmta[:TEXT_CAP] + CUT_MARK
        (fbl,) = [ev for ev in tl["events"] if ev["kind"] == "complaint"]
        assert fbl["user_agent"] == ua[:TEXT_CAP] + CUT_MARK
        assert fbl["reporting_mta"] == "f" * TEXT_CAP  # at the cap: whole, no mark
        assert fbl["feedback_type"] == "abuse"
    assert long[:TEXT_CAP] + CUT_MARK in answers[2].text
    h.close()


async def test_an_answer_of_many_events_cuts_each_field_shorter(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                                 ) -> None:
    """Each field at 4,096 characters, the 10,000 events and as many queue events of a page could still make one
    answer ~200 MB: the events listed share timeline.EVENT_TEXT_BUDGET, each field cut to budget / (events x 4)
    (at least MIN_TEXT_CAP, at most TEXT_CAP)."""
    from correlator import timeline

    h = Harness(tmp_path)
    _deferred_then_reported(h, deferrals=1, reports=20)
    long = "smtp;552 " + "A" * 100_000
    h.commit(batch("/l/bounce-8.csv", "type,timeLogged,orig,rcpt,dsnStatus,dsnDiag,header_Message-Id\n"
                   f"rb,1714650000,s@shop.example,a@gmail.com,5.2.2,{long},<M@x>\n"))
    listed = 1 + 1 + 20 + 1 + 100  # its deferral, delivery, 21 remote bounces and up to 100 queue events
    monkeypatch.setattr(timeline, "EVENT_TEXT_BUDGET", listed * 4 * 1000)
    assert timeline.event_text_cap(listed) == 1000 and timeline.event_text_cap(10**9) == timeline.MIN_TEXT_CAP
    async with h.client() as c:
        (tl,) = (await c.get("/api/v1/timeline", params={"job_id": "J9", "rcpt": "a@gmail.com"})).json()["timelines"]
    (big,) = [ev for ev in tl["events"] if (ev["dsn_diag"] or "").startswith("smtp;552 A")]
    assert big["dsn_diag"] == long[:1000] + "… [cut: longer than 1,000 characters]"
    assert [ev["dsn_diag"] for ev in tl["events"] if ev["kind"] == "remote_bounce"][0] == "smtp;552 mailbox full 0"
    h.close()


async def test_a_page_lists_queue_events_within_its_events_per_timeline(tmp_path: Path,
                                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """A timeline lists at most events_per_timeline(n) queue events as well as own ones: the text-budget change
    (82833ee) reused the name `cap` for the text cut, and the queue events' bound became max_queue_events again."""
    from correlator import timeline

    h = Harness(tmp_path)
    _deferred_then_reported(h, deferrals=1, reports=0)
    h.commit(batch("/l/diag-9.csv", "type,timeLogged,dsnStatus,dsnDiag,vmta,queue\n" + "".join(
        f"tq,{1714557600 + i},4.7.0,smtp;421 queue busy {i},v1,gmail.com/v1\n" for i in range(1, 31))))
    monkeypatch.setattr(timeline, "PAGE_EVENTS", 10)
    async with h.client() as c:
        (tl,) = (await c.get("/api/v1/timeline", params={"job_id": "J9", "rcpt": "a@gmail.com"})).json()["timelines"]
    assert sum(ev["kind"] == "queue_deferred" for ev in tl["events"]) == 10
    assert tl["queue_events_omitted"] == 20
    h.close()
