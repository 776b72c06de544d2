"""A report read before its delivery waits as a timeline of its own, and the delivery takes it in when it is read,
whichever of the send's keys the report and the delivery carry.

PMTA's acct file logs no Message-Id by default, while the diag file (t) or the reception (r) may: the send's timeline
then holds the Message-Id from its deferral or reception, and its delivery (d or b) joins it by jobId alone. A
complaint naming the Message-Id, read before that delivery, waited for it under the Message-Id key, and the delivery
looked for waiting reports only under its own keys: the complaint stayed a timeline of its own beside its delivery
(/api/v1/messages/<id> listed two, one delivered, one complained with no VMTA) whenever the complaint and the deferral
(or reception) were read before the delivery. Read in any order, each file a commit, the caches dropped before each commit, or all in
one commit, the records must end as one timeline; a send queued or delivered after the report, or holding another
Message-Id, still never takes it in.
"""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path
from typing import Any

import httpx
import pytest

from correlator import store
from exporter.records import RecordBatch
from tests.test_correlator_report_time import files, ids, orders
from tests.test_correlator_report_time import read as read_files

ACCT = "type,timeLogged,timeQueued,orig,rcpt,vmta,vmtaPool,jobId,header_Message-Id"
NO_MID = "type,timeLogged,timeQueued,orig,rcpt,vmta,vmtaPool,jobId"
"""PMTA's acct fields without the Message-Id header."""
NO_JOB = "type,timeLogged,timeQueued,orig,rcpt,vmta,vmtaPool,header_Message-Id"
RECV = "type,timeLogged,timeQueued,orig,rcpt,jobId,header_Message-Id"
FBL = "type,timeLogged,orig,rcpt,feedbackType,jobId,header_Message-Id"
FBL_MID = "type,timeLogged,orig,rcpt,feedbackType,header_Message-Id"
FBL_JOB = "type,timeLogged,orig,rcpt,feedbackType,jobId"
DAY = "2024-05-02"
WHO = "news@shop.example,a@gmail.com"


def at(hms: str) -> str:
    return f"{DAY} {hms}+0000"


T_MID = f"t,{at('09:59:30')},{at('09:59:00')},{WHO},vmA,pA,J1,<m1@s>"
"""The deferral, with the Message-Id (diag file)."""
D_JOB = f"d,{at('10:00:05')},{at('09:59:00')},{WHO},vmA,pA,J1"
"""The delivery, by jobId only (acct file without Message-Id)."""
F_MID = f"f,{at('12:00:02')},{WHO},abuse,<m1@s>"
"""The complaint, by Message-Id only, after the delivery."""

ON_T = files("on_t", diag=(ACCT, [T_MID]), fbl=(FBL_MID, [F_MID]), acct=(NO_MID, [D_JOB]))
"""The reviewer's repro: the Message-Id on the deferral."""
ON_R = files(
    "on_r",
    recv=(RECV, [f"r,{at('09:59:00')},,{WHO},J1,<m1@s>"]),  # no timeQueued: queued when logged
    diag=(NO_MID, [f"t,{at('09:59:30')},{at('09:59:00')},{WHO},vmA,pA,J1"]),
    acct=(NO_MID, [D_JOB]),
    fbl=(FBL, [f"f,{at('12:00:02')},{WHO},abuse,,<m1@s>"]),
)
"""The Message-Id on the reception only."""
BOUNCED = files("bounced", diag=(ACCT, [T_MID]), fbl=(FBL_MID, [F_MID]),
                acct=(NO_MID, [f"b,{at('10:00:05')},{at('09:59:00')},{WHO},vmA,pA,J1"]))
"""The send bounced (b) instead: a complaint about it all the same (a bounce after a 250 is another record)."""
JOB_ON_T = files("job_on_t", diag=(ACCT, [T_MID]), fbl=(FBL_JOB, [f"f,{at('12:00:02')},{WHO},abuse,J1"]),
                 acct=(NO_JOB, [f"d,{at('10:00:05')},{at('09:59:00')},{WHO},vmA,pA,<m1@s>"]))
"""The other way round: the jobId on the deferral only, the complaint by jobId, the delivery by Message-Id."""

