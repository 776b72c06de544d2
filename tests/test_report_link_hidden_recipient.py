"""A report whose recipient the ISP hid (an empty rcpt) joins the only recipient of its Message-Id delivered (or
bounced) at or before it, whatever order the records are read in; one whose recipient is redacted to an address of
the ISP's (`redacted@hotmail.com`) stays a timeline of its own (docs/api.md: How timelines are built, step 3)."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest

from tests.test_attribution_recipients import _harness
from tests.test_correlator_report_order import _timelines
from tests.test_correlator_support import Harness, batch

Q = 1714557600
ACCT = "type,timeLogged,timeQueued,orig,rcpt,vmta,jobId,header_Message-Id"
DIAG = "type,timeLogged,timeQueued,orig,rcpt,vmta,jobId"
FBL = "type,timeLogged,orig,rcpt,feedbackType,header_Message-Id"


def _brief(tls: list[dict[str, Any]]) -> list[tuple[Any, ...]]:
    """(job, Message-Id, rcpt, outcome, complained, attempts, event kinds) of each timeline, those with a job first."""
    return sorted(((tl["job_id"], tl["message_id"], tl["rcpt"], tl["outcome"], tl["complained"], tl["attempts"],
                    [e["kind"] for e in tl["events"]]) for tl in tls), key=lambda b: (b[0] is None, json.dumps(b)))


def _message(tmp: Path, mid: str) -> dict[str, Any]:
    """/api/v1/messages/{mid} as served."""
    h = Harness(tmp)

    async def get() -> dict[str, Any]:
        async with h.client() as c:
            r = await c.get(f"/api/v1/messages/{mid}")
            assert r.status_code == 200, r.text
            return r.json()

    try:
        return asyncio.run(get())
    finally:
        h.close()


def test_a_complaint_with_a_redacted_recipient_is_not_taken_for_the_only_recipient(tmp_path: Path) -> None:
    """The review's case (rcpt `redacted@hotmail.com`, one recipient of the Message-Id) stays a timeline of its own:
    joined to the only recipient delivered so far, a real recipient's complaint read before its own delivery (a
    backfill reads the files in turn) would mark another recipient of the same domain complained."""
    acct = ("/l/acct.csv", ACCT, [f"d,{Q + 600},{Q},n@s.com,x@hotmail.com,v1,J1,<m1@s>"], 2)
    fbl = ("/l/fbl.csv", FBL, [f"f,{Q + 900},n@s.com,redacted@hotmail.com,abuse,<m1@s>"], 2)
    found = _timelines(tmp_path, [acct, fbl])
    assert _brief(found) == [
        ("J1", "m1@s", "x@hotmail.com", "delivered", False, 1, ["queued", "delivered"]),
        (None, "m1@s", "redacted@hotmail.com", "complained", True, 0, ["complaint"]),
    ]
    served = _message(tmp_path, "m1@s")
    assert sorted((tl["rcpt"], tl["outcome"], tl["complained"]) for tl in served["recipients"]) == [
        ("redacted@hotmail.com", "complained", True), ("x@hotmail.com", "delivered", False)]


def test_a_redacted_recipient_of_another_domain_or_before_the_delivery_stays_a_timeline_of_its_own(
        tmp_path: Path) -> None:
    """A redacted address of another domain, or one older than the delivery, stays a timeline of its own too."""
    acct = ("/l/acct.csv", ACCT, [f"d,{Q + 600},{Q},n@s.com,x@hotmail.com,v1,J1,<m1@s>"], 2)
    other = ("/l/fbl.csv", FBL, [f"f,{Q + 900},n@s.com,redacted@yahoo.com,abuse,<m1@s>"], 2)
    early = ("/l/fbl.csv", FBL, [f"f,{Q + 300},n@s.com,redacted@hotmail.com,abuse,<m1@s>"], 3)
    found = _timelines(tmp_path, [acct, other, early])
    assert _brief(found) == [
        ("J1", "m1@s", "x@hotmail.com", "delivered", False, 1, ["queued", "delivered"]),
        (None, "m1@s", "redacted@hotmail.com", "complained", True, 0, ["complaint"]),
        (None, "m1@s", "redacted@yahoo.com", "complained", True, 0, ["complaint"]),
    ]


def test_a_redacted_recipient_does_not_join_when_two_recipients_were_delivered_before_it(tmp_path: Path) -> None:
    """Two recipients of the domain delivered before the report: it names neither."""
    acct = ("/l/acct.csv", ACCT, [f"d,{Q + 600},{Q},n@s.com,x@hotmail.com,v1,J1,<m1@s>",
                                  f"d,{Q + 700},{Q},n@s.com,y@hotmail.com,v1,J1,<m1@s>"], 2)
    fbl = ("/l/fbl.csv", FBL, [f"f,{Q + 900},n@s.com,redacted@hotmail.com,abuse,<m1@s>"], 2)
    found = _timelines(tmp_path, [acct, fbl])
    assert _brief(found) == [
        ("J1", "m1@s", "x@hotmail.com", "delivered", False, 1, ["queued", "delivered"]),
        ("J1", "m1@s", "y@hotmail.com", "delivered", False, 1, ["queued", "delivered"]),
        (None, "m1@s", "redacted@hotmail.com", "complained", True, 0, ["complaint"]),
    ]


def _two_recipients(tmp: Path, live: bool, rcpt: str) -> list[tuple[Any, ...]]:
    """x@ delivered at Q+600, a hidden-recipient complaint at Q+900, y@ delivered at Q+1200: read as they happen
    (`live`: y@'s delivery after the complaint) or in a backfill (the whole acct file first)."""
    x = f"d,{Q + 600},{Q},n@s.com,x@hotmail.com,v1,J1,<m1@s>"
    y = f"d,{Q + 1200},{Q},n@s.com,y@hotmail.com,v1,J1,<m1@s>"
    fbl = ("/l/fbl.csv", FBL, [f"f,{Q + 900},n@s.com,{rcpt},abuse,<m1@s>"], 2)
    if live:
        reads = [("/l/acct.csv", ACCT, [x], 2), fbl, ("/l/acct.csv", ACCT, [y], 3)]
    else:
        reads = [("/l/acct.csv", ACCT, [x, y], 2), fbl]
    return _brief(_timelines(tmp, reads))


def test_a_hidden_recipient_complaint_links_alike_live_and_in_a_backfill(tmp_path: Path) -> None:
    """Live, the complaint joined x@ (y@ not read yet); in a backfill the `LIMIT 2` count saw y@, delivered after
    the complaint, and left it a `rcpt: null` timeline. Only recipients delivered at or before it count."""
    want = [
        ("J1", "m1@s", "x@hotmail.com", "complained", True, 1, ["queued", "delivered", "complaint"]),
        ("J1", "m1@s", "y@hotmail.com", "delivered", False, 1, ["queued", "delivered"]),
    ]
    assert _two_recipients(tmp_path / "live-empty", True, "") == want
    assert _two_recipients(tmp_path / "backfill-empty", False, "") == want


def test_a_hidden_recipient_complaint_never_joins_a_recipient_with_deferrals_only(tmp_path: Path) -> None:
    """The Message-Id's only recipient timeline has a deferral, no delivery: a complaint is not about it yet."""
    diag = ("/l/diag.csv", DIAG + ",header_Message-Id", [f"t,{Q + 300},{Q},n@s.com,x@hotmail.com,v1,J1,<m1@s>"], 2)
    fbl = ("/l/fbl.csv", FBL, [f"f,{Q + 900},n@s.com,,abuse,<m1@s>"], 2)
    found = _timelines(tmp_path, [diag, fbl])
    assert _brief(found) == [
        ("J1", "m1@s", "x@hotmail.com", "deferred", False, 1, ["queued", "deferred"]),
        (None, "m1@s", None, "complained", True, 0, ["complaint"]),
    ]


# The metrics' attribution of a report's VMTA counts recipients as linking does (correlator/attribution.py); a
# redacted recipient is not looked up by the Message-Id alone there (a report with a rcpt never is: seek budget).

_ACCT_A = "type,timeLogged,timeQueued,orig,rcpt,dsnMta,vmta,vmtaPool,jobId,header_Message-Id\n"
_FBL_A = "type,timeLogged,orig,rcpt,jobId,header_Message-Id,feedbackType\n"
_SENDER = "bounces@news.example.com"
_MID = "<m1@news.example.com>"


def _row(rcpt: str, vmta: str, minute: int, ty: str = "d") -> str:
    """A d (or `ty`) row logged at 10:minute, queued at 10:00."""
    return (f"{ty},2024-05-01 10:{minute:02d}:00+0000,2024-05-01 10:00:00+0000,{_SENDER},{rcpt},"
            f"mx.example (1.1.1.1),{vmta},pool-{vmta},,{_MID}\n")


def _attributed(tmp: Path, where: str, rows: list[str], rcpts: list[str]) -> list[tuple[str, str] | None]:
    """(vmta, pool) of a complaint at 10:20 for each of `rcpts` (Message-Id m1), the deliveries `rows` known `where`:
    in memory only (observed, not committed) or in the store only."""
    from tests.test_correlator_support import vp

    tmp.mkdir(exist_ok=True)
    h = _harness(tmp, where, *(batch(f"/l/acct-{n}.csv", _ACCT_A + row) for n, row in enumerate(rows)))
    try:
        fbl = batch("/l/fbl.csv", _FBL_A + "".join(f"f,2024-05-01 10:20:00+0000,{_SENDER},{rcpt},,{_MID},abuse\n"
                                                   for rcpt in rcpts))
        return vp(h.sink.lookup_vmta(fbl.columns, fbl.rows))
    finally:
        h.close()


@pytest.mark.parametrize("where", ["memory", "store"])
def test_attribution_counts_only_recipients_delivered_before_the_report(tmp_path: Path, where: str) -> None:
    """y@ delivered at 10:30 (after the 10:20 complaint) is not counted: the complaint is x@'s, as when y@'s delivery
    is read after it; a recipient with a deferral only is not counted either."""
    rows = [_row("x@hotmail.com", "vmta1", 1), _row("y@hotmail.com", "vmta2", 30), _row("z@hotmail.com", "vmta3", 5,
                                                                                           ty="t")]
    assert _attributed(tmp_path, where, rows, [""]) == [("vmta1", "pool-vmta1")]
    assert _attributed(tmp_path / "deferred", where, [_row("z@hotmail.com", "vmta3", 5, ty="t")], [""]) == [None]


def test_a_recipients_delivery_read_after_its_complaint_never_merges_into_another_recipients_timeline(
        tmp_path: Path) -> None:
    """u1@'s complaint read before u1@'s delivery (another acct file), u2@ of the same domain delivered before it:
    the complaint, taken for a redacted address, joins u2@; u1@'s delivery then joined u2@'s timeline too (the
    complaint's Message-Id + rcpt key was cached as naming it) and u1@ was gone. It stays a timeline of its own."""
    a1 = ("/l/acct-1.csv", ACCT, [f"d,{Q + 600},{Q},n@s.com,u2@hotmail.com,v1,J1,<m1@s>"], 2)
    fbl = ("/l/fbl.csv", FBL, [f"f,{Q + 900},n@s.com,u1@hotmail.com,abuse,<m1@s>"], 2)
    a2 = ("/l/acct-2.csv", ACCT, [f"d,{Q + 700},{Q},n@s.com,u1@hotmail.com,v1,J1,<m1@s>"], 2)
    found = _brief(_timelines(tmp_path, [a1, fbl, a2]))
    assert [(rcpt, attempts, kinds[:2]) for _j, _m, rcpt, _o, _c, attempts, kinds in found] == [
        ("u1@hotmail.com", 1, ["queued", "delivered"]), ("u2@hotmail.com", 1, ["queued", "delivered"])]
