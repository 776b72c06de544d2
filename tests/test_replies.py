"""GET /api/v1/replies on a real SQLite store written by the correlator's real ingest path (CorrelatorSink.write)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from correlator.replies import normalise
from tests.test_correlator_support import CORPUS, LOG, Harness, batch

GMAIL_428 = (
    "smtp;421-4.7.28 [{ip}      15] Gmail has detected an unusual rate of unsolicited mail originating from your IP "
    "address. 421-4.7.28 https://support.google.com/mail/?p=UnsolicitedRateLimitError {gid} - gsmtp"
)
# Two more Gmail 4.7.28 deferrals of vmta1 that differ only in the per-message parts, one Yahoo
# deferral of vmta2, and one Gmail bounce of vmta1 outside the queried window.
THROTTLE = batch(f"{LOG}/diag-2024-05-01-0002.csv", f"""
type,timeLogged,timeQueued,orig,rcpt,dsnAction,dsnStatus,dsnDiag,dsnMta,bounceCat,vmta,jobId,queue,vmtaPool
t,2024-05-01 11:00:00+0000,2024-05-01 10:50:00+0000,news@shop.example,frank@gmail.com,delayed,4.7.28 (unusual rate),\
"{GMAIL_428.format(ip='198.51.100.12', gid='d75a77b69052e-4a9b3b1c2f1si123456qtb.12')}",\
gmail-smtp-in.l.google.com (142.250.1.27),,vmta1,J9,gmail.com/vmta1,pool-a
t,2024-05-01 11:01:00+0000,2024-05-01 10:51:00+0000,news@shop.example,gina@gmail.com,delayed,4.7.28 (unusual rate),\
"{GMAIL_428.format(ip='198.51.100.13', gid='a640c23a62f3a-5b0c4c2d3g2si99qtb.7')}",\
gmail-smtp-in.l.google.com (142.250.1.27),,vmta1,J9,gmail.com/vmta1,pool-a
t,2024-05-01 11:02:00+0000,2024-05-01 10:52:00+0000,news@shop.example,hank@yahoo.com,delayed,4.7.0 (TSS04),\
smtp;421 4.7.0 [TSS04] Messages from 198.51.100.20 temporarily deferred,mta7.am0.yahoodns.net (67.195.1.1),,vmta2,\
J9,yahoo.com/vmta2,pool-b
""")
WINDOW = {"since": "2024-05-01T10:00:00Z", "until": "2024-05-01T13:00:00Z"}


@pytest.fixture
def h(tmp_path: Path) -> Iterator[Harness]:
    harness = Harness(tmp_path)
    for b in (*CORPUS, THROTTLE):
        harness.commit(b)
    yield harness
    harness.close()


def test_normalise_takes_out_what_varies_per_message() -> None:
    a = normalise(GMAIL_428.format(ip="198.51.100.12", gid="d75a77b69052e-4a9b3b1c2f1si123456qtb.12"))
    b = normalise(GMAIL_428.format(ip="203.0.113.9", gid="x1si99qtb.7"))
    assert a == b == (
        "421-4.7.28 [<ip> 15] Gmail has detected an unusual rate of unsolicited mail originating from your IP "
        "address. 421-4.7.28 https://support.google.com/mail/?p=UnsolicitedRateLimitError <id> - gsmtp")
    assert normalise("smtp;550 5.1.1 <bob@yahoo.com>: user unknown") == "550 5.1.1 <<addr>>: user unknown"
    assert normalise("250 2.0.0 OK  1718190000 s1si2.3 - gsmtp") == "250 2.0.0 OK <n> <id> - gsmtp"


async def test_top_replies_of_one_vmta_and_isp(h: Harness) -> None:
    async with h.client() as c:
        r = await c.get("/api/v1/replies", params={"vmta": "vmta1", "isp": "gmail", **WINDOW})
    assert r.status_code == 200, r.text
    body = r.json()
    assert (body["vmta"], body["isp"], body["total"], body["window_capped"], body["scan_limited"]) == (
        ["vmta1"], ["gmail"], 5, False, False)
    got = [(x["kind"], x["count"], x["reply"][:39], x["status"], x["vmta"], x["isp"]) for x in body["replies"]]
    assert got == [
        ("deferred", 2, "421-4.7.28 [<ip> 15] Gmail has detected", "4.7.28 (unusual rate)", "vmta1", "gmail"),
        ("queue_deferred", 1, "421 later", "4.0.0 (other)", "vmta1", "gmail"),
        ("queue_deferred", 1, "421 too many connections", "4.0.0 (other)", "vmta1", "gmail"),
        ("deferred", 1, "421-4.7.28 unusual rate of unsolicited ", "4.7.28 (unusual rate)", "vmta1", "gmail"),
    ]
    top = body["replies"][0]
    assert top["share"] == 0.4 and top["response_class"] == "deferred"  # the harness's class_of
    assert (top["first_seen"], top["last_seen"]) == ("2024-05-01T11:00:00Z", "2024-05-01T11:01:00Z")
    assert "198.51.100.1" in top["example"]


async def test_all_vmtas_and_isps_as_grafana_sends_them(h: Harness) -> None:
    async with h.client() as c:
        every = (await c.get("/api/v1/replies", params={"vmta": ".*", "isp": "$__all", **WINDOW})).json()
        two = (await c.get("/api/v1/replies", params={"vmta": "{vmta1,vmta2}", "isp": "yahoo", **WINDOW})).json()
        limited = (await c.get("/api/v1/replies", params={"limit": 1, **WINDOW})).json()
    assert every["vmta"] is None and every["isp"] is None
    assert every["total"] == 8  # + bob's TSS04 deferral and bounce (vmta1, yahoo) and hank's deferral (vmta2)
    assert sorted((x["vmta"], x["kind"], x["count"]) for x in two["replies"]) == [
        ("vmta1", "bounced", 1), ("vmta1", "deferred", 1), ("vmta2", "deferred", 1)]
    assert {x["isp"] for x in two["replies"]} == {"yahoo"}
    assert [x["count"] for x in limited["replies"]] == [2] and limited["total"] == 8


NO_POOL = batch(f"{LOG}/diag-2024-05-01-0003.csv", """
type,timeLogged,timeQueued,orig,rcpt,dsnAction,dsnStatus,dsnDiag,dsnMta,bounceCat,vmta,jobId,queue,vmtaPool
t,2024-05-01 11:30:00+0000,2024-05-01 11:00:00+0000,n@shop.example,ivy@gmail.com,delayed,4.2.0 (other),\
smtp;421 try again,gmail-smtp-in.l.google.com (142.250.1.27),,vmta4,J7,gmail.com/vmta4,
tq,2024-05-01 11:40:00+0000,,,,delayed,4.0.0 (other),smtp;421 later again,\
gmail-smtp-in.l.google.com (142.250.1.27),,vmta4,,gmail.com/vmta4,
""")


async def test_a_pool_selects_the_records_its_metrics_count(h: Harness) -> None:
    """The cluster board's pool filter reached every panel but this one: Why showed every pool's replies. A record's
    vmtaPool decides, as for the metrics' vmta_pool label; `none` is a record without one."""
    h.commit(NO_POOL)
    async with h.client() as c:
        async def ask(**params: str) -> dict:
            r = await c.get("/api/v1/replies", params={**params, **WINDOW})
            assert r.status_code == 200, r.text
            return r.json()
        b, a, none, both, every = (await ask(pool="pool-b"), await ask(pool="{pool-a}"), await ask(pool="none"),
                                   await ask(pool="pool-a,none", isp="gmail"), await ask(pool="$__all"))
        too_many = await c.get("/api/v1/replies", params={"pool": ",".join(f"p{i}" for i in range(51))})
    assert (b["pool"], b["total"], [(x["vmta"], x["kind"], x["count"]) for x in b["replies"]]) == (
        ["pool-b"], 1, [("vmta2", "deferred", 1)])
    assert a["total"] == 7 and {x["vmta"] for x in a["replies"]} == {"vmta1"}
    assert none["total"] == 2 and sorted((x["vmta"], x["kind"]) for x in none["replies"]) == [
        ("vmta4", "deferred"), ("vmta4", "queue_deferred")]
    assert both["total"] == 5 + 2 and every["pool"] is None and every["total"] == 8 + 2
    assert (too_many.status_code, too_many.json()["parameter"]) == (400, "pool")


