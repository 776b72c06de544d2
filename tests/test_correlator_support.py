"""Helpers for the correlator tests: CSV text -> RecordBatch, a writer harness, and the test corpus.

The harness drives the sink exactly as the daemon's state writer does: observe every batch, then
BEGIN; write(); (checkpoints); COMMIT on one connection to a real SQLite file.
"""

from __future__ import annotations

import csv
import io
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
from fastapi import FastAPI

from correlator import CorrelatorSink
from correlator.timeline import Reader
from exporter.config import CorrelatorConfig
from exporter.records import Columns, RecordBatch

LOG = "/var/log/pmta"
NOW = 1714780800.0  # 2024-05-04T00:00:00Z, just after the corpus (retention is relative to the clock)
ISPS = {"gmail.com": "gmail", "yahoo.com": "yahoo", "outlook.com": "microsoft"}


def isp_of(rcpt: str, dsn_mta: str) -> str:
    return ISPS.get(rcpt.rpartition("@")[2], "other")


def vp(hits: list[Any]) -> list[tuple[str, str] | None]:
    """The (vmta, pool) of each `lookup_vmta` answer (its Delivery without the isp), None kept."""
    return [None if hit is None else (hit[0], hit[1]) for hit in hits]


def class_of(isp: str, status: str, diag: str, bounce_cat: str) -> str:
    return {"2": "accepted", "4": "deferred", "5": "rejected"}.get(status[:1], "")


def parse_csv(text: str) -> tuple[Columns, list[list[str]]]:
    rows = list(csv.reader(io.StringIO(text.strip() + "\n")))
    return Columns.from_header(rows[0]), rows[1:]


def batch(path: str, text: str, first_line: int = 2, file_id: str | None = None) -> RecordBatch:
    """A batch of the rows under the header in `text`; line numbers are file lines (header = 1)."""
    columns, rows = parse_csv(text)
    b = RecordBatch(source="test", path=path, columns=columns, rows=rows,
                    line_numbers=list(range(first_line, first_line + len(rows))))
    if file_id is not None:
        b.file_id = file_id  # type: ignore[attr-defined]  # slots dataclass: set only if the lead added it
    return b


def split(b: RecordBatch, *sizes: int) -> list[RecordBatch]:
    """Cut one batch into consecutive reads of the same file."""
    out, start = [], 0
    for size in (*sizes, len(b.rows) - sum(sizes)):
        out.append(RecordBatch(b.source, b.path, b.columns, b.rows[start : start + size],
                               b.line_numbers[start : start + size]))
        start += size
    return [x for x in out if x.rows]


class Harness:
    """A sink on a real SQLite file plus the writer connection the daemon would own."""

    def __init__(self, tmp: Path, config: CorrelatorConfig | None = None, clock: Any = None, **kw: Any) -> None:
        self.db = tmp / "state.db"
        self.config = config or CorrelatorConfig()
        kw = {"isp_of": isp_of, "class_of": class_of, **kw}
        self.sink = CorrelatorSink(self.config, self.db, clock=clock or (lambda: NOW), **kw)
        self.conn = sqlite3.connect(self.db, isolation_level=None)
        self.conn.execute("CREATE TABLE IF NOT EXISTS checkpoints (path TEXT PRIMARY KEY, line INTEGER)")
        self.sink.setup(self.conn)

    def commit(self, *batches: RecordBatch, maintain: bool = True) -> None:
        """Write and commit `batches` as the daemon does, then run its maintenance (retention) unless told not to."""
        for b in batches:
            self.sink.observe(b)
        self.conn.execute("BEGIN IMMEDIATE")
        self.sink.write(self.conn, list(batches))
        self.conn.executemany(
            "INSERT OR REPLACE INTO checkpoints VALUES (?, ?)", [(b.path, b.line_numbers[-1]) for b in batches]
        )
        self.conn.execute("COMMIT")
        if maintain:
            self.sink.maintain(self.conn)

    @contextmanager
    def reader(self) -> Iterator[Reader]:
        with self.sink.pool.connection() as conn:
            yield Reader(conn, class_of, self.sink.hasher.hashed)

    def client(self) -> httpx.AsyncClient:
        app = FastAPI()
        app.include_router(self.sink.asgi_routes())
        return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test")

    def close(self) -> None:
        self.sink.close()
        self.conn.close()


