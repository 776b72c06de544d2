"""What the correlator's store costs per timeline at its size: pruning, inserting, each index, dropping a table.

Usage: python bench/bench_store_ops.py STORE [--work DIR] [--seconds 10]
STORE is a state database a run left behind (`bench_daemon.py --keep DIR` keeps DIR/live-state/state/watchtower.db).
Every measurement runs on a fresh copy of it in --work (the copies are deleted), 64 MiB page cache, WAL, as the
correlator process opens it. Printed, one line each:
1. prune: `store.prune` over the size cap for --seconds: timelines deleted per second (what keeping the cap costs);
2. insert: 200k timelines in new generations, each with 3 events; one in 7 first deferred and then delivered by a
   summary UPDATE, the others delivered on their first record (the mix of the benchmark corpus);
3. each secondary index of `corr_timelines`: the same eight 20,000-timeline deletes of the lowest ids, on a copy
   without that index (median seconds per batch): what the index costs the delete;
4. one table of 2**20 of the store's timelines with the same indexes, dropped whole, against deleting 2**18 rows:
   what storing generations as tables would save pruning.
A diagnostic for the design of the write path (bench/README.md, tenth round), not a target of issue #10.
"""

from __future__ import annotations

import argparse
import random
import shutil
import sqlite3
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from correlator import store  # noqa: E402
from correlator.writes import _INSERT_EV, _INSERT_TL, _UPDATE_TL  # noqa: E402

DELETE_BATCH = 20_000
INSERTS = 200_000