async def test_window_is_capped_and_bad_input_is_400(h: Harness) -> None:
    async with h.client() as c:
        capped = (await c.get("/api/v1/replies", params={"since": "2024-04-01T00:00:00Z",
                                                        "until": "2024-05-01T13:00:00Z"})).json()
        bad = [await c.get("/api/v1/replies", params=p) for p in (
            {"limit": 0}, {"limit": 101}, {"since": "yesterday-ish"}, {"since": "2024-05-02", "until": "2024-05-01"},
            {"vmta": ",".join(f"v{i}" for i in range(51))})]
    assert capped["window_capped"] and capped["since"] == "2024-04-30T13:00:00Z"
    assert [(r.status_code, r.json()["parameter"]) for r in bad] == [
        (400, "limit"), (400, "limit"), (400, "since"), (400, "since"), (400, "vmta")]


async def test_double_slash_from_an_infinity_base_url_with_a_trailing_slash(h: Harness) -> None:
    async with h.client() as c:
        r = await c.get("http://test//api/v1/replies", params={"vmta": "vmta1", "limit": 1, **WINDOW})
        assert r.status_code == 308 and r.headers["location"].startswith("/api/v1/replies?vmta=vmta1&limit=1&")
        followed = await c.get("http://test//api/v1/flows", params={"since": WINDOW["since"]}, follow_redirects=True)
    assert followed.status_code == 200 and followed.json()["nodes"]


