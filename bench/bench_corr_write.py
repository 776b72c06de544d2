"""The correlator's write path alone: collect a corpus's RecordBatches like oneshot, then time `sink.write`.

Usage: python bench/bench_corr_write.py CONFIG [--profile] [--sql] [--floor] [--keep DIR] [--per-txn 8]
The batches are collected first (tailer + pipeline, not timed), then written in transactions of
`--per-txn` batches on one connection, as the daemon's writer thread does. Prints wall and CPU
seconds of the write alone; `--sql` times each statement kind, `--profile` runs cProfile.
`--floor` then times SQLite alone storing the same result: the stored timelines, events and flows
inserted as ready-made tuples into a fresh database set up the same way, in as many transactions.
That is what today's schema costs with no preparation, linking or summary updates at all.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import cProfile
import pstats
import resource
import sqlite3
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from prometheus_client import CollectorRegistry  # noqa: E402

from exporter.classify import load_classifiers  # noqa: E402
from exporter.config import load_config  # noqa: E402
from exporter.daemon import Pipeline, _correlator  # noqa: E402
from exporter.tailer import Tailer  # noqa: E402
from exporter.walcheckpoint import WalCheckpointer  # noqa: E402


class TimedConn:
    """A connection wrapper that sums the time of each statement kind (first words of the SQL)."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self._c = conn
        self.t: collections.Counter[str] = collections.Counter()
        self.n: collections.Counter[str] = collections.Counter()

    def _rec(self, sql: str, dt: float, k: int = 1) -> None:
        key = " ".join(sql.split()[:4])[:60]
        self.t[key] += dt
        self.n[key] += k

    def execute(self, sql: str, *a: Any) -> Any:
        t = time.perf_counter()
        r = self._c.execute(sql, *a)
        self._rec(sql, time.perf_counter() - t)
        return r

    def executemany(self, sql: str, rows: Any) -> Any:
        rows = list(rows)
        t = time.perf_counter()
        r = self._c.executemany(sql, rows)
        self._rec("MANY " + sql, time.perf_counter() - t, len(rows))
        return r

    def __getattr__(self, k: str) -> Any:
        return getattr(self._c, k)

    def report(self) -> None:
        for k, v in self.t.most_common(20):
            print(f"{v:7.3f}s {self.n[k]:8d} {k}")


async def collect(cfg: Any, db: Path) -> tuple[Any, list]:
    reg = CollectorRegistry()
    isp, rep = load_classifiers(cfg)
    sink = _correlator(cfg, db, isp, rep)
    pipe = Pipeline(cfg, reg, sink, isp, rep)
    tailer = Tailer(cfg.sources, cfg.tail, pipe.self_metrics, first_run=True, oneshot=True)
    more = await tailer.poll(pipe.on_batch, force_scan=True)
    while more:
        more = await tailer.poll(pipe.on_batch)
    await tailer.close()
    return sink, pipe.take_pending()