def open_copy(source: Path, work: Path) -> sqlite3.Connection:
    copy = work / "copy.db"
    for suffix in ("", "-wal", "-shm"):
        Path(str(copy) + suffix).unlink(missing_ok=True)
    shutil.copyfile(source, copy)
    conn = sqlite3.connect(copy, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=NORMAL")
    conn.execute("PRAGMA cache_size=-65536")
    return conn


def prune_rate(conn: sqlite3.Connection, seconds: float) -> str:
    started = time.perf_counter()
    deleted, _more = store.prune(conn, 0.0, 1, budget_s=seconds)
    took = time.perf_counter() - started
    return f"prune: {deleted:,} timelines in {took:.1f} s = {deleted / took:,.0f}/s"


def insert_rate(conn: sqlite3.Connection) -> str:
    top = conn.execute("SELECT max(id) FROM corr_timelines").fetchone()[0]
    t_top = conn.execute("SELECT max(t0) FROM corr_timelines").fetchone()[0]
    num = conn.execute("SELECT max(num) FROM corr_files").fetchone()[0] + 1
    conn.execute("INSERT INTO corr_files (num, key, path) VALUES (?, 'bench', 'bench')", (num,))
    rnd = random.Random(1)
    vmtas = [f"vmta-{i:02d}" for i in range(20)]
    day = int(t_top // store.DAY)
    line = 0
    started = time.perf_counter()
    for first in range(0, INSERTS, 4096):
        timelines, events, updates = [], [], []
        for i in range(first, min(INSERTS, first + 4096)):
            tl, t = top + 1 + i, t_top + i / 7000
            deferred = i % 7 == 0
            timelines.append((tl, rnd.getrandbits(63), f"<m{tl}@example.com>", rnd.getrandbits(63), f"job-{tl}",
                              rnd.getrandbits(63), f"h{tl:x}", "example.net", "bounce@example.com", "example.com",
                              rnd.choice(vmtas), "pool", "example.net/vmta", "gmail", t, t, t, None,
                              store.FLAG[2] if deferred else store.FLAG[3], 1, store.slice_of(day, tl), t))
            for _ in range(3):
                line += 1
                events.append((store.event_id(num, line), tl, 2, t, "transient", "4.2.1", "try later", "mx",
                               "other", "vmta", "pool", "192.0.2.1", None))
            if deferred:
                updates.append((None, None, None, None, None, None, t + 60, None, None, t + 60, t + 60,
                                store.FLAG[3], 1, tl))
        conn.execute("BEGIN IMMEDIATE")
        conn.executemany(_INSERT_TL, timelines)
        conn.executemany(_INSERT_EV, events)
        conn.executemany(_UPDATE_TL, updates)
        conn.execute("COMMIT")
    took = time.perf_counter() - started
    return f"insert: {INSERTS:,} timelines (3 events each, 1 in 7 updated) in {took:.1f} s = {INSERTS / took:,.0f}/s"


def delete_cost(conn: sqlite3.Connection) -> float:
    """Median seconds of eight deletes of the DELETE_BATCH lowest ids (with their events)."""
    low = conn.execute("SELECT min(id) FROM corr_timelines").fetchone()[0]
    took = []
    for k in range(8):
        lo = low + k * DELETE_BATCH
        started = time.perf_counter()
        conn.execute("BEGIN IMMEDIATE")
        conn.execute("DELETE FROM corr_events WHERE tl >= ? AND tl < ?", (lo, lo + DELETE_BATCH))
        conn.execute("DELETE FROM corr_timelines WHERE id >= ? AND id < ?", (lo, lo + DELETE_BATCH))
        conn.execute("COMMIT")
        took.append(time.perf_counter() - started)
    return statistics.median(took)


def drop_against_delete(conn: sqlite3.Connection) -> str:
    table = conn.execute("SELECT sql FROM sqlite_master WHERE name = 'corr_timelines'").fetchone()[0]
    conn.execute(table.replace("corr_timelines", "generation_table", 1).replace("IF NOT EXISTS ", ""))
    for name, sql in conn.execute("SELECT name, sql FROM sqlite_master WHERE type = 'index'"
                                  " AND tbl_name = 'corr_timelines' AND sql IS NOT NULL").fetchall():
        conn.execute(sql.replace("IF NOT EXISTS ", "").replace(name, name + "_gen", 1)
                     .replace("ON corr_timelines", "ON generation_table"))
    cols = ",".join(r[1] for r in conn.execute("PRAGMA table_info(corr_timelines)"))
    low = conn.execute("SELECT min(id) FROM corr_timelines").fetchone()[0]
    conn.execute("BEGIN IMMEDIATE")
    conn.execute(f"INSERT INTO generation_table ({cols}) SELECT {cols} FROM corr_timelines WHERE id < ?",
                 (low + 2**20,))
    conn.execute("COMMIT")
    held = conn.execute("SELECT count(*) FROM generation_table").fetchone()[0]
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    started = time.perf_counter()
    conn.execute("BEGIN IMMEDIATE")
    conn.execute("DROP TABLE generation_table")
    conn.execute("COMMIT")
    dropped = time.perf_counter() - started
    started = time.perf_counter()
    conn.execute("BEGIN IMMEDIATE")
    rows = conn.execute("DELETE FROM corr_timelines WHERE id < ?", (low + 2**18,)).rowcount
    conn.execute("COMMIT")
    deleted = time.perf_counter() - started
    return (f"drop a table of {held:,} timelines and its indexes: {dropped:.2f} s ({dropped / held * 1e6:.1f} us each);"
            f" delete {rows:,} rows: {deleted:.2f} s ({deleted / rows * 1e6:.1f} us each)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("store", type=Path)
    ap.add_argument("--work", type=Path, default=None, help="where the copies go (default: a temporary directory)")
    ap.add_argument("--seconds", type=float, default=10.0, help="of pruning in measurement 1")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="wt-store-ops-", dir=args.work) as tmp:
        work = Path(tmp)
        conn = open_copy(args.store, work)
        timelines = conn.execute("SELECT count(*) FROM corr_timelines").fetchone()[0]
        print(f"{args.store}: {timelines:,} timelines, {store.used_bytes(conn) / 1e6:,.0f} MB in use", flush=True)
        print(prune_rate(conn, args.seconds), flush=True)
        print(insert_rate(conn), flush=True)
        conn.close()
        indexes = [r[0] for r in open_copy(args.store, work).execute(
            "SELECT name FROM sqlite_master WHERE type = 'index' AND tbl_name = 'corr_timelines'"
            " AND sql IS NOT NULL ORDER BY name")]
        for dropped in [None, *indexes, "all"]:
            conn = open_copy(args.store, work)
            for name in indexes if dropped == "all" else [dropped] if dropped else []:
                conn.execute(f"DROP INDEX {name}")
            label = {None: "every index", "all": "no secondary index"}.get(dropped, f"without {dropped}")
            print(f"delete {DELETE_BATCH:,} lowest ids, {label}: {delete_cost(conn):.3f} s", flush=True)
            conn.close()
        conn = open_copy(args.store, work)
        print(drop_against_delete(conn), flush=True)
        conn.close()


if __name__ == "__main__":
    main()