async def test_an_encoded_slash_is_not_a_double_slash_to_redirect(h: Harness) -> None:
    """`/%2Fapi/v1/...` decodes to `//api/v1/...`, but the client sent one slash: the redirect built from the raw
    path pointed at itself, a loop (`curl -L` gave up after its 50 redirects)."""
    async with h.client() as c:
        for path in ("/%2Fapi/v1/replies", "/%2F%2Fapi/v1/flows", "//%2Fapi/v1/flows"):
            r = await c.get("http://test" + path)
            assert (r.status_code, r.headers.get("location")) == (404, None), path


async def test_an_unknown_message_ids_404_quotes_it_cut_short(h: Harness) -> None:
    """A 15,000-character Message-Id came back whole in the 404 (times were already cut to 64 characters)."""
    async with h.client() as c:
        r = await c.get("/api/v1/messages/" + "m" * 15_000)
    assert r.status_code == 404
    assert r.json()["error"] == "no timeline for Message-Id '" + "m" * 64 + "'..."


async def test_lookup_answers_empty_and_unknown_keys_with_an_empty_list(h: Harness) -> None:
    async with h.client() as c:
        empty = await c.get("/api/v1/lookup", params={"message_id": "", "job_id": "", "rcpt": ""})
        unknown = await c.get("/api/v1/lookup", params={"message_id": "nope@nowhere"})
        by_message = await c.get("/api/v1/lookup", params={"message_id": "<m1@shop.example>", "rcpt": ""})
        by_job = await c.get("/api/v1/lookup", params={"message_id": "", "job_id": "J1", "rcpt": "Bob@Yahoo.com"})
    assert [r.status_code for r in (empty, unknown, by_message, by_job)] == [200, 200, 200, 200]
    assert empty.json()["timelines"] == [] and empty.json()["hint"].startswith("enter a Message-Id")
    assert unknown.json()["timelines"] == [] and unknown.json()["hint"].startswith("no timeline")
    (tl,) = by_message.json()["timelines"]
    assert tl["rcpt"] == "alice@gmail.com" and len(tl["events"]) == 6 and by_message.json()["hint"] is None
    assert [t["rcpt"] for t in by_job.json()["timelines"]] == ["bob@yahoo.com"]


def test_the_scan_budget_bounds_the_work_and_says_so(h: Harness) -> None:
    from correlator.replies import reply_rows
    from correlator.timeline import iso

    since, until = 1714557600.0, 1714568400.0  # the WINDOW
    assert iso(since) == WINDOW["since"] and iso(until) == WINDOW["until"]
    with h.sink.pool.connection() as conn:
        full, limited = reply_rows(conn, since, until, None)
        cut, cut_limited = reply_rows(conn, since, until, ["vmta1"], budget=1)
    assert not limited and sum(r.count for r in full) == 8
    assert cut_limited and sum(r.count for r in cut) < 8