def floor(src: Any, path: Path, sink: Any, transactions: int, wall: float) -> None:
    """Insert what `src` holds (timelines, events, flows) into a fresh store at `path`, timed per table."""
    for suffix in ("", "-wal", "-shm"):
        Path(str(path) + suffix).unlink(missing_ok=True)
    dst = sqlite3.connect(path, isolation_level=None)
    dst.execute("PRAGMA journal_mode=WAL")
    dst.execute("PRAGMA synchronous=NORMAL")
    sink.setup(dst)
    tables = []
    for table in ("corr_timelines", "corr_events", "corr_flows"):
        cols = [r[1] for r in src.execute(f"PRAGMA table_info({table})")]  # without the generated `outcome`
        rows = src.execute(f"SELECT {','.join(cols)} FROM {table}").fetchall()
        sql = f"INSERT INTO {table} ({','.join(cols)}) VALUES ({','.join('?' * len(cols))})"
        tables.append((table, sql, rows))
    took: collections.Counter[str] = collections.Counter()
    t0 = time.perf_counter()
    for i in range(transactions):
        dst.execute("BEGIN IMMEDIATE")
        for table, sql, rows in tables:
            a = time.perf_counter()
            dst.executemany(sql, rows[i * len(rows) // transactions : (i + 1) * len(rows) // transactions])
            took[table] += time.perf_counter() - a
        a = time.perf_counter()
        dst.execute("COMMIT")
        took["COMMIT"] += time.perf_counter() - a
    total = time.perf_counter() - t0
    parts = ", ".join(f"{name} {sec:.2f}s" for name, sec in took.items())
    print(f"floor {total:.2f}s ({parts}; {', '.join(f'{len(r):,} {t}' for t, _s, r in tables)}):"
          f" the write took {wall / total:.1f}x its SQL floor")
    dst.close()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("config", type=Path)
    ap.add_argument("--profile", action="store_true")
    ap.add_argument("--sql", action="store_true")
    ap.add_argument("--keep", type=Path, help="directory for the state DB (kept)")
    ap.add_argument("--per-txn", type=int, default=8)
    ap.add_argument("--slice", type=int, default=0, help="cut batches into slices of this many rows (live-like)")
    ap.add_argument("--max-rows", type=int, default=0, help="write only the first N rows")
    ap.add_argument("--floor", action="store_true", help="then time SQLite alone inserting the same stored rows")
    ap.add_argument("--autocheckpoint", type=int, default=None,
                    help="PRAGMA wal_autocheckpoint for the writer (0: none), to see what checkpoints cost in COMMIT;"
                         " by default the WAL is copied by a thread, as the daemon does (exporter/walcheckpoint.py)")
    args = ap.parse_args()
    cfg = load_config(args.config)
    tmp = args.keep or Path(tempfile.mkdtemp())
    tmp.mkdir(parents=True, exist_ok=True)
    db = tmp / "state.db"
    for suffix in ("", "-wal", "-shm"):
        Path(str(db) + suffix).unlink(missing_ok=True)
    sink, batches = asyncio.run(collect(cfg, db))
    if args.slice:
        batches = [b.slice(i, min(i + args.slice, len(b))) for b in batches for i in range(0, len(b), args.slice)]
    if args.max_rows:
        kept, total = [], 0
        for b in batches:
            if total >= args.max_rows:
                break
            kept.append(b)
            total += len(b)
        batches = kept
    rows = sum(len(b) for b in batches)
    conn: Any = sqlite3.connect(db, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=NORMAL")
    sink.setup(conn)
    wal = None
    if args.autocheckpoint is not None:
        conn.execute(f"PRAGMA wal_autocheckpoint={args.autocheckpoint}")
    else:
        WalCheckpointer.configure_writer(conn)
        wal = WalCheckpointer(db)
        wal.start()
    if args.sql:
        conn = TimedConn(conn)
    prof = cProfile.Profile() if args.profile else None
    r0 = resource.getrusage(resource.RUSAGE_SELF)
    t0 = time.perf_counter()
    if prof:
        prof.enable()
    for i in range(0, len(batches), args.per_txn):
        conn.execute("BEGIN IMMEDIATE")
        sink.write(conn, batches[i : i + args.per_txn])
        conn.execute("COMMIT")
        if wal is not None:
            wal.poke()
    if prof:
        prof.disable()
    wall = time.perf_counter() - t0
    if wal is not None:
        wal.stop()
    r1 = resource.getrusage(resource.RUSAGE_SELF)
    cpu = (r1.ru_utime - r0.ru_utime) + (r1.ru_stime - r0.ru_stime)
    n_tl = conn.execute("SELECT count(*) FROM corr_timelines").fetchone()[0]
    print(f"write {wall:.2f}s wall {cpu:.2f}s cpu  {rows} rows in {len(batches)} batches -> {n_tl} timelines,"
          f" {rows / wall:,.0f} rows/s, maxrss {r1.ru_maxrss // 1024} MB")
    if args.sql:
        conn.report()
    if args.floor:
        floor(conn, tmp / "floor.db", sink, -(-len(batches) // args.per_txn), wall)
    if prof:
        pstats.Stats(prof).sort_stats("tottime").print_stats(25)


if __name__ == "__main__":
    main()