# --- the corpus: acct + diag + bounce + fbl + receipts, rotated, fields reordered, Message-Id in some files
ACCT_0 = batch(f"{LOG}/acct-2024-05-01-0000.csv", """
type,timeLogged,timeQueued,orig,rcpt,orcpt,dsnAction,dsnStatus,dsnDiag,dsnMta,bounceCat,srcType,srcMta,dlvType,\
dlvSourceIp,dlvDestinationIp,dlvEsmtpAvailable,dlvSize,vmta,jobId,envId,queue,vmtaPool,header_Message-Id
d,2024-05-01 10:20:00+0000,2024-05-01 10:00:00+0000,news@shop.example,Alice@Gmail.com,,relayed,2.0.0 (success),\
smtp;250 2.0.0 OK 1714558800 - gsmtp,gmail-smtp-in.l.google.com (142.250.1.27),success,smtp,app (10.0.0.5),smtp,\
192.0.2.10,142.250.1.27,"PIPELINING,8BITMIME",2048,vmta1,J1,,gmail.com/vmta1,pool-a,<m1@shop.example>
d,2024-05-01 12:00:00+0200,2024-05-01 11:59:00+0200,news@shop.example,carol@outlook.com,,relayed,2.0.0 (success),\
smtp;250 2.6.0 Queued mail for delivery,outlook-com.olc.protection.outlook.com (52.101.1.1),success,smtp,\
app (10.0.0.5),smtp,192.0.2.11,52.101.1.1,"PIPELINING,SIZE",4096,vmta2,J2,,outlook.com/vmta2,pool-b,<m3@shop.example>
""")
# rotated file, other field order, no Message-Id column
ACCT_1 = batch(f"{LOG}/acct-2024-05-01-0001.csv", """
type,rcpt,orig,jobId,timeQueued,timeLogged,vmta,vmtaPool,queue,dsnStatus,dsnDiag,dsnMta,bounceCat
b,bob@yahoo.com,news@shop.example,J1,2024-05-01 10:00:00+0000,2024-05-01 11:00:00+0000,vmta1,pool-a,yahoo.com/vmta1,\
5.1.1 (bad destination mailbox address),smtp;550 5.1.1 <bob@yahoo.com>: user unknown,\
mta7.am0.yahoodns.net (67.195.1.1),bad-mailbox
d,dave@gmail.com,promo@other.example,,2024-05-01 09:00:00+0000,2024-05-01 09:30:00+0000,vmta3,,gmail.com/vmta3,\
2.0.0 (success),smtp;250 ok,gmail-smtp-in.l.google.com (142.250.1.27),success
""")
DIAG_0 = batch(f"{LOG}/diag-2024-05-01-0000.csv", """
type,timeLogged,timeQueued,orig,rcpt,dsnAction,dsnStatus,dsnDiag,dsnMta,bounceCat,vmta,jobId,queue,vmtaPool
t,2024-05-01 10:05:00+0000,2024-05-01 10:00:00+0000,news@shop.example,alice@gmail.com,delayed,\
4.7.28 (unusual rate),"smtp;421-4.7.28 unusual rate of unsolicited mail, try later",\
gmail-smtp-in.l.google.com (142.250.1.27),policy-related,vmta1,J1,gmail.com/vmta1,pool-a
tq,2024-05-01 10:10:00+0000,,,,delayed,4.0.0 (other),smtp;421 too many connections,\
gmail-smtp-in.l.google.com (142.250.1.27),,vmta1,,gmail.com/vmta1,pool-a
t,2024-05-01 10:30:00+0000,2024-05-01 10:00:00+0000,news@shop.example,bob@yahoo.com,delayed,4.7.0 (TSS04),\
smtp;421 4.7.0 [TSS04] Messages temporarily deferred,mta7.am0.yahoodns.net (67.195.1.1),policy-related,vmta1,J1,\
yahoo.com/vmta1,pool-a
tq,2024-05-01 12:00:00+0000,,,,delayed,4.0.0 (other),smtp;421 later,gmail-smtp-in.l.google.com (142.250.1.27),,\
vmta1,,gmail.com/vmta1,pool-a
""")
# rotated diag file: reordered, with a lower-case header_message-id column (empty here)
DIAG_1 = batch(f"{LOG}/diag-2024-05-01-0001.csv", """
type,header_message-id,rcpt,timeLogged,timeQueued,orig,vmta,jobId,dsnStatus,dsnDiag
t,,dave@gmail.com,2024-05-01 09:10:00+0000,2024-05-01 09:00:00+0000,promo@other.example,vmta3,,4.2.2 (mailbox full),\
smtp;452 4.2.2 over quota
""")
BOUNCE = batch(f"{LOG}/bounce-2024-05-01-0000.csv", """
type,timeLogged,orig,rcpt,dsnAction,dsnStatus,dsnDiag,dsnMta,bounceCat,reportingMta,header_Message-Id
rb,2024-05-01 14:00:00+0000,news@shop.example,carol@outlook.com,failed,5.2.2 (mailbox full),\
smtp;552 5.2.2 mailbox full,outlook-com.olc.protection.outlook.com (52.101.1.1),quota-issues,bounce.outlook.com,\
<m3@shop.example>
rs,2024-05-01 10:40:00+0000,news@shop.example,alice@gmail.com,delivered,2.0.0 (success),,,,mx.gmail.com,m1@shop.example
""")
FBL = batch(f"{LOG}/fbl-2024-05-01-0000.csv", """
type,timeLogged,orig,rcpt,feedbackType,userAgent,reportingMta,jobId,header_Message-Id
f,2024-05-02 08:00:00+0000,news@shop.example,,abuse,Yahoo!-Mail-Feedback/2.0,fbl.example,,<m1@shop.example>
f,2024-05-02 09:00:00+0000,news@shop.example,bob@yahoo.com,abuse,Yahoo!-Mail-Feedback/2.0,fbl.example,J1,
f,2024-05-03 09:00:00+0000,promo@other.example,dave@gmail.com,abuse,JMRP,fbl.example,,
f,2024-05-03 09:00:00+0000,nobody@else.example,eve@example.net,abuse,JMRP,fbl.example,,
""")
RECV = batch(f"{LOG}/recv-2024-05-01-0000.csv", """
type,timeLogged,timeQueued,orig,rcpt,jobId,srcMta,header_Message-Id
r,2024-05-01 10:00:00+0000,2024-05-01 10:00:00+0000,news@shop.example,alice@gmail.com,J1,app (10.0.0.5),<m1@shop.example>
""")
CORPUS = (ACCT_0, ACCT_1, DIAG_0, DIAG_1, BOUNCE, FBL, RECV)