COMPLAINED = store.FLAG[store.TYPE_CODES["f"]]
JOINED = ("m1@s", "a@gmail.com", "complained", "vmA", "2024-05-02T09:59:00Z")


def read(tmp: Path, batches: dict[str, RecordBatch], order: tuple[str, ...], mode: str,
         ) -> tuple[list[tuple[Any, ...]], dict[str, list[Any]], list[tuple[Any, ...]]]:
    """test_correlator_report_time.read, the timelines sorted with a missing jobId first."""
    return read_files(tmp, batches, order, mode, key=repr)


def _params(scenarios: dict[str, dict[str, Any]]) -> list[Any]:
    return [pytest.param(name, order, mode, id=f"{name}-{i}")
            for name, batches in scenarios.items()
            for (order, mode), i in zip(orders(list(batches)), ids(orders(list(batches))), strict=True)]


JOIN = {"on_t": ON_T, "on_r": ON_R, "bounced": BOUNCED, "job_on_t": JOB_ON_T}
EVENTS = {"on_t": ("queued", "deferred", "delivered", "complaint"),
          "on_r": ("received", "deferred", "delivered", "complaint"),
          "bounced": ("queued", "deferred", "bounced", "complaint"),
          "job_on_t": ("queued", "deferred", "delivered", "complaint")}


@pytest.mark.parametrize(("name", "order", "mode"), _params(JOIN))
def test_a_report_read_before_its_delivery_is_joined_by_it_whichever_key_the_delivery_carries(
        tmp_path: Path, name: str, order: tuple[str, ...], mode: str) -> None:
    found, counted, flows = read(tmp_path, JOIN[name], order, mode)
    assert [tl[1:] for tl in found] == [(*JOINED, EVENTS[name])]
    if name != "job_on_t":  # (its jobId shows as the record that started the timeline had it: as before d8dd80d)
        assert found[0][0] == "J1"
    # the flows count a report under the VMTA of the timeline it joined when stored: its delivery's when that was
    # read first; else unknown (a report waiting for its send, or one read after a deferral only: as for any report
    # read before its delivery, the flows are not moved when its delivery takes it in)
    assert flows == [("vmA" if order.index("acct") < order.index("fbl") else "", 1, 0)]
    if mode != "one-commit":  # the metrics: the send's VMTA when its deferral or delivery was read first
        first = min(order.index("diag"), order.index("acct"))
        assert counted == {"fbl": [("vmA", "pA") if first < order.index("fbl") else None]}


RESEND = files(
    "resend",
    diag=(ACCT, [T_MID, f"t,{at('13:00:30')},{at('13:00:00')},{WHO},vmB,pB,J1,<m2@s>"]),
    fbl=(FBL_MID, [F_MID]),
    acct=(NO_MID, [D_JOB, f"d,{at('13:01:05')},{at('13:00:00')},{WHO},vmB,pB,J1"]),
)
"""The job sent to the recipient again (another Message-Id, queued after the complaint): both deliveries by jobId."""


@pytest.mark.parametrize(("order", "mode"), orders(list(RESEND)), ids=ids(orders(list(RESEND))))
def test_a_waiting_report_is_taken_in_by_the_send_it_is_about_not_by_the_resend(
        tmp_path: Path, order: tuple[str, ...], mode: str) -> None:
    found, _counted, flows = read(tmp_path, RESEND, order, mode)
    assert found == [
        ("J1", "m1@s", "a@gmail.com", "complained", "vmA", "2024-05-02T09:59:00Z",
         ("queued", "deferred", "delivered", "complaint")),
        ("J1", "m2@s", "a@gmail.com", "delivered", "vmB", "2024-05-02T13:00:00Z", ("queued", "deferred", "delivered")),
    ]
    assert ("vmB", 1, 0) not in flows


# --- what a waiting report must still never join -------------------------------------------------------------------

