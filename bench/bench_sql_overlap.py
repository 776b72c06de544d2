"""Would an SQL thread speed up the correlator's writes? SQLite inserts on one thread, Python work on another.

Usage: python bench/bench_sql_overlap.py [--groups 60] [--rows 4096] [--python-work 1.0]

The correlator process stores ~15k records/s on a slow 2-core machine, one thread at ~90% busy, which holds the
interpreter lock only ~40% of the time: the rest is SQLite (`sqlite3_step` runs without the lock) and polars. An
ordered SQL thread could run group N's inserts while the main thread prepares and links group N+1. The catch is
executemany: it takes the lock back for every row (binding its parameters), and a thread that wants the lock
waits up to `sys.getswitchinterval()` for a busy holder to let go. This script measures that, with the real
timeline schema (correlator/store.py: 6 indexes) and rows shaped like the writer's, against the same work run
serially. `--python-work` sets the Python stand-in's time as a multiple of the inserts' (1.0: as long, as in the
profile: ~40% of the busy time under the lock, ~35% in SQLite). Prints wall seconds per mode and the ratio to
serial; nothing is asserted.
"""

from __future__ import annotations

import argparse
import queue
import random
import sqlite3
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from correlator import store  # noqa: E402
from correlator.writes import _INSERT_TL  # noqa: E402


def rows_of(group: int, n: int, rng: random.Random) -> list[tuple]:
    """Timeline rows as `_insert_new` binds them: hashed keys at random, times increasing, a few vmtas."""
    base = group * n + 1
    out = []
    for i in range(n):
        t = 1_764_000_000.0 + (base + i) * 0.05
        mid, job, rcpt = (rng.getrandbits(62) for _ in range(3))
        out.append((base + i, mid, f"<{mid:x}@mail.example>", job, f"job{i % 97}", rcpt, f"u{rcpt % 10**9}@gmail.com",
                    "gmail.com", "bounce@news.example", "news.example", f"vmta-{i % 12}", "pool-a", None, "gmail",
                    t - 30, t, t - 30, t, 1, 1, store.slice_of(int(t // 86400), base + i), t - 30))
    return out


def open_store(directory: Path) -> sqlite3.Connection:
    conn = sqlite3.connect(directory / "overlap.db", isolation_level=None, check_same_thread=False)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=NORMAL")
    store.migrate(conn, "plain")
    store.raise_cache(conn, 64 * 1024**2)
    return conn


def python_stage(rows: list[tuple], loops: float) -> int:
    """Stand-in for prepare + link: per-row dict and string work under the interpreter lock, `loops` times."""
    cache: dict[int, int] = {}
    acc = 0
    for _ in range(round(loops)):
        for r in rows:
            cache[r[1] & 0xFFFFF] = r[0]
            acc += len(r[6].split("@")[0]) + hash(r[4]) % 7
    return acc


def serial(conn: sqlite3.Connection, groups: list[list[tuple]], loops: float) -> None:
    conn.execute("BEGIN")
    for rows in groups:
        python_stage(rows, loops)
        conn.executemany(_INSERT_TL, rows)
    conn.execute("COMMIT")


def threaded(conn: sqlite3.Connection, groups: list[list[tuple]], loops: float) -> None:
    """The main thread prepares group N+1 while the SQL thread inserts group N (queue of one: bounded memory)."""
    todo: queue.Queue[list[tuple] | None] = queue.Queue(maxsize=1)
    failed: list[BaseException] = []

    def sql() -> None:
        while (rows := todo.get()) is not None:
            try:
                conn.executemany(_INSERT_TL, rows)
            except BaseException as exc:  # noqa: BLE001 - handed to the main thread
                failed.append(exc)

    conn.execute("BEGIN")
    worker = threading.Thread(target=sql, name="sql")
    worker.start()
    for rows in groups:
        python_stage(rows, loops)
        todo.put(rows)
    todo.put(None)
    worker.join()
    if failed:
        raise failed[0]
    conn.execute("COMMIT")


def timed(run: Callable[[sqlite3.Connection, list[list[tuple]], float], None], groups: list[list[tuple]],
          loops: float, switch: float) -> float:
    with tempfile.TemporaryDirectory() as tmp:
        conn = open_store(Path(tmp))
        old = sys.getswitchinterval()
        sys.setswitchinterval(switch)
        try:
            t0 = time.perf_counter()
            run(conn, groups, loops)
            return time.perf_counter() - t0
        finally:
            sys.setswitchinterval(old)
            conn.close()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--groups", type=int, default=60)
    ap.add_argument("--rows", type=int, default=4096)
    ap.add_argument("--python-work", type=float, default=1.0)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    rng = random.Random(7)
    groups = [rows_of(g, args.rows, rng) for g in range(args.groups)]
    n = args.groups * args.rows
    sql_alone = timed(serial, groups, 0, 0.005)
    t0 = time.perf_counter()
    for rows in groups:
        python_stage(rows, 1)
    loops = args.python_work * sql_alone / (time.perf_counter() - t0)  # the stand-in takes python_work x SQL's time
    t0 = time.perf_counter()
    for rows in groups:
        python_stage(rows, loops)
    alone = time.perf_counter() - t0
    print(f"{n:,} timeline rows in {args.groups} groups: SQLite alone {sql_alone:.2f} s, the Python stand-in alone"
          f" {alone:.2f} s (their sum is what serial would take with no contention)")
    modes = [("serial", serial, 0.005), ("SQL thread, switch 5 ms", threaded, 0.005),
             ("SQL thread, switch 1 ms", threaded, 0.001), ("SQL thread, switch 0.2 ms", threaded, 0.0002)]
    best: dict[str, float] = {}
    for _ in range(args.repeat):  # interleaved: a slow spell of the machine hits every mode
        for name, run, switch in modes:
            took = timed(run, groups, loops, switch)
            best[name] = min(best.get(name, took), took)
    base = best["serial"]
    for name, _run, _switch in modes:
        print(f"  {name:28s} {best[name]:6.2f} s  {n / best[name]:9,.0f} rows/s  {base / best[name]:.2f}x serial")


if __name__ == "__main__":
    main()
