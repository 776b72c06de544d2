"""A report timed by its Arrival-Date is about a send PMTA logged up to ARRIVAL_SLACK after it.

An ARF Arrival-Date is when the ISP received the message: inside the SMTP transaction at whose end (end of DATA, the
250 reply, then the log line) PMTA writes the `d` record, so usually seconds *before* that record's timeLogged, and
from another host's clock. The "delivered or bounced at or before the report" cut (the only recipient of a Message-Id,
the latest send of a key, the rcpt + orig fallback) was exact, so such a complaint became a `rcpt: null` timeline of its
own and its metrics' vmta `unknown` (review of 1f6c5ee, /tmp/revA). A report timed by its timeLogged keeps the exact
cut: read live or in a backfill it joins the same timeline.

And attribution read `timeLogged` itself: in a combined CSV file (an f row's timeLogged empty, its arrivalDate set) a
complaint was attributed at the time it was read, not at its arrivalDate as its JSON twin and its timeline are.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from correlator.prepare import ARRIVAL_SLACK
from tests.test_attribution_recipients import _harness
from tests.test_correlator_report_order import _timelines
from tests.test_correlator_support import batch, vp

Q = 1714557600  # 2024-05-01 10:00:00 UTC
DONE = Q + 600  # x's delivery: 10:10:00
ACCT = "type,timeLogged,timeQueued,orig,rcpt,vmta,jobId,header_Message-Id"
FBL_ARRIVAL = "type,arrivalDate,orig,rcpt,feedbackType,header_Message-Id"  # no timeLogged column: its arrivalDate
FBL_BOTH = "type,timeLogged,arrivalDate,orig,rcpt,feedbackType,header_Message-Id"  # a combined file's columns
FBL_LOGGED = "type,timeLogged,orig,rcpt,feedbackType,header_Message-Id"
ARRIVED = '"Wed, 01 May 2024 10:09:58 +0000"'  # 2 s before PMTA logged x's `d`


def _brief(found: list[dict]) -> list[tuple]:
    """(rcpt, outcome, event kinds) of each timeline; the kinds sorted (a complaint arrived before its `d` was logged
    is listed before it)."""
    return sorted(((tl["rcpt"], tl["outcome"], sorted(e["kind"] for e in tl["events"])) for tl in found), key=str)


JOINED = [("x@hotmail.com", "complained", ["complaint", "delivered", "queued"])]
APART = [("x@hotmail.com", "delivered", ["delivered", "queued"]), (None, "complained", ["complaint"])]


def _acct(*rows: str) -> tuple[str, str, list[str], int]:
    return ("/l/acct.csv", ACCT, [f"d,{DONE},{Q},n@s.com,x@hotmail.com,v1,J1,<m1@s>", *rows], 2)


@pytest.mark.parametrize("header,row", [
    (FBL_ARRIVAL, f"f,{ARRIVED},n@s.com,,abuse,<m1@s>"),  # the reviewer's repro
    (FBL_BOTH, f"f,,{ARRIVED},n@s.com,,abuse,<m1@s>"),  # timeLogged empty in a combined file
])
def test_an_arrival_dated_complaint_without_recipient_joins_its_only_recipient(
        tmp_path: Path, header: str, row: str) -> None:
    found = _timelines(tmp_path, [_acct(), ("/l/fbl.csv", header, [row], 2)])
    assert _brief(found) == JOINED


def test_an_arrival_dated_complaint_with_recipient_joins_its_send(tmp_path: Path) -> None:
    """By Message-Id + rcpt, and by rcpt + orig (no Message-Id: the fallback), as for one without recipient."""
    by_key = ("/l/fbl.csv", FBL_ARRIVAL, [f"f,{ARRIVED},n@s.com,x@hotmail.com,abuse,<m1@s>"], 2)
    assert _brief(_timelines(tmp_path / "key", [_acct(), by_key])) == JOINED
    by_orig = ("/l/fbl.csv", FBL_ARRIVAL, [f"f,{ARRIVED},n@s.com,x@hotmail.com,abuse,"], 2)
    assert _brief(_timelines(tmp_path / "orig", [_acct(), by_orig])) == JOINED


def test_a_complaint_timed_by_its_time_logged_keeps_the_exact_cut(tmp_path: Path) -> None:
    """1f6c5ee: logged before the delivery, it is about no send of it (read live or in a backfill alike)."""
    fbl = ("/l/fbl.csv", FBL_LOGGED, [f"f,{DONE - 2},n@s.com,,abuse,<m1@s>"], 2)
    assert _brief(_timelines(tmp_path / "a", [_acct(), fbl])) == APART
    both = ("/l/fbl.csv", FBL_BOTH, [f"f,{DONE - 2},{ARRIVED},n@s.com,,abuse,<m1@s>"], 2)  # timeLogged wins
    assert _brief(_timelines(tmp_path / "b", [_acct(), both])) == APART


def _arrival(t: float) -> str:
    from email.utils import formatdate
    return f'"{formatdate(t, usegmt=True)}"'


def test_the_slack_is_arrival_slack_and_no_more(tmp_path: Path) -> None:
    assert ARRIVAL_SLACK == 900
    at = ("/l/fbl.csv", FBL_ARRIVAL, [f"f,{_arrival(DONE - ARRIVAL_SLACK)},n@s.com,,abuse,<m1@s>"], 2)
    assert _brief(_timelines(tmp_path / "at", [_acct(), at])) == JOINED
    past = ("/l/fbl.csv", FBL_ARRIVAL, [f"f,{_arrival(DONE - ARRIVAL_SLACK - 1)},n@s.com,,abuse,<m1@s>"], 2)
    assert _brief(_timelines(tmp_path / "past", [_acct(), past])) == APART


def test_live_and_backfill_agree_on_an_arrival_dated_complaint(tmp_path: Path) -> None:
    """y@ (same Message-Id) is delivered an hour after the complaint: read live, the complaint found x alone; in a
    backfill y is stored too, and is not counted (delivered past the slack), so it joins x in both."""
    fbl = ("/l/fbl.csv", FBL_ARRIVAL, [f"f,{ARRIVED},n@s.com,,abuse,<m1@s>"], 2)
    later = ("/l/acct.csv", ACCT, [f"d,{DONE + 3600},{Q},n@s.com,y@hotmail.com,v2,J1,<m1@s>"], 3)
    live = _brief(_timelines(tmp_path / "live", [_acct(), fbl, later]))
    backfill = _brief(_timelines(tmp_path / "backfill", [_acct(later[2][0]), fbl]))
    want = sorted([*JOINED, ("y@hotmail.com", "delivered", ["delivered", "queued"])], key=str)
    assert live == backfill == want


ATT_ACCT = ("type,timeLogged,timeQueued,orig,rcpt,dsnMta,vmta,vmtaPool,jobId,header_Message-Id\n"
            "d,2024-05-01 10:10:00+0000,2024-05-01 10:00:00+0000,b@n.com,x@hotmail.com,mx.example (1.1.1.1),vmta1,"
            "pool-vmta1,,<m1@n.com>\n")


def _lookup(tmp_path: Path, where: str, head: str, row: str) -> list:
    h = _harness(tmp_path, where, batch("/l/acct-0.csv", ATT_ACCT))
    try:
        fbl = batch("/l/fbl.csv", f"{head}\n{row}\n")
        return vp(h.sink.lookup_vmta(fbl.columns, fbl.rows))
    finally:
        h.close()


@pytest.mark.parametrize("where", ["memory", "store"])
@pytest.mark.parametrize("head,row", [
    ("type,arrivalDate,orig,rcpt,jobId,header_Message-Id,feedbackType", f"f,{ARRIVED},b@n.com,,,<m1@n.com>,abuse"),
    ("type,timeLogged,arrivalDate,orig,rcpt,jobId,header_Message-Id,feedbackType",
     f"f,,{ARRIVED},b@n.com,,,<m1@n.com>,abuse"),
    ("type,arrivalDate,orig,rcpt,jobId,header_Message-Id,feedbackType",
     f"f,{ARRIVED},b@n.com,x@hotmail.com,,<m1@n.com>,abuse"),
    ("type,arrivalDate,orig,rcpt,jobId,header_Message-Id,feedbackType", f"f,{ARRIVED},b@n.com,x@hotmail.com,,,abuse"),
], ids=["no-rcpt", "no-rcpt-combined", "mid-rcpt", "rcpt-orig"])
def test_an_arrival_dated_complaint_is_attributed_to_its_delivery(tmp_path: Path, where: str, head: str,
                                                                  row: str) -> None:
    assert _lookup(tmp_path, where, head, row) == [("vmta1", "pool-vmta1")]


@pytest.mark.parametrize("where", ["memory", "store"])
def test_attribution_keeps_the_exact_cut_for_a_complaint_timed_by_its_time_logged(tmp_path: Path, where: str) -> None:
    head = "type,timeLogged,arrivalDate,orig,rcpt,jobId,header_Message-Id,feedbackType"
    assert _lookup(tmp_path, where, head, f"f,2024-05-01 10:09:58+0000,{ARRIVED},b@n.com,,,<m1@n.com>,abuse") == [None]
    (tmp_path / "past").mkdir()
    assert _lookup(tmp_path / "past", where, "type,arrivalDate,orig,rcpt,jobId,header_Message-Id,feedbackType",
                   f"f,{_arrival(DONE - ARRIVAL_SLACK - 1)},b@n.com,,,<m1@n.com>,abuse") == [None]


# Defect 2: the same records as a combined CSV file and as JSON give the same complaint labels in a oneshot. x got
# <m1> through vmA (10:00) and again through vmB (14:00, a resend); the complaint arrived at 12:00: about vmA's send.
COMBINED = ("type", "timeLogged", "timeQueued", "orig", "rcpt", "dsnMta", "vmta", "vmtaPool", "jobId",
            "header_Message-Id", "feedbackType", "arrivalDate")


def _records(day: str) -> list[dict[str, str]]:
    from datetime import datetime
    arrived = datetime.strptime(f"{day} 12:00:00+0000", "%Y-%m-%d %H:%M:%S%z").strftime("%a, %d %b %Y %H:%M:%S +0000")
    mx = "hotmail-com.olc.protection.outlook.com (1.1.1.1)"
    return [
        {"type": "d", "timeLogged": f"{day} 10:00:10+0000", "timeQueued": f"{day} 10:00:00+0000",
         "orig": "a@sender.com", "rcpt": "x@hotmail.com", "dsnMta": mx, "vmta": "vmA", "vmtaPool": "poolA",
         "jobId": "job5", "header_Message-Id": "<m1@sender.com>"},
        {"type": "d", "timeLogged": f"{day} 14:00:10+0000", "timeQueued": f"{day} 14:00:00+0000",
         "orig": "a@sender.com", "rcpt": "x@hotmail.com", "dsnMta": mx, "vmta": "vmB", "vmtaPool": "poolB",
         "jobId": "job5", "header_Message-Id": "<m1@sender.com>"},
        {"type": "f", "orig": "a@sender.com", "rcpt": "x@hotmail.com", "jobId": "job5",
         "header_Message-Id": "<m1@sender.com>", "feedbackType": "abuse", "arrivalDate": arrived},
    ]


def _complaint_lines(tmp_path: Path, form: str) -> list[str]:
    from exporter.config import load_config
    from exporter.daemon import run_oneshot
    from tests.conftest import RECORD_DAY, write_config

    records = _records(RECORD_DAY)
    logs = tmp_path / "logs"
    pattern = str(logs / f"acct-*.{form}")
    cfg = load_config(write_config(tmp_path, [{"name": "acct", "paths": [pattern]}], correlator={"enabled": True}))
    if form == "csv":
        text = ",".join(COMBINED) + "\n" + "".join(
            ",".join(f'"{v}"' if "," in v else v for v in (r.get(k, "") for k in COMBINED)) + "\n" for r in records)
    else:
        text = "".join(json.dumps(r) + "\n" for r in records)
    (logs / f"acct-1.{form}").write_text(text)
    return sorted(line for line in run_oneshot(cfg).splitlines() if line.startswith("pmta_complaints_total{"))


def test_a_combined_csv_file_and_its_json_twin_attribute_a_complaint_alike(tmp_path: Path) -> None:
    (tmp_path / "csv").mkdir()
    (tmp_path / "json").mkdir()
    csv, js = _complaint_lines(tmp_path / "csv", "csv"), _complaint_lines(tmp_path / "json", "json")
    want = ['pmta_complaints_total{feedback_type="abuse",isp="microsoft",vmta="vmA",vmta_pool="poolA"} 1.0']
    assert js == want
    assert csv == want


@pytest.mark.parametrize("when", ["2024-05-20 08:00:00+0000", "1999-12-31 23:00:00+0000"], ids=["ahead", "before-2000"])
def test_a_report_time_not_believed_is_looked_up_when_it_is_read_as_its_timeline_has_it(
        tmp_path: Path, when: str) -> None:
    """The harness's clock is 2024-05-04: a report 16 days ahead (past MAX_FUTURE), or before EARLIEST_BELIEVED, is
    timed by prepare at the time it is read, and joins dave's delivery (ACCT_1, 2024-05-01) by rcpt + orig; the
    attribution looked it up at its own time and found none (`unknown`)."""
    from tests.test_correlator_support import ACCT_1, Harness

    late = batch("/l/fbl.csv", f"type,timeLogged,orig,rcpt\nf,{when},promo@other.example,dave@gmail.com\n")
    h = Harness(tmp_path)
    try:
        h.commit(ACCT_1)
        got = vp(h.sink.lookup_vmta(late.columns, late.rows))
        h.commit(late)
        timelines = h.conn.execute("SELECT count(*) FROM corr_timelines WHERE rcpt = 'dave@gmail.com'").fetchone()[0]
    finally:
        h.close()
    assert (got, timelines) == ([("vmta3", "")], 1)


FILE_RECORDS = [
    {"type": "d", "timeLogged": "2024-05-01 10:10:00+0000", "timeQueued": "2024-05-01 10:00:00+0000",
     "orig": "n@s.com", "rcpt": "x@hotmail.com", "vmta": "v1", "vmtaPool": "p1", "header_Message-Id": "<m1@s>"},
    {"type": "f", "orig": "n@s.com", "feedbackType": "abuse", "arrivalDate": "Wed, 01 May 2024 10:09:58 +0000",
     "header_Message-Id": "<m1@s>"},
]
FILE_HEADER = ("type", "timeLogged", "timeQueued", "orig", "rcpt", "vmta", "vmtaPool", "feedbackType", "arrivalDate",
               "header_Message-Id")


@pytest.mark.parametrize("form", ["csv", "json"])
@pytest.mark.parametrize("fast", [True, False], ids=["frame", "rows"])
def test_every_parser_path_flags_an_arrival_dated_report_alike(tmp_path: Path, form: str, fast: bool) -> None:
    """One file (a combined CSV file, or JSON) read as frames or as rows: its complaint joins x's timeline, and is
    attributed to x's delivery from memory and from the store."""
    from exporter.parser import FileParser
    from tests.test_correlator_support import Harness

    if form == "csv":
        text = ",".join(FILE_HEADER) + "\n" + "".join(
            ",".join(f'"{v}"' if "," in v else v for v in (r.get(k, "") for k in FILE_HEADER)) + "\n"
            for r in FILE_RECORDS)
    else:
        text = "".join(json.dumps(r) + "\n" for r in FILE_RECORDS)
    parsed, _n = FileParser("acct", f"/x/acct.{form}", None, fast=fast).parse(text.encode())
    assert parsed is not None and len(parsed) == 2
    c = parsed.columns
    reports = [row for row in parsed.rows if row[c.type] == "f"]
    h = Harness(tmp_path)
    try:
        h.sink.observe(parsed)
        memory = vp(h.sink.lookup_vmta(c, reports))
        h.commit(parsed)
        stored = vp(h.sink.lookup_vmta(c, reports))
        timelines = h.conn.execute("SELECT rcpt, flags FROM corr_timelines").fetchall()
    finally:
        h.close()
    assert (memory, stored, len(timelines), timelines[0][0]) == ([("v1", "p1")], [("v1", "p1")], 1, "x@hotmail.com")


