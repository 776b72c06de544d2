"""Reports (f, rb) join the timeline of their delivery whatever order the files are read in, and never the
timeline of another send: the same records read in the natural order (acct, diag, bounce, fbl) and in another give
the same timelines, or the report stays a timeline of its own (docs/api.md: a report read before its delivery)."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

from exporter.config import CorrelatorConfig
from tests.test_correlator_support import Harness, batch

Q = 1714557600
ACCT = "type,timeLogged,timeQueued,orig,rcpt,vmta,jobId,header_Message-Id"
DIAG = "type,timeLogged,timeQueued,orig,rcpt,vmta,jobId"
FBL = "type,timeLogged,orig,rcpt,feedbackType,header_Message-Id"


def _timelines(tmp: Path, reads: list[tuple[str, str, list[str], int]], **config: Any) -> list[dict[str, Any]]:
    """Every timeline (without ids) after committing `reads` one by one: (path, header, rows, first line)."""
    tmp.mkdir(exist_ok=True)
    h = Harness(tmp, CorrelatorConfig(**config)) if config else Harness(tmp)
    for path, head, rows, first in reads:
        h.commit(batch(path, head + "\n" + "\n".join(rows) + "\n", first_line=first))

    async def dump() -> list[dict[str, Any]]:
        async with h.client() as c:
            items = (await c.get("/api/v1/search", params={"since": "0", "limit": 500})).json()["items"]
            return [(await c.get(f"/api/v1/timelines/{i['id']}")).json()["timelines"][0] for i in items]

    try:
        found = asyncio.run(dump())
    finally:
        h.close()
    for tl in found:
        tl.pop("id")
    return sorted(found, key=lambda tl: json.dumps(tl, sort_keys=True))


def _brief(tls: list[dict[str, Any]]) -> list[tuple[Any, ...]]:
    """(job, Message-Id, rcpt, outcome, event kinds) of each timeline, those with a job first."""
    return sorted(((tl["job_id"], tl["message_id"], tl["rcpt"], tl["outcome"], [e["kind"] for e in tl["events"]])
                   for tl in tls), key=lambda b: (b[0] is None, str(b)))


def test_a_complaint_read_before_its_delivery_never_joins_another_sends_deferral(tmp_path: Path) -> None:
    """x@ got m1 (J1, delivered at Q+600) and m0 (J0, queued an hour later, deferred then delivered). The complaint
    about m1, read after diag and before acct, joined J0's deferral-only timeline: J0 showed m1's Message-Id and a
    complaint before its delivery, and m1 stayed uncomplained. A report joins a delivered (or bounced) timeline whose
    delivery came before it, or stays a timeline of its own."""
    q0 = Q + 3600
    acct = ("/l/acct.csv", ACCT, [f"d,{Q + 600},{Q},n@s.com,x@gmail.com,v1,J1,<m1@s>",
                                  f"d,{q0 + 900},{q0},n@s.com,x@gmail.com,v1,J0,<m0@s>"], 2)
    diag = ("/l/diag.csv", DIAG, [f"t,{q0 + 300},{q0},n@s.com,x@gmail.com,v1,J0"], 2)
    fbl = ("/l/fbl.csv", FBL, [f"f,{q0 + 400},n@s.com,x@gmail.com,abuse,<m1@s>"], 2)
    natural = _timelines(tmp_path / "a", [acct, diag, fbl])
    early = _timelines(tmp_path / "b", [diag, fbl, acct])
    assert _brief(natural) == [
        ("J0", "m0@s", "x@gmail.com", "delivered", ["queued", "deferred", "delivered"]),
        ("J1", "m1@s", "x@gmail.com", "complained", ["queued", "delivered", "complaint"]),
    ]
    j0 = [tl for tl in early if tl["job_id"] == "J0"]
    assert _brief(j0) == [("J0", "m0@s", "x@gmail.com", "delivered", ["queued", "deferred", "delivered"])]
    assert not any(tl["complained"] for tl in j0)


def test_a_recipientless_report_read_early_does_not_keep_later_ones_from_their_delivery(tmp_path: Path) -> None:
    """Hotmail hides the recipient: such a report joins the only recipient of its Message-Id. One read before the
    delivery stays a timeline of its own, and was then counted as a second recipient, so every later report of
    that message stayed alone too."""
    acct = ("/l/acct.csv", ACCT, [f"d,{Q + 600},{Q},n@s.com,x@hotmail.com,v1,J1,<m1@s>"], 2)
    first = ("/l/fbl.csv", FBL, [f"f,{Q + 700},n@s.com,,abuse,<m1@s>"], 2)
    second = ("/l/fbl.csv", FBL, [f"f,{Q + 800},n@s.com,,abuse,<m1@s>"], 3)
    found = _timelines(tmp_path, [first, acct, second])
    assert _brief(found) == [
        ("J1", "m1@s", "x@hotmail.com", "complained", ["queued", "delivered", "complaint"]),
        (None, "m1@s", None, "complained", ["complaint"]),
    ]


def test_a_fallback_window_of_zero_never_matches_on_rcpt_and_orig(tmp_path: Path) -> None:
    """`correlator.fallback_window: 0` is documented as "never": a report logged in the same second as the timeline's
    first record still joined it."""
    acct = ("/l/acct.csv", ACCT, [f"d,{Q},{Q},n@s.com,x@gmail.com,v1,J1,"], 2)
    fbl = ("/l/fbl.csv", FBL, [f"f,{Q},n@s.com,x@gmail.com,abuse,"], 2)
    found = _timelines(tmp_path, [acct, fbl], fallback_window=0)
    assert _brief(found) == [
        ("J1", None, "x@gmail.com", "delivered", ["queued", "delivered"]),
        (None, None, "x@gmail.com", "complained", ["complaint"]),
    ]