async def test_double_slash_keeps_a_message_id_with_question_mark_hash_or_percent(h: Harness) -> None:
    """`?`, `#` and `%XX` are legal in a Message-Id: the redirect carries the path as the client encoded it, so
    the followed request finds what the direct one finds (a decoded path re-quoted made `%3F` a query)."""
    from correlator.api import path_segment

    head = "type,timeLogged,timeQueued,orig,rcpt,dsnStatus,vmta,jobId,header_Message-Id\n"
    mids = ("a?b@x", "c%41d@x", "e#f@x", "g h@x")
    h.commit(batch("/l/acct-odd.csv", head + "".join(
        f"d,2024-05-01 10:05:00+0000,2024-05-01 10:00:00+0000,s@shop.example,r{i}@gmail.com,2.0.0,v1,J9,<{m}>\n"
        for i, m in enumerate(mids))))
    async with h.client() as c:
        for mid in mids:
            r = await c.get("http://test//api/v1/messages/" + path_segment(mid), params={"limit": 5})
            assert r.status_code == 308, mid
            assert r.headers["location"] == "/api/v1/messages/" + path_segment(mid) + "?limit=5"
            followed = await c.get(r.headers["location"])
            assert followed.status_code == 200 and followed.json()["message_id"] == mid, (mid, followed.text[:200])


async def test_flows_with_until_before_since_is_a_400_as_replies_is(h: Harness) -> None:
    """`/flows?since=1h&until=2h` answered an empty 200 ("No traffic" on the page) where /replies says why."""
    async with h.client() as c:
        flows = await c.get("/api/v1/flows", params={"since": "1h", "until": "2h"})
        replies = await c.get("/api/v1/replies", params={"since": "1h", "until": "2h"})
    for r in (flows, replies):
        assert (r.status_code, r.json()["parameter"], r.json()["error"]) == (400, "since", "since must be before until")


async def test_lookup_of_a_recipients_many_sends_lists_the_latest_and_counts_the_rest(tmp_path: Path) -> None:
    """/lookup took the first `limit` of the latest MAX_TIMELINES sends (sends 51-60 of 150 for limit=10: neither the
    latest nor the oldest) and said nothing of the others."""
    harness = Harness(tmp_path, clock=lambda: 1714557600 + 3600 * 150)  # the clock after the sends
    head = "type,timeLogged,timeQueued,orig,rcpt,vmta,jobId,header_Message-Id\n"
    harness.commit(batch("/l/acct-seed.csv", head + "".join(
        f"d,{1714557600 + 3600 * i + 5},{1714557600 + 3600 * i},s@x.example,seed@gmail.com,v1,jseed,<tpl@x>\n"
        for i in range(150))))
    async with harness.client() as c:
        by_job = (await c.get("/api/v1/lookup", params={"job_id": "jseed", "rcpt": "seed@gmail.com", "limit": 10})).json()
        by_mid = (await c.get("/api/v1/lookup", params={"message_id": "tpl@x", "limit": 10})).json()
    harness.close()
    assert [tl["first_seen"] for tl in by_job["timelines"]][-1] == "2024-05-07T15:00:00Z"  # send 150, the latest
    assert (len(by_job["timelines"]), by_job["timelines_omitted"]) == (10, 140)
    assert (len(by_mid["timelines"]), by_mid["timelines_omitted"]) == (10, 140)


async def test_a_relative_window_is_echoed_in_whole_seconds_as_every_time_the_api_gives(tmp_path: Path) -> None:
    """`since=24h` echoed `2026-12-04T20:10:31.010495Z` (docs/api.md: times look like `2024-05-01T10:20:00Z`, as
    /flows and /search give them; review 2026-12-04)."""
    harness = Harness(tmp_path, clock=lambda: 1714780800.4567)
    try:
        async with harness.client() as c:
            body = (await c.get("/api/v1/replies", params={"since": "24h"})).json()
        assert (body["since"], body["until"]) == ("2024-05-03T00:00:00Z", "2024-05-04T00:00:00Z")
    finally:
        harness.close()


LONG_QUEUED = batch(f"{LOG}/diag-2024-05-03-0000.csv", """
type,timeLogged,timeQueued,orig,rcpt,dsnAction,dsnStatus,dsnDiag,dsnMta,bounceCat,vmta,jobId,queue,vmtaPool
t,2024-05-03 23:10:00+0000,2024-05-03 22:00:00+0000,n@shop.example,fresh@yahoo.com,delayed,4.7.0 (TSS04),\
smtp;421 4.7.0 [TSS04] deferred,mta7.am0.yahoodns.net (67.195.1.1),,vmta1,J1,yahoo.com/vmta1,pool-a
t,2024-05-03 23:20:00+0000,2024-05-01 22:00:00+0000,n@shop.example,old@yahoo.com,delayed,4.7.0 (TSS04),\
smtp;421 4.7.0 [TSS04] deferred,mta7.am0.yahoodns.net (67.195.1.1),,vmta1,J2,yahoo.com/vmta1,pool-a
b,2024-05-03 23:30:00+0000,2024-04-29 23:30:00+0000,n@shop.example,expired@yahoo.com,failed,4.4.7 (delivery expired),\
smtp;421 4.7.0 [TSS04] deferred,mta7.am0.yahoodns.net (67.195.1.1),message-expired,vmta1,J3,yahoo.com/vmta1,pool-a
""")