def test_a_time_logged_equal_in_text_to_its_arrival_date_keeps_the_exact_cut(tmp_path: Path) -> None:
    """Regression review of 77d7d1d: the flag was set by comparing the two fields' text, so a complaint with a
    timeLogged of its own (the simulator writes both, equal) took the slack and joined a delivery logged after it."""
    same = f"{DONE - 2},{DONE - 2}"
    both = ("/l/fbl.csv", FBL_BOTH, [f"f,{same},n@s.com,,abuse,<m1@s>"], 2)
    assert _brief(_timelines(tmp_path / "b", [_acct(), both])) == APART
    head = "type,timeLogged,arrivalDate,orig,rcpt,jobId,header_Message-Id,feedbackType"
    for where in ("memory", "store"):
        (tmp_path / where).mkdir()
        assert _lookup(tmp_path / where, where, head,
                       "f,2024-05-01 10:09:58+0000,2024-05-01 10:09:58+0000,b@n.com,,,<m1@n.com>,abuse") == [None]


@pytest.mark.parametrize("form", ["csv", "json"])
@pytest.mark.parametrize("fast", [True, False], ids=["frame", "rows"])
@pytest.mark.parametrize("logged", [True, False], ids=["time-logged-too", "arrival-only"])
def test_every_parser_path_flags_only_a_report_without_its_own_time_logged(form: str, fast: bool,
                                                                           logged: bool) -> None:
    """The `arrival` flag says which column timed the report, never that the two texts are equal."""
    import polars as pl

    from correlator.prepare import ARRIVAL, batch_frame
    from exporter.parser import FileParser

    when = "2024-05-01 10:09:58+0000"
    record = {"type": "f", "arrivalDate": when, "orig": "n@s.com", "header_Message-Id": "<m1@s>",
              **({"timeLogged": when} if logged else {})}
    header = ["type", "timeLogged", "arrivalDate", "orig", "header_Message-Id"]
    text = (",".join(header) + "\n" + ",".join(record.get(k, "") for k in header) + "\n" if form == "csv"
            else json.dumps(record) + "\n")
    parsed, _n = FileParser("fbl", f"/x/fbl.{form}", None, fast=fast).parse(text.encode())
    assert parsed is not None and len(parsed) == 1
    frame = batch_frame(parsed)
    assert frame.get_column(ARRIVAL).to_list() == [not logged]
    assert frame.get_column("timeLogged").to_list() == [when]
    assert frame.schema[ARRIVAL] == pl.Boolean