APART = {
    "queued_after": files(  # the send was queued after the complaint (a resend of the message)
        "queued_after", diag=(ACCT, [f"t,{at('13:00:30')},{at('13:00:00')},{WHO},vmA,pA,J1,<m1@s>"]),
        fbl=(FBL_MID, [F_MID]), acct=(NO_MID, [f"d,{at('13:00:05')},{at('13:00:00')},{WHO},vmA,pA,J1"])),
    "delivered_after": files(  # delivered after the complaint: not the send it is about
        "delivered_after", diag=(ACCT, [T_MID]), fbl=(FBL_MID, [F_MID]),
        acct=(NO_MID, [f"d,{at('12:30:05')},{at('09:59:00')},{WHO},vmA,pA,J1"])),
    "other_mid": files(  # another message of the job: the send holds <m2@s>, the complaint names <m1@s>
        "other_mid", diag=(ACCT, [f"t,{at('09:59:30')},{at('09:59:00')},{WHO},vmA,pA,J1,<m2@s>"]),
        fbl=(FBL, [f"f,{at('12:00:02')},{WHO},abuse,J1,<m1@s>"]),
        acct=(NO_JOB, [f"d,{at('10:00:05')},{at('09:59:00')},{WHO},vmA,pA,<m2@s>"])),
}


@pytest.mark.parametrize(("name", "order", "mode"), _params(APART))
def test_a_waiting_report_is_not_joined_by_a_send_it_cannot_be_about(
        tmp_path: Path, name: str, order: tuple[str, ...], mode: str) -> None:
    found, _counted, flows = read(tmp_path, APART[name], order, mode)
    report = [tl for tl in found if tl[3] == "complained"]
    send = [tl for tl in found if tl[3] != "complained"]
    assert [tl[1:] for tl in report] == [("m1@s", "a@gmail.com", "complained", None, None, ("complaint",))]
    assert len(send) == 1 and send[0][3:5] == ("delivered", "vmA") and "complaint" not in send[0][6]
    assert send[0][1] == ("m2@s" if name == "other_mid" else "m1@s")
    assert ("vmA", 1, 0) not in flows


# --- the daemon: the reviewer's repro, the acct file written after the others were read ---------------------------

@pytest.mark.parametrize("worker", ["thread", "process"])
async def test_daemon_joins_a_complaint_read_before_its_delivery_by_jobid_only(tmp_path: Path, worker: str) -> None:
    from exporter.config import load_config
    from exporter.daemon import Daemon
    from tests.conftest import write_config

    logs = tmp_path / "logs"
    logs.mkdir()
    (logs / "diag-1.csv").write_text(f"{ACCT}\n{T_MID}\n")
    (logs / "fbl-1.csv").write_text(f"{FBL_MID}\n{F_MID}\n")
    sources = [{"name": "acct", "paths": [str(logs / "acct-*.csv")], "records": ["d", "b"]},
               {"name": "diag", "paths": [str(logs / "diag-*.csv")], "records": ["t", "tq"]},
               {"name": "fbl", "paths": [str(logs / "fbl-*.csv")], "records": ["f"]}]
    cfg = load_config(write_config(tmp_path, sources, correlator={"enabled": True, "worker": worker}))

    def stored() -> list[tuple[Any, ...]]:
        try:
            db = sqlite3.connect(tmp_path / "state" / "watchtower.db")
            try:
                return db.execute(f"SELECT coalesce(vmta, ''), flags & {COMPLAINED} != 0 FROM corr_timelines"
                                  " ORDER BY 1, 2").fetchall()
            finally:
                db.close()
        except sqlite3.Error:
            return []

    async def until(want: list[tuple[Any, ...]]) -> None:
        for _ in range(400):
            if stored() == want:
                return
            await asyncio.sleep(0.05)
        assert stored() == want

    d = Daemon(cfg)
    task = asyncio.create_task(d.serve())
    try:
        await asyncio.wait_for(d.started.wait(), 20)
        await until([("", 1), ("vmA", 0)])  # the complaint waits for its delivery
        (logs / "acct-1.csv").write_text(f"{NO_MID}\n{D_JOB}\n")
        await until([("vmA", 1)])
        async with httpx.AsyncClient(base_url=f"http://{cfg.listen}") as c:
            got = (await c.get("/api/v1/messages/m1@s")).json()
        assert [(t["vmta"], t["outcome"], [e["kind"] for e in t["events"]]) for t in got["recipients"]] == [
            ("vmA", "complained", ["queued", "deferred", "delivered", "complaint"])]
    finally:
        d.should_exit.set()
        assert await asyncio.wait_for(task, 30) == 0