def corpus_harness(tmp_path: Path) -> Iterator[Harness]:
    """A Harness holding CORPUS, one commit per batch, closed after: the HTTP tests' `h` fixture
    (`yield from corpus_harness(tmp_path)`)."""
    harness = Harness(tmp_path)
    for b in CORPUS:
        harness.commit(b)
    yield harness
    harness.close()
CORPUS_RECORDS = sum(len(b) for b in CORPUS)


def generated(messages: int, per_chunk: int = 40, rotate: int = 50) -> list[list[RecordBatch]]:
    """A deterministic larger corpus in commit-sized chunks: t (diag, job only), d/b (acct, with
    Message-Id), tq and f (fbl, Message-Id only); files rotate every `rotate` lines."""
    lines = {"acct": 0, "diag": 0, "fbl": 0}
    files = {"acct": 0, "diag": 0, "fbl": 0}
    headers = {
        "acct": "type,timeLogged,timeQueued,orig,rcpt,dsnStatus,vmta,jobId,header_Message-Id",
        "diag": "type,timeLogged,timeQueued,orig,rcpt,dsnStatus,vmta,jobId,queue",
        "fbl": "type,timeLogged,orig,rcpt,header_Message-Id",
    }
    chunks: list[list[RecordBatch]] = []
    pending: dict[str, list[str]] = {"diag": [], "acct": [], "fbl": []}

    def flush() -> None:
        out = []
        for kind, rows in pending.items():
            while rows:
                if lines[kind] >= rotate:
                    files[kind], lines[kind] = files[kind] + 1, 0
                take = rows[: rotate - lines[kind]]
                del rows[: len(take)]
                text = headers[kind] + "\n" + "\n".join(take)
                out.append(batch(f"/gen/{kind}-{files[kind]:04d}.csv", text, first_line=lines[kind] + 2))
                lines[kind] += len(take)
        chunks.append(out)

    base = 1714550400  # 2024-05-01
    for i in range(messages):
        tq = base + i * 60
        rcpt, job, mid, vmta = f"u{i}@{('gmail.com', 'yahoo.com', 'x.org')[i % 3]}", f"J{i // 25}", f"<g{i}@s>", f"v{i % 4}"
        if i % 3 == 0:
            pending["diag"].append(f"t,{tq + 30},{tq},n@s.example,{rcpt},4.0.0,{vmta},{job},{rcpt.split('@')[1]}/{vmta}")
        if i % 50 == 0:
            pending["diag"].append(f"tq,{tq + 40},,,,4.0.0,{vmta},,gmail.com/{vmta}")
        pending["acct"].append(f"{'b' if i % 10 == 7 else 'd'},{tq + 60},{tq},n@s.example,{rcpt},2.0.0,{vmta},{job},{mid}")
        if i % 7 == 0:
            pending["fbl"].append(f"f,{tq + 3600},n@s.example,,{mid}")
        if sum(len(v) for v in pending.values()) >= per_chunk:
            flush()
    if any(pending.values()):
        flush()
    return chunks


def brief(events: list[dict[str, Any]]) -> list[tuple]:
    """(time, kind, record_type, attempt, dsn_status, vmta, response_class, source file:line) per event."""
    return [(e["time"], e["kind"], e["record_type"], e["attempt"], e.get("dsn_status"), e.get("vmta"),
             e.get("response_class"), (e.get("source") or "").rpartition("/")[2] or None) for e in events]


def test_batch_helper_numbers_file_lines() -> None:
    assert ACCT_0.line_numbers == [2, 3]
    assert len(ACCT_0.rows[0]) == len(ACCT_0.columns.names)
    assert DIAG_1.columns.message_id == 1
    assert [len(x) for x in split(DIAG_0, 1, 2)] == [1, 2, 1]
