"""Correlator benchmark: ingestion records/s (vs a bare executemany baseline) and lookup latency.

    .venv/bin/python bench/bench_correlator.py                 # 10M events (a few minutes)
    .venv/bin/python bench/bench_correlator.py --events 200000 # quick run

The corpus is synthetic but shaped like a real install: acct files (d/b, with header_Message-Id),
a diag file (t without Message-Id, so those link by jobId + rcpt; tq queue events) and an FBL file
(f with Message-Id only), rotated every `--rotate` lines. Batches go through observe -> write inside
a transaction per commit interval, exactly as the daemon's writer does. The baseline inserts the
first `--baseline-rows` of the same rows with one executemany per batch into a single plain table
in a second DB with the same pragmas, in the same run; the ratio compares equal row counts.
Lookup latency is measured on the full store: Message-Id and (jobId, rcpt) timelines with events,
in-process and through the HTTP app (httpx ASGITransport).
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import random
import sqlite3
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from correlator import CorrelatorSink  # noqa: E402
from correlator.keys import job_hash, message_hash  # noqa: E402
from correlator.timeline import Reader  # noqa: E402
from exporter.config import CorrelatorConfig  # noqa: E402
from exporter.records import Columns, RecordBatch  # noqa: E402
from exporter.timeparse import format_pmta_time as _fmt  # noqa: E402

ACCT = Columns.from_header(
    "type,timeLogged,timeQueued,orig,rcpt,orcpt,dsnAction,dsnStatus,dsnDiag,dsnMta,bounceCat,srcType,srcMta,"
    "dlvType,dlvSourceIp,dlvDestinationIp,dlvEsmtpAvailable,dlvSize,vmta,jobId,envId,queue,vmtaPool,"
    "header_Message-Id".split(",")
)
DIAG = Columns.from_header(
    "type,timeLogged,timeQueued,orig,rcpt,dsnAction,dsnStatus,dsnDiag,dsnMta,bounceCat,dlvSourceIp,vmta,"
    "jobId,queue,vmtaPool".split(",")
)
FBL = Columns.from_header("type,timeLogged,orig,rcpt,feedbackType,userAgent,reportingMta,header_Message-Id".split(","))
DOMAINS = ["gmail.com"] * 40 + ["yahoo.com"] * 15 + ["outlook.com"] * 10 + ["hotmail.com"] * 10 + [
    "comcast.net", "aol.com", "icloud.com", "gmx.de", "web.de", "orange.fr"] * 4
MX = {"gmail.com": "gmail-smtp-in.l.google.com (142.250.1.27)", "yahoo.com": "mta7.am0.yahoodns.net (67.195.1.1)"}
T0 = 1_714_550_400.0  # 2024-05-01


_FMT: dict[int, str] = {}


def format_pmta_time(ts: float) -> str:
    """PMTA iso-times are whole seconds: cache per second (the generator is not what we measure)."""
    sec = int(ts)
    hit = _FMT.get(sec)
    if hit is None:
        if len(_FMT) > 100_000:
            _FMT.clear()
        hit = _FMT[sec] = _fmt(sec)
    return hit


def isp_of(rcpt: str, mta: str) -> str:
    dom = rcpt.rpartition("@")[2]
    return {"googlemail.com": "gmail", "gmail.com": "gmail", "yahoo.com": "yahoo", "aol.com": "yahoo",
            "outlook.com": "microsoft", "hotmail.com": "microsoft"}.get(dom, "other")


def class_of(isp: str, status: str, diag: str, bcat: str) -> str:
    return "success" if status.startswith("2") else ("throttled" if status.startswith("4") else "hard_bounce")


class Corpus:
    """Deterministic record stream; `chunks()` yields one commit interval: [(file, columns, rows)]."""

    def __init__(self, events: int, per_commit: int, rotate: int, seed: int = 7) -> None:
        self.events, self.per_commit, self.rotate = events, per_commit, rotate
        self.rng = random.Random(seed)
        self.lines = {"acct": 0, "diag": 0, "fbl": 0}
        self.files = {"acct": 0, "diag": 0, "fbl": 0}
        self.messages = 0
        self.produced = 0

    def _path(self, kind: str) -> str:
        if self.lines[kind] >= self.rotate:
            self.files[kind] += 1
            self.lines[kind] = 0
        return f"/var/log/pmta/{kind}-2024-05-01-{self.files[kind]:04d}.csv"

    def message(self, i: int) -> tuple[str, str, str, str]:
        rng = random.Random(i)
        return (f"{i:x}.{rng.getrandbits(32):08x}@mail.s{i % 37}.com", f"job{i // 5000}",
                f"user{i}@{DOMAINS[i % len(DOMAINS)]}", f"news@s{i % 37}.com")

    def chunks(self) -> Iterator[list[tuple[str, Columns, list[list[str]], list[int]]]]:
        rng = self.rng
        while self.produced < self.events:
            acct: list[list[str]] = []
            diag: list[list[str]] = []
            fbl: list[list[str]] = []
            while len(acct) + len(diag) + len(fbl) < self.per_commit and self.produced < self.events:
                i = self.messages
                self.messages += 1
                mid, job, rcpt, orig = self.message(i)
                dom = rcpt.rpartition("@")[2]
                vmta = f"vmta{i % 23}"
                tq = T0 + i * 0.05
                tq_s = format_pmta_time(tq)
                mx = MX.get(dom, f"mx.{dom} (10.0.0.{i % 250})")
                roll = rng.random()
                n_t = 2 if roll < 0.05 else (1 if roll < 0.20 else 0)
                for k in range(n_t):
                    diag.append(["t", format_pmta_time(tq + 60 * (k + 1)), tq_s, orig, rcpt, "delayed",
                                 "4.7.0 (delivery not authorized)",
                                 "smtp;421 4.7.0 [TSS04] Messages temporarily deferred due to user complaints",
                                 mx, "policy-related", "192.0.2.10", vmta, job, f"{dom}/{vmta}", "pool1"])
                bounce = roll < 0.05 or rng.random() < 0.04
                acct.append([
                    "b" if bounce else "d", format_pmta_time(tq + 300), tq_s, orig, rcpt, "", "failed" if bounce
                    else "relayed", "5.1.1 (bad destination mailbox address)" if bounce else "2.0.0 (success)",
                    "smtp;550 5.1.1 user unknown" if bounce else f"smtp;250 2.0.0 OK {i:x} - gsmtp", mx,
                    "bad-mailbox" if bounce else "success", "smtp", "app (10.1.1.1)", "smtp", "192.0.2.10",
                    mx.rpartition("(")[2].rstrip(")"), "PIPELINING,8BITMIME,SIZE,STARTTLS", "24512", vmta, job, "",
                    f"{dom}/{vmta}", "pool1", f"<{mid}>"])
                self.produced += 1 + n_t
                if not bounce and rng.random() < 0.01:
                    fbl.append(["f", format_pmta_time(tq + 86400), orig, rcpt, "abuse", "Yahoo!-Mail-Feedback/2.0",
                                "mta.yahoo.com", mid])
                    self.produced += 1
                if i % 5000 == 0:
                    diag.append(["tq", format_pmta_time(tq + 30), "", "", "", "delayed", "4.0.0",
                                 "smtp;421 too busy", mx, "", "192.0.2.10", vmta, "", f"{dom}/{vmta}", "pool1"])
                    self.produced += 1
            out = []
            for kind, cols, rows in (("diag", DIAG, diag), ("acct", ACCT, acct), ("fbl", FBL, fbl)):
                start = 0
                while start < len(rows):
                    path = self._path(kind)
                    take = min(len(rows) - start, self.rotate - self.lines[kind])
                    first = self.lines[kind] + 2  # line 1 is the header
                    out.append((path, cols, rows[start : start + take], list(range(first, first + take))))
                    self.lines[kind] += take
                    start += take
            yield out


def pragmas(conn: sqlite3.Connection) -> None:
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=NORMAL")
    conn.execute("PRAGMA cache_size=-262144")


def run_baseline(path: Path, chunks: list) -> float:
    conn = sqlite3.connect(path, isolation_level=None)
    pragmas(conn)
    width = max(len(ACCT.names), len(DIAG.names), len(FBL.names))
    conn.execute(f"CREATE TABLE raw (file TEXT, line INTEGER, {', '.join(f'c{i} TEXT' for i in range(width))})")
    sql = f"INSERT INTO raw VALUES (?, ?, {', '.join('?' * width)})"
    # parameters padded to the table width outside the timed part: the baseline is executemany alone
    prepared = [[[(p, ln, *r, *([""] * (width - len(r)))) for ln, r in zip(lines, rows_, strict=True)]
                 for p, _c, rows_, lines in chunk] for chunk in chunks]
    rows = sum(len(params) for chunk in prepared for params in chunk)
    start = time.perf_counter()
    for chunk in prepared:
        conn.execute("BEGIN")
        for params in chunk:
            conn.executemany(sql, params)
        conn.execute("COMMIT")
    elapsed = time.perf_counter() - start
    conn.close()
    return rows / elapsed


def pct(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--events", type=int, default=10_000_000)
    ap.add_argument("--commit-rows", type=int, default=20_000, help="records per write transaction")
    ap.add_argument("--rotate", type=int, default=500_000, help="lines per file before rotation")
    ap.add_argument("--baseline-rows", type=int, default=1_000_000)
    ap.add_argument("--lookups", type=int, default=2000)
    ap.add_argument("--dir", type=Path, default=None, help="where the DBs go (default: a temp dir)")
    args = ap.parse_args()
    tmp = Path(args.dir or tempfile.mkdtemp(prefix="bench-corr-"))
    tmp.mkdir(parents=True, exist_ok=True)
    db = tmp / "state.db"
    for p in tmp.glob("*.db*"):
        p.unlink()

    # Baseline first, on the first --baseline-rows of the corpus, then dropped: keeping a million
    # rows alive through the main run would make every GC pass of the correlator run slower.
    base_chunks: list = []
    base_rows = 0
    for chunk in Corpus(args.events, args.commit_rows, args.rotate).chunks():
        if base_rows >= args.baseline_rows:
            break
        base_chunks.append(chunk)
        base_rows += sum(len(rows) for _p, _c, rows, _l in chunk)
    baseline = run_baseline(tmp / "baseline.db", base_chunks)
    del base_chunks
    gc.collect()

    corpus = Corpus(args.events, args.commit_rows, args.rotate)  # same seed: the same rows again
    sink = CorrelatorSink(CorrelatorConfig(), db, isp_of=isp_of, class_of=class_of, clock=lambda: T0)
    conn = sqlite3.connect(db, isolation_level=None)
    pragmas(conn)
    conn.execute("CREATE TABLE checkpoints (path TEXT PRIMARY KEY, line INTEGER)")
    sink.setup(conn)

    total = 0
    busy = 0.0
    busy_first = 0.0
    rows_first = 0
    report_every = max(args.events // 10, 1)
    next_report = report_every
    wall = time.perf_counter()
    for chunk in corpus.chunks():
        batches = [RecordBatch("bench", p, c, rows, lines) for p, c, rows, lines in chunk]
        n = sum(len(b) for b in batches)
        t = time.perf_counter()
        for b in batches:
            sink.observe(b)
        conn.execute("BEGIN IMMEDIATE")
        sink.write(conn, batches)
        conn.executemany("INSERT OR REPLACE INTO checkpoints VALUES (?, ?)", [(b.path, b.line_numbers[-1])
                                                                             for b in batches])
        conn.execute("COMMIT")
        sink.maintain(conn)
        dt = time.perf_counter() - t
        busy += dt
        total += n
        if total <= base_rows:
            busy_first += dt
            rows_first = total
        if total >= next_report:
            print(f"  {total:>11,} events  {total / busy:>9,.0f} rec/s cumulative", flush=True)
            next_report += report_every
    wall = time.perf_counter() - wall
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    size = db.stat().st_size
    tl_count = conn.execute("SELECT count(*) FROM corr_timelines").fetchone()[0]
    ev_count = conn.execute("SELECT count(*) FROM corr_events").fetchone()[0]

    first_rate = rows_first / busy_first if busy_first else float("nan")

    # lookups on the full store
    rng = random.Random(1)
    picks = [rng.randrange(corpus.messages) for _ in range(args.lookups)]
    mid_lat, job_lat, found = [], [], 0
    with sink.pool.connection() as rc:
        reader = Reader(rc, class_of, False)
        for i in picks:
            mid, job, rcpt, _ = corpus.message(i)
            t = time.perf_counter()
            items, _n = reader.by_message(message_hash(mid), 100)
            mid_lat.append(time.perf_counter() - t)
            t = time.perf_counter()
            items2, _ = reader.by_job_rcpt(job_hash(job), sink.hasher(rcpt)[0])
            job_lat.append(time.perf_counter() - t)
            found += bool(items) and bool(items2)
    http_lat = asyncio.run(http_lookups(sink, corpus, picks[: min(500, len(picks))]))

    print()
    print(f"events stored:      {ev_count:,} in {tl_count:,} timelines (+ queue events); DB {size / 2**20:,.0f} MiB")
    print(f"ingest (all):       {total / busy:,.0f} rec/s over {total:,} records "
          f"(observe+write+commit {busy:.1f}s, wall incl. generation {wall:.1f}s)")
    print(f"ingest (first {rows_first:,}): {first_rate:,.0f} rec/s")
    print(f"baseline executemany ({base_rows:,} same rows, one plain table): {baseline:,.0f} rec/s")
    print(f"ratio correlator/baseline (same rows): {first_rate / baseline:.2f}")
    print(f"lookups found: {found}/{len(picks)}")
    for name, lat in (("by Message-Id", mid_lat), ("by jobId+rcpt", job_lat), ("HTTP /timeline", http_lat)):
        print(f"{name:<15} p50 {pct(lat, 0.5) * 1000:.3f} ms  p99 {pct(lat, 0.99) * 1000:.3f} ms  (n={len(lat)})")
    sink.close()
    conn.close()


async def http_lookups(sink: CorrelatorSink, corpus: Corpus, picks: list[int]) -> list[float]:
    import httpx
    from fastapi import FastAPI

    app = FastAPI()
    app.include_router(sink.asgi_routes())
    lat = []
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as client:
        for i in picks:
            _mid, job, rcpt, _ = corpus.message(i)
            t = time.perf_counter()
            r = await client.get("/api/v1/timeline", params={"job_id": job, "rcpt": rcpt})
            lat.append(time.perf_counter() - t)
            assert r.status_code == 200, r.text
    return lat


if __name__ == "__main__":
    main()
