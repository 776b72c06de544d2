"""A report (f, rb, rs) joins only a send queued before it, the latest one delivered before it, whatever order the
files are read in: never a resend queued after it, nor a send that was never delivered.

A report names its send by Message-Id + rcpt or jobId + rcpt, but a job (or a Message-Id) may be sent to the same
recipient again: a daily digest, a retried campaign. The report carries no timeQueued, so the key alone does not say
which send it is about. It attached to whichever send of the key was stored last: a resend queued 12 hours after the
remote bounce took the bounce (and became BOUNCED), a deferred-only resend took the complaint, and the metrics counted
both under the resend's VMTA; read with the reports first, every send of the key joined the report's timeline. The
same records in every read order (each file a commit, the caches dropped before each commit, all in one commit) must
give the same timelines, and the metrics the delivery's VMTA whenever it was read before the report.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from correlator import store
from exporter import daemon
from exporter.config import config_from_dict
from exporter.records import RecordBatch
from tests.test_correlator_support import Harness, batch, vp

ACCT = "type,timeLogged,timeQueued,orig,rcpt,vmta,vmtaPool,jobId,header_Message-Id"
BOUNCE = "type,timeLogged,orig,rcpt,dsnStatus,jobId,header_Message-Id"
FBL = "type,timeLogged,orig,rcpt,feedbackType,jobId,header_Message-Id"
DAY = "2024-05-02"
"""The day of the records (the harness's clock is 2024-05-04 00:00 UTC)."""
MODES = ("apart", "restarted", "one-commit")
"""Each file its own commit; the same with the link caches dropped before each (a restart); all in one write."""


def at(hhmm: str, day: str = DAY) -> str:
    return f"{day} {hhmm}:00+0000"


def send(ty: str, logged: str, queued: str, rcpt: str, vmta: str, job: str = "", mid: str = "") -> str:
    return f"{ty},{logged},{queued},news@shop.example,{rcpt},{vmta},pool-{vmta},{job},{mid}"


def rb(logged: str, rcpt: str, job: str = "", mid: str = "") -> str:
    return f"rb,{logged},news@shop.example,{rcpt},5.1.1 (bad),{job},{mid}"


def f(logged: str, rcpt: str, job: str = "", mid: str = "") -> str:
    return f"f,{logged},news@shop.example,{rcpt},abuse,{job},{mid}"


def files(scenario: str, **text: tuple[str, list[str]]) -> dict[str, RecordBatch]:
    """name -> (header, rows): one batch per file, named /l/<scenario>/<name>.csv."""
    return {name: batch(f"/l/{scenario}/{name}.csv", head + "\n" + "\n".join(rows) + "\n")
            for name, (head, rows) in text.items()}


def dump(h: Harness, key: Callable[[Any], Any] | None = None) -> list[tuple[Any, ...]]:
    """Every timeline as the API serves it: (job, Message-Id, rcpt, outcome, vmta, queued_at, event kinds), sorted
    (by `key`: `repr` where a missing jobId, None, stands beside a string)."""

    async def fetch() -> list[dict[str, Any]]:
        async with h.client() as c:
            items = (await c.get("/api/v1/search", params={"since": "0", "limit": 500})).json()["items"]
            return [(await c.get(f"/api/v1/timelines/{i['id']}")).json()["timelines"][0] for i in items]

    return sorted([(tl["job_id"], tl["message_id"], tl["rcpt"], tl["outcome"], tl["vmta"], tl["queued_at"],
                    tuple(e["kind"] for e in tl["events"])) for tl in asyncio.run(fetch())], key=key)


def reports_of(batches: dict[str, RecordBatch]) -> list[RecordBatch]:
    return [b for b in batches.values() if any(row[0] in ("f", "rb", "rs") for row in b.rows)]


def read(tmp: Path, batches: dict[str, RecordBatch], order: tuple[str, ...], mode: str,
         key: Callable[[Any], Any] | None = None,
         ) -> tuple[list[tuple[Any, ...]], dict[str, list[Any]], list[tuple[Any, ...]]]:
    """Read the files in `order` as `mode` says: (timelines (`dump`, sorted by `key`), the attribution of each report
    file's rows when it was read (what the metrics count), the flows' report counts per vmta)."""
    h = Harness(tmp)
    counted: dict[str, list[Any]] = {}
    try:
        if mode == "one-commit":
            h.commit(*(batches[name] for name in order))
        else:
            for name in order:
                b = batches[name]
                h.sink.observe(b)
                if b in reports_of(batches):
                    counted[name] = vp(h.sink.lookup_vmta(b.columns, b.rows))
                if mode == "restarted":
                    h.sink.ingestor.forget()
                h.commit(b)
        flows = h.conn.execute("SELECT vmta, sum(complained), sum(remote_bounced) FROM corr_flows GROUP BY vmta"
                               " HAVING sum(complained) + sum(remote_bounced) > 0 ORDER BY vmta").fetchall()
        return dump(h, key), counted, flows
    finally:
        h.close()


def orders(names: list[str]) -> list[tuple[tuple[str, ...], str]]:
    return [(order, mode) for order in itertools.permutations(names) for mode in MODES]


def ids(params: list[tuple[tuple[str, ...], str]]) -> list[str]:
    return [f"{'-'.join(order)}-{mode}" for order, mode in params]


# --- the reviewer's repro: a remote bounce carrying only the jobId, a resend queued 12 hours after it -----------------

DIGEST = files(
    "digest",
    acct=(ACCT, [send("d", at("05:41"), at("05:13"), "seed@gmail.com", "vmA", job="DIGEST")]),
    diag=(ACCT, [send("t", at("19:25"), at("19:16"), "seed@gmail.com", "vmB", job="DIGEST")]),
    bounce=(BOUNCE, [rb(at("07:34"), "seed@gmail.com", job="DIGEST")]),
)
DIGEST_TIMELINES = [
    ("DIGEST", None, "seed@gmail.com", "bounced", "vmA", "2024-05-02T05:13:00Z", ("queued", "delivered",
                                                                                   "remote_bounce")),
    ("DIGEST", None, "seed@gmail.com", "deferred", "vmB", "2024-05-02T19:16:00Z", ("queued", "deferred")),
]
PARAMS = orders(list(DIGEST))


@pytest.mark.parametrize(("order", "mode"), PARAMS, ids=ids(PARAMS))
def test_a_remote_bounce_joins_the_send_delivered_before_it_not_a_resend_queued_after_it(
        tmp_path: Path, order: tuple[str, ...], mode: str) -> None:
    found, counted, flows = read(tmp_path, DIGEST, order, mode)
    assert found == DIGEST_TIMELINES
    if mode != "one-commit":  # counted under the delivery's VMTA when it was read first, else unknown: never vmB
        want = [("vmA", "pool-vmA")] if order.index("acct") < order.index("bounce") else [None]
        assert counted == {"bounce": want}
    assert ("vmB", 0, 1) not in flows
    if order.index("acct") < order.index("bounce"):
        assert flows == [("vmA", 0, 1)]


DIGEST_FBL = files(
    "digest_fbl",
    acct=(ACCT, [send("d", at("05:41"), at("05:13"), "seed@gmail.com", "vmA", job="DIGEST")]),
    diag=(ACCT, [send("t", at("19:25"), at("19:16"), "seed@gmail.com", "vmB", job="DIGEST")]),
    fbl=(FBL, [f(at("07:34"), "seed@gmail.com", job="DIGEST")]),
)
FBL_PARAMS = orders(list(DIGEST_FBL))


@pytest.mark.parametrize(("order", "mode"), FBL_PARAMS, ids=ids(FBL_PARAMS))
def test_a_complaint_does_not_join_a_deferred_only_resend_queued_after_it(
        tmp_path: Path, order: tuple[str, ...], mode: str) -> None:
    found, counted, flows = read(tmp_path, DIGEST_FBL, order, mode)
    assert found == [
        ("DIGEST", None, "seed@gmail.com", "complained", "vmA", "2024-05-02T05:13:00Z",
         ("queued", "delivered", "complaint")),
        ("DIGEST", None, "seed@gmail.com", "deferred", "vmB", "2024-05-02T19:16:00Z", ("queued", "deferred")),
    ]
    if mode != "one-commit":
        want = [("vmA", "pool-vmA")] if order.index("acct") < order.index("fbl") else [None]
        assert counted == {"fbl": want}
    assert ("vmB", 1, 0) not in flows


# --- a resend queued before the complaint but never delivered: the complaint is about the earlier delivery ---------

EARLIER = files(
    "earlier",
    acct=(ACCT, [send("d", at("10:01", "2024-05-01"), at("10:00", "2024-05-01"), "seed@gmail.com", "vmA",
                      job="DIGEST")]),
    diag=(ACCT, [send("t", at("10:05"), at("10:00"), "seed@gmail.com", "vmB", job="DIGEST")]),
    fbl=(FBL, [f(at("11:00"), "seed@gmail.com", job="DIGEST")]),
)
EARLIER_PARAMS = orders(list(EARLIER))


@pytest.mark.parametrize(("order", "mode"), EARLIER_PARAMS, ids=ids(EARLIER_PARAMS))
def test_a_complaint_joins_the_latest_send_delivered_before_it_not_a_later_one_only_deferred(
        tmp_path: Path, order: tuple[str, ...], mode: str) -> None:
    found, counted, _flows = read(tmp_path, EARLIER, order, mode)
    assert found == [
        ("DIGEST", None, "seed@gmail.com", "complained", "vmA", "2024-05-01T10:00:00Z",
         ("queued", "delivered", "complaint")),
        ("DIGEST", None, "seed@gmail.com", "deferred", "vmB", "2024-05-02T10:00:00Z", ("queued", "deferred")),
    ]
    if mode != "one-commit":
        if order.index("acct") < order.index("fbl"):
            want = [("vmA", "pool-vmA")]
        elif order.index("diag") < order.index("fbl"):  # only the deferral known: the rcpt + orig step of the
            want = [("vmB", "pool-vmB")]  # attribution counts it (docs/api.md: the VMTA that would deliver it)
        else:
            want = [None]
        assert counted == {"fbl": want}


# --- the same by Message-Id: a message sent twice to one recipient, the complaint about the first send -------------

RESENT = files(
    "resent",
    acct=(ACCT, [send("d", at("10:20", "2024-05-01"), at("10:00", "2024-05-01"), "zed@gmail.com", "v1",
                      mid="<m@s>")]),
    resend=(ACCT, [send("d", at("10:20"), at("10:00"), "zed@gmail.com", "v2", mid="<m@s>")]),
    fbl=(FBL, [f(at("12:00", "2024-05-01"), "zed@gmail.com", mid="<m@s>")]),
)
RESENT_PARAMS = orders(list(RESENT))


@pytest.mark.parametrize(("order", "mode"), RESENT_PARAMS, ids=ids(RESENT_PARAMS))
def test_a_complaint_by_message_id_joins_the_send_before_it_and_the_resend_after_it_stays_apart(
        tmp_path: Path, order: tuple[str, ...], mode: str) -> None:
    found, counted, _flows = read(tmp_path, RESENT, order, mode)
    assert found == [
        (None, "m@s", "zed@gmail.com", "complained", "v1", "2024-05-01T10:00:00Z", ("queued", "delivered",
                                                                                  "complaint")),
        (None, "m@s", "zed@gmail.com", "delivered", "v2", "2024-05-02T10:00:00Z", ("queued", "delivered")),
    ]
    if mode != "one-commit":
        want = [("v1", "pool-v1")] if order.index("acct") < order.index("fbl") else [None]
        assert counted == {"fbl": want}


# --- the latest of two sends delivered before the report, whichever was stored last -------------------------------

TWICE = files(
    "twice",
    acct=(ACCT, [send("d", at("10:20", "2024-05-01"), at("10:00", "2024-05-01"), "zed@gmail.com", "v1", job="J"),
                 send("d", at("10:20"), at("10:00"), "zed@gmail.com", "v2", job="J")]),
    diag=(ACCT, [send("t", at("10:05"), at("10:00"), "zed@gmail.com", "v3", job="J")]),
    fbl=(FBL, [f(at("12:00"), "zed@gmail.com", job="J")]),
)


@pytest.mark.parametrize("order", [("acct", "diag", "fbl"), ("diag", "acct", "fbl")])
@pytest.mark.parametrize("mode", MODES)
def test_a_report_read_after_its_sends_joins_the_latest_queued_not_the_last_stored(
        tmp_path: Path, order: tuple[str, ...], mode: str) -> None:
    """The second send's deferral, read first (diag before acct), gave it the lower id: the report joined the first
    send, stored last, and the metrics counted it there. Reports read after their sends (the natural order)."""
    found, counted, _flows = read(tmp_path, TWICE, order, mode)
    assert found == [
        ("J", None, "zed@gmail.com", "complained", "v2", "2024-05-02T10:00:00Z",
         ("queued", "deferred", "delivered", "complaint")),
        ("J", None, "zed@gmail.com", "delivered", "v1", "2024-05-01T10:00:00Z", ("queued", "delivered")),
    ]
    if mode != "one-commit":
        assert counted == {"fbl": [("v2", "pool-v2")]}


def test_the_metrics_count_the_delivery_before_the_report_from_memory_and_from_the_store(tmp_path: Path) -> None:
    """Attribution of the reports by jobId + rcpt and by Message-Id + rcpt: from rows observed (not committed) in
    either order, and from the store: the delivery queued and delivered before the report, not the resend."""
    reports = batch("/l/r.csv", BOUNCE + "\n" + "\n".join([
        rb(at("07:34"), "seed@gmail.com", job="DIGEST"),
        rb(at("11:00"), "seed@gmail.com", job="DIGEST"),  # the resend (queued 10:00) was never delivered
        rb(at("12:00", "2024-05-01"), "zed@gmail.com", mid="<m@s>"),
        rb(at("04:00", "2024-05-01"), "zed@gmail.com", mid="<m@s>"),  # before either send: none
    ]) + "\n")
    deliveries = [DIGEST["acct"], DIGEST["diag"], EARLIER["diag"], RESENT["acct"], RESENT["resend"]]
    want = [("vmA", "pool-vmA"), ("vmA", "pool-vmA"), ("v1", "pool-v1"), None]
    for name, seen in (("memory", deliveries), ("memory-reversed", deliveries[::-1])):
        (tmp_path / name).mkdir()
        h = Harness(tmp_path / name)
        for b in seen:
            h.sink.observe(b)
        assert vp(h.sink.lookup_vmta(reports.columns, reports.rows)) == want, name
        h.close()
    for name, seen in (("store", deliveries), ("store-reversed", deliveries[::-1])):
        (tmp_path / name).mkdir()
        h = Harness(tmp_path / name)
        for b in seen:
            h.commit(b)
        assert len(h.sink.recent) == 0
        assert vp(h.sink.lookup_vmta(reports.columns, reports.rows)) == want, name
        h.close()


# --- end to end: oneshot's metrics in every source order, the daemon's (both workers) with the files present ------

def _write_logs(logs: Path) -> None:
    logs.mkdir()
    (logs / "acct-1.csv").write_text("\n".join([
        ACCT, send("d", at("05:41"), at("05:13"), "seed@gmail.com", "vmA", job="DIGEST"),
        send("d", at("05:41"), at("05:13"), "seed2@gmail.com", "vmA", job="DIGEST")]) + "\n")
    (logs / "diag-1.csv").write_text("\n".join([
        ACCT, send("t", at("19:25"), at("19:16"), "seed@gmail.com", "vmB", job="DIGEST"),
        send("t", at("19:25"), at("19:16"), "seed2@gmail.com", "vmB", job="DIGEST")]) + "\n")
    (logs / "bounce-1.csv").write_text("\n".join([BOUNCE, rb(at("07:34"), "seed@gmail.com", job="DIGEST")]) + "\n")
    (logs / "fbl-1.csv").write_text("\n".join([FBL, f(at("07:34"), "seed2@gmail.com", job="DIGEST")]) + "\n")


SOURCES = {
    "acct": ("acct-*.csv", ["d", "b"]), "diag": ("diag-*.csv", ["t", "tq"]), "bounce": ("bounce-*.csv", ["rb", "rs"]),
    "fbl": ("fbl-*.csv", ["f"]),
}


def _sources(logs: Path, order: tuple[str, ...]) -> list[dict[str, Any]]:
    return [{"name": name, "paths": [str(logs / SOURCES[name][0])], "records": SOURCES[name][1]} for name in order]


def _by_vmta(text: str, name: str) -> dict[str, float]:
    out: dict[str, float] = {}
    for line in text.splitlines():
        if line.startswith(name + "{"):
            vmta = line.split('vmta="', 1)[1].split('"', 1)[0]
            out[vmta] = out.get(vmta, 0) + float(line.rsplit(" ", 1)[1])
    return out


@pytest.mark.parametrize("order", list(itertools.permutations(SOURCES)), ids="-".join)
def test_oneshot_counts_the_reports_under_the_delivery_before_them_never_the_resend(
        tmp_path: Path, order: tuple[str, ...]) -> None:
    logs = tmp_path / "logs"
    _write_logs(logs)
    cfg = {"sources": _sources(logs, order), "state_dir": str(tmp_path / "state"), "listen": "127.0.0.1:9",
           "correlator": {"enabled": True}}
    text = daemon.run_oneshot(config_from_dict(cfg))
    # a oneshot reads its sources in the order listed: a report read before its delivery is counted as unknown
    for name, source in (("pmta_remote_bounced_total", "bounce"), ("pmta_complaints_total", "fbl")):
        want = {"vmA": 1} if order.index("acct") < order.index(source) else {"unknown": 1}
        assert _by_vmta(text, name) == want, name


@pytest.mark.parametrize("worker", ["thread", "process"])
async def test_daemon_backfill_links_and_counts_the_reports_under_the_delivery_before_them(
        tmp_path: Path, worker: str) -> None:
    """The reviewer's repro: every file present before the start (tail.start_position: beginning), both workers."""
    import sqlite3

    import httpx

    from exporter.config import load_config
    from exporter.daemon import Daemon
    from tests.conftest import write_config

    logs = tmp_path / "logs"
    _write_logs(logs)
    cfg = load_config(write_config(tmp_path, _sources(logs, tuple(SOURCES)), correlator={"enabled": True,
                                                                                         "worker": worker}))

    def stored() -> int:
        try:
            db = sqlite3.connect(tmp_path / "state" / "watchtower.db")
        except sqlite3.Error:
            return 0
        try:
            return int(db.execute(f"SELECT count(*) FROM corr_timelines WHERE flags & {store.FLAG[6] | store.FLAG[7]}"
                                  ).fetchone()[0])
        except sqlite3.OperationalError:
            return 0
        finally:
            db.close()

    def counted() -> dict[tuple[str, str], float]:
        out: dict[tuple[str, str], float] = {}
        for metric in d.registry.collect():
            for sample in metric.samples:
                if sample.name in ("pmta_remote_bounced_total", "pmta_complaints_total"):
                    key = (sample.name, sample.labels.get("vmta", ""))
                    out[key] = out.get(key, 0) + sample.value
        return out

    want = {("pmta_remote_bounced_total", "vmA"): 1, ("pmta_complaints_total", "vmA"): 1}
    d = Daemon(cfg)
    task = asyncio.create_task(d.serve())
    try:
        await asyncio.wait_for(d.started.wait(), 20)
        for _ in range(400):
            if counted() == want and stored() == 2:
                break
            await asyncio.sleep(0.05)
        assert counted() == want
        assert stored() == 2
        host = cfg.listen
        async with httpx.AsyncClient(base_url=f"http://{host}") as c:
            for rcpt, outcome in (("seed@gmail.com", "bounced"), ("seed2@gmail.com", "complained")):
                got = (await c.get("/api/v1/timeline", params={"job_id": "DIGEST", "rcpt": rcpt})).json()
                assert sorted((t["vmta"], t["outcome"]) for t in got["timelines"]) == [
                    ("vmA", outcome), ("vmB", "deferred")], rcpt
    finally:
        d.should_exit.set()
        assert await asyncio.wait_for(task, 30) == 0
