"""A record whose Message-Id is set never joins a timeline that holds another Message-Id, by either key.

Two messages to one recipient in one job (two Message-Ids, queued in the same second) were merged by the jobId
key into one timeline: a list with the address twice became one recipient, BOUNCED with 2 attempts, under the first
Message-Id, and `/api/v1/messages/<the second>` answered 404 (the second Message-Id was never stored). The same when
a report read before its delivery held another Message-Id than the sends of its job. Records without a Message-Id
link as before (by jobId, to the send stored last). Every read order gives the same timelines.
"""

from __future__ import annotations

import asyncio
import itertools
from pathlib import Path
from typing import Any

import pytest

from tests.test_correlator_report_time import ACCT, FBL, MODES, at, dump, f, files, ids, orders, read, send
from tests.test_correlator_support import Harness

Q = at("12:00")
DOUBLE = files(
    "double",
    first=(ACCT, [send("d", at("12:00").replace(":00+", ":05+"), Q, "dbl@gmail.com", "vmA", job="JD2",
                       mid="<a1@shop>")]),
    second=(ACCT, [send("b", at("12:00").replace(":00+", ":06+"), Q, "dbl@gmail.com", "vmB", job="JD2",
                        mid="<a2@shop>")]),
)
TWO = [
    ("JD2", "a1@shop", "dbl@gmail.com", "delivered", "vmA", "2024-05-02T12:00:00Z", ("queued", "delivered")),
    ("JD2", "a2@shop", "dbl@gmail.com", "bounced", "vmB", "2024-05-02T12:00:00Z", ("queued", "bounced")),
]
DOUBLE_PARAMS = orders(list(DOUBLE))


def _messages(h: Harness, *mids: str) -> dict[str, tuple[int, list[tuple[Any, ...]]]]:
    """Status and (rcpt, vmta, attempts) of each recipient of /api/v1/messages/<mid>."""

    async def fetch() -> dict[str, tuple[int, list[tuple[Any, ...]]]]:
        out = {}
        async with h.client() as c:
            for mid in mids:
                r = await c.get(f"/api/v1/messages/{mid}")
                body = r.json()
                out[mid] = (r.status_code, [(t["rcpt"], t["vmta"], t["attempts"])
                                            for t in (body.get("recipients") or [])] if r.status_code == 200 else [])
        return out

    return asyncio.run(fetch())


@pytest.mark.parametrize(("order", "mode"), DOUBLE_PARAMS, ids=ids(DOUBLE_PARAMS))
def test_two_messages_of_one_job_to_one_recipient_are_two_timelines(
        tmp_path: Path, order: tuple[str, ...], mode: str) -> None:
    found, _counted, _flows = read(tmp_path, DOUBLE, order, mode)
    assert found == TWO


@pytest.mark.parametrize("rows", ["d-then-b", "b-then-d"])
def test_two_messages_in_one_file_are_two_timelines_each_found_by_its_message_id(tmp_path: Path, rows: str) -> None:
    """The reviewer's repro: one acct file, the address twice in the list (d then b, or b then d)."""
    lines = [DOUBLE["first"].rows[0], DOUBLE["second"].rows[0]]
    if rows == "b-then-d":
        lines.reverse()
    b = files("one-file", acct=(ACCT, [",".join(row) for row in lines]))["acct"]
    h = Harness(tmp_path)
    h.commit(b)
    assert dump(h) == TWO
    assert _messages(h, "a1@shop", "a2@shop") == {"a1@shop": (200, [("dbl@gmail.com", "vmA", 1)]),
                                                  "a2@shop": (200, [("dbl@gmail.com", "vmB", 1)])}
    h.close()


# --- a report read before its delivery, holding another Message-Id than the sends of its job ------------------------

EARLY = files(
    "early",
    fbl=(FBL, [f(at("13:00"), "x@gmail.com", job="J", mid="<e2@shop>")]),
    diag=("type,timeLogged,timeQueued,orig,rcpt,vmta,vmtaPool,jobId",
          ["t,{},{},news@shop.example,x@gmail.com,vmA,pool-vmA,J".format(at("10:05"), at("10:00"))]),
    acct=(ACCT, [send("d", at("10:20"), at("10:00"), "x@gmail.com", "vmA", job="J", mid="<e1@shop>")]),
)
EARLY_PARAMS = orders(list(EARLY))


@pytest.mark.parametrize(("order", "mode"), EARLY_PARAMS, ids=ids(EARLY_PARAMS))
def test_a_send_never_joins_a_report_of_its_job_that_names_another_message_id(
        tmp_path: Path, order: tuple[str, ...], mode: str) -> None:
    """The deferral (diag logs no Message-Id) is the send's, by jobId, as before; the complaint names e2, not the
    send's e1: it is another message, whichever was read first, and /api/v1/messages/e1@shop finds the send."""
    found, _counted, _flows = read(tmp_path, EARLY, order, mode)
    assert found == [
        ("J", "e1@shop", "x@gmail.com", "delivered", "vmA", "2024-05-02T10:00:00Z", ("queued", "deferred",
                                                                                   "delivered")),
        ("J", "e2@shop", "x@gmail.com", "complained", None, None, ("complaint",)),
    ]


def test_the_message_ids_are_each_found_after_a_report_read_first(tmp_path: Path) -> None:
    h = Harness(tmp_path)
    for name in ("fbl", "diag", "acct"):
        h.commit(EARLY[name])
    assert _messages(h, "e1@shop", "e2@shop") == {"e1@shop": (200, [("x@gmail.com", "vmA", 2)]),
                                                  "e2@shop": (200, [("x@gmail.com", None, 0)])}
    h.close()


# --- records without a Message-Id link as before -------------------------------------------------------------------

@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("order", list(itertools.permutations(["first", "deferral"])), ids="-".join)
def test_a_record_without_a_message_id_still_joins_its_jobs_timeline(
        tmp_path: Path, order: tuple[str, ...], mode: str) -> None:
    batches = {"first": DOUBLE["first"],
               "deferral": files("deferral", deferral=("type,timeLogged,timeQueued,orig,rcpt,vmta,vmtaPool,jobId",
                                           ["t,{},{},news@shop.example,dbl@gmail.com,vmC,pool-vmC,JD2".format(
                                               at("12:00").replace(":00+", ":01+"), Q)]))["deferral"]}
    found, _counted, _flows = read(tmp_path, batches, order, mode)
    assert found == [("JD2", "a1@shop", "dbl@gmail.com", "delivered", "vmA", "2024-05-02T12:00:00Z",
                      ("queued", "deferred", "delivered"))]