async def test_replies_of_messages_queued_days_before_the_window_are_counted(tmp_path: Path) -> None:
    """A message retried for days (and every message-expired bounce) was left out: timelines were picked by when the
    message was first seen, at most a day before the window, not by when the reply came."""
    h = Harness(tmp_path)
    try:
        h.commit(LONG_QUEUED)
        async with h.client() as c:
            r = await c.get("/api/v1/replies", params={"since": "2024-05-03T23:00:00Z",
                                                       "until": "2024-05-04T00:00:00Z"})
    finally:
        h.close()
    body = r.json()
    assert (body["total"], body["scan_limited"]) == (3, False)
    assert sorted((x["kind"], x["count"]) for x in body["replies"]) == [("bounced", 1), ("deferred", 2)]


def test_the_window_is_read_through_the_reply_events_time_index(h: Harness) -> None:
    """Bounded cost without a first_seen lookback: the events of the window are found by their own time."""
    from correlator.replies import reply_rows

    statements: list[str] = []
    with h.sink.pool.connection() as conn:
        conn.set_trace_callback(statements.append)
        try:
            reply_rows(conn, 1714557600.0, 1714568400.0, ["vmta1"])
        finally:
            conn.set_trace_callback(None)
        events = [s for s in statements if "FROM corr_events" in s]
        plans = [" | ".join(r[3] for r in conn.execute(f"EXPLAIN QUERY PLAN {s}")) for s in events]
    assert len(plans) == 2 and all("USING INDEX corr_ev_reply_t (t>? AND t<?)" in p for p in plans), plans



def test_a_selective_filter_examines_at_most_the_budget_of_the_windows_events(h: Harness) -> None:
    """A rare VMTA's filter was applied while walking the time index: every t and b event of the window was read to
    find its few (0.99 s on 3M events, a 503 on a large store). The newest `budget` events are examined, then
    filtered, and the answer says the scan was cut."""
    from correlator import store
    from correlator.replies import reply_rows

    since, until = 1714557600.0, 1714568400.0  # the WINDOW
    with h.sink.pool.connection() as conn:
        events = conn.execute(f"SELECT vmta FROM corr_events WHERE {store.REPLY_EVENTS} AND t >= ? AND t < ?"
                              " ORDER BY t DESC", (since, until)).fetchall()
        rare = next(v for (v,) in events if v != events[0][0])  # a VMTA the newest event is not of
        cut, cut_limited = reply_rows(conn, since, until, [rare], budget=1)
        whole, whole_limited = reply_rows(conn, since, until, [rare])
    assert ([r for r in cut if r.kind != "tq"], cut_limited) == ([], True)  # queue events have their own budget
    assert sum(r.count for r in whole if r.kind != "tq") == sum(1 for (v,) in events if v == rare)
    assert not whole_limited


def test_a_reply_text_of_200k_characters_is_normalised_at_once() -> None:
    """Review 2026-12-05: one deferral whose reply held 200,000 characters without a space froze the daemon for
    ~200 s on /api/v1/replies (the per-address pattern is quadratic in a text without spaces; the query budget is
    checked between rows): /metrics, /healthz and every page waited. The text is cut before it is normalised (only
    MAX_TEXT characters are kept). A subprocess with a 30 s guard: the check is liveness, not speed."""
    import subprocess
    import sys

    from tests.conftest import REPO

    code = ("from correlator.replies import normalise, MAX_TEXT\n"
            "out = normalise('smtp;421 ' + 'A' * 200000 + ' bob@yahoo.com')\n"
            "assert out == ('421 ' + 'A' * MAX_TEXT)[:MAX_TEXT] + '…', out[:50]\n"
            "assert normalise('smtp;421 4.7.0 <bob@yahoo.com> try later') == '421 4.7.0 <<addr>> try later'\n")
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=30)
    assert proc.returncode == 0, proc.stderr


def test_a_reply_cut_before_it_is_normalised_says_so() -> None:
    """A 1,700-digit token shrank to `<n>` and the cut-off rest (`mailbox full`) left no trace: no ellipsis."""
    assert normalise("smtp; 552 5.2.2 " + "1" * 1700 + " mailbox full") == "552 5.2.2 <n>…"
