"""Issue #10's proposed write model against the one in place, on the same records: what each costs to write and to read.

Usage: python bench/bench_write_models.py STORE [--work DIR] [--txns 8] [--picks 100] [--budget 100000]
STORE is a state database `bench_corr_write.py CONFIG --keep DIR` left (DIR/state.db). Its events, with the link
keys of the timeline each joined, are written again three ways into fresh databases in --work:
* materialised (the store today): corr_timelines with its six indexes + corr_events with its one, the summary
  written with the events (what the correlator's linking and summary UPDATEs produce);
* derived, 2 indexes (the issue's prototype): one events table carrying (qday, Message-Id hash, rcpt hash) and
  (qday, job hash, rcpt hash) keys, indexed on those two, no timeline table; a timeline is assembled when read;
* derived + search: the same plus the (rcpt_h, t) and (t) indexes a search and the report fallback need.
Writes are SQLite alone (ready-made tuples, --txns transactions, as bench_corr_write.py --floor): the floor of each
model's schema, before preparation or linking (derived needs no linking at write time).
Reads are the questions /api/v1 answers, median and max over --picks picks (random, seeded):
* one Message-Id's timelines with their events (GET /api/v1/messages/{id});
* a search page, 50 timelines newest first, ending at a random time: unfiltered, one vmta, outcome bounced, outcome
  complained (GET /api/v1/search). Materialised: the index range the Reader uses. Derived: events newest first, each
  new timeline assembled from its keys (both key indexes) and kept if it matches, at most --budget events a page
  (the Reader's bound), so a rare outcome returns a short page. Both sides build Python rows; the
  materialised side through the API's own Reader (its JSON-ready dicts included).
A diagnostic for issue #10's write model (bench/README.md, twenty-second round); no assertion.
"""

from __future__ import annotations

import argparse
import random
import sqlite3
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from correlator import store  # noqa: E402
from correlator.timeline import Reader  # noqa: E402

PAGE = 50
_REPORTS = {store.TYPE_CODES[k] for k in ("f", "rb", "rs")}
_DELIVERY = {store.TYPE_CODES[k] for k in ("t", "d", "b")}
_F, _B, _RB, _D, _T = (store.FLAG[store.TYPE_CODES[k]] for k in ("f", "b", "rb", "d", "t"))
DERIVED = """CREATE TABLE ev (
    id INTEGER PRIMARY KEY, type INTEGER NOT NULL, t REAL NOT NULL, qday INTEGER NOT NULL, scope REAL,
    mid_h INTEGER, job_h INTEGER, rcpt_h INTEGER, message_id TEXT, job_id TEXT, rcpt TEXT, orig TEXT,
    action TEXT, status TEXT, diag TEXT, mta TEXT, bcat TEXT, vmta TEXT, pool TEXT, src_ip TEXT, extra TEXT)"""
DERIVED_KEYS = [
    "CREATE INDEX ev_mid ON ev (qday, mid_h, rcpt_h) WHERE mid_h IS NOT NULL",
    "CREATE INDEX ev_job ON ev (qday, job_h, rcpt_h) WHERE job_h IS NOT NULL",
]
DERIVED_SEARCH = ["CREATE INDEX ev_rcpt ON ev (rcpt_h, t)", "CREATE INDEX ev_t ON ev (t)"]


def fresh(path: Path) -> sqlite3.Connection:
    for suffix in ("", "-wal", "-shm"):
        Path(str(path) + suffix).unlink(missing_ok=True)
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA page_size=16384")  # as exporter/state.py creates a store
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=NORMAL")
    conn.execute("PRAGMA cache_size=-65536")
    return conn


def write(conn: sqlite3.Connection, tables: list[tuple[str, list[tuple]]], txns: int) -> float:
    """Insert each table's rows, a 1/txns share of every table per transaction (as a writer interleaves them)."""
    started = time.perf_counter()
    for i in range(txns):
        conn.execute("BEGIN IMMEDIATE")
        for sql, rows in tables:
            step = -(-len(rows) // txns)
            conn.executemany(sql, rows[i * step:(i + 1) * step])
        conn.execute("COMMIT")
    return time.perf_counter() - started


def insert_sql(table: str, n: int) -> str:
    return f"INSERT INTO {table} VALUES ({','.join('?' * n)})"


def build(src: sqlite3.Connection, work: Path, txns: int) -> dict[str, tuple[sqlite3.Connection, float]]:
    ddl = dict(src.execute("SELECT name, sql FROM sqlite_master WHERE sql IS NOT NULL AND tbl_name IN"
                           " ('corr_timelines', 'corr_events', 'corr_days', 'corr_files', 'corr_queue_events')"))
    tl_cols = [r[1] for r in src.execute("PRAGMA table_xinfo(corr_timelines)") if r[1] != "outcome"]
    timelines = src.execute(f"SELECT {','.join(tl_cols)} FROM corr_timelines ORDER BY id").fetchall()
    events = src.execute("SELECT * FROM corr_events ORDER BY id").fetchall()
    untimed = ("corr_days", "corr_files", "corr_queue_events")  # the same in either model: not timed, read by the API
    carried = src.execute(
        "SELECT e.id, e.type, e.t, t.qday, t.scope, t.mid_h, t.job_h, t.rcpt_h, t.message_id, t.job_id, t.rcpt,"
        " t.orig, e.action, e.status, e.diag, e.mta, e.bcat, e.vmta, e.pool, e.src_ip, e.extra"
        " FROM corr_events e JOIN corr_timelines t ON t.id = e.tl ORDER BY e.id").fetchall()
    # a report carries no jobId: only the Message-Id (or the rcpt fallback) joins it
    carried = [r if r[1] not in _REPORTS else (*r[:6], None, *r[7:]) for r in carried]
    out = {}
    conn = fresh(work / "materialised.db")
    for name in (*untimed, "corr_timelines", "corr_events"):
        conn.execute(ddl[name])
    for name, sql in ddl.items():
        if name not in (*untimed, "corr_timelines", "corr_events"):
            conn.execute(sql)
    for name in untimed:
        rows = src.execute(f"SELECT * FROM {name}").fetchall()
        if rows:
            conn.executemany(insert_sql(name, len(rows[0])), rows)
    tl_sql = f"INSERT INTO corr_timelines ({','.join(tl_cols)}) VALUES ({','.join('?' * len(tl_cols))})"
    out["materialised"] = (conn, write(conn, [(tl_sql, timelines), (insert_sql("corr_events", 13), events)], txns))
    for label, indexes in (("derived, 2 indexes", DERIVED_KEYS), ("derived + search", DERIVED_KEYS + DERIVED_SEARCH)):
        conn = fresh(work / f"{label.split()[0]}{len(indexes)}.db")
        conn.execute(DERIVED)
        for sql in indexes:
            conn.execute(sql)
        out[label] = (conn, write(conn, [(insert_sql("ev", 21), carried)], txns))
    return out


# --- reads: materialised ---------------------------------------------------------------------------------------

def reader(conn: sqlite3.Connection) -> Reader:
    """The API's own Reader (replies unclassified: the derived side classifies nothing either)."""
    return Reader(conn, lambda *_: "", hashed=False)


def mat_message(conn: sqlite3.Connection, mid_h: int, _days: list[int]) -> int:
    items, _total = reader(conn).by_message(mid_h, 100)
    return len(items) + sum(len(i["events"]) for i in items)


def mat_search(conn: sqlite3.Connection, until: float, vmta: str | None, outcome: int | None, budget: int) -> int:
    items, _cursor, _limited = reader(conn).search(rcpt_h=None, job_h=None, vmta=vmta, outcome=outcome, since=None,
                                                   until=until, limit=PAGE, after=None, budget=budget)
    return len(items)


# --- reads: derived -----------------------------------------------------------------------------------------

def assemble(conn: sqlite3.Connection, days: str, mid_h: int | None, job_h: int | None, rcpt_h: int) -> list[tuple]:
    """One recipient's events: those of its Message-Id key, and those of every job key they carry (one hop each
    way, enough for this corpus; linking's merges would need the closure)."""
    found: dict[int, tuple] = {}
    mids, jobs = set(), set()
    if mid_h is not None:
        mids.add(mid_h)
    if job_h is not None:
        jobs.add(job_h)
    for _ in range(2):
        for m in list(mids):
            for r in conn.execute(f"SELECT * FROM ev WHERE qday IN ({days}) AND mid_h=? AND rcpt_h=?", (m, rcpt_h)):
                found[r[0]] = r
                if r[6] is not None:
                    jobs.add(r[6])
        for j in list(jobs):
            for r in conn.execute(f"SELECT * FROM ev WHERE qday IN ({days}) AND job_h=? AND rcpt_h=?", (j, rcpt_h)):
                found[r[0]] = r
                if r[5] is not None:
                    mids.add(r[5])
    return sorted(found.values(), key=lambda r: (r[2], r[0]))


def outcome_of(events: list[tuple]) -> tuple[int, str | None]:
    flags = 0
    vmta = None
    for r in events:
        flags |= store.FLAG[r[1]]
        if r[1] in _DELIVERY and r[17]:
            vmta = r[17]
    if flags & _F:
        return 4, vmta
    if flags & (_B | _RB):
        return 3, vmta
    return (2 if flags & _D else 1 if flags & _T else 0), vmta


def der_message(conn: sqlite3.Connection, mid_h: int, days: list[int]) -> int:
    marks = ",".join(str(d) for d in days)
    rcpts = {r[0] for r in conn.execute(f"SELECT rcpt_h FROM ev WHERE qday IN ({marks}) AND mid_h=?", (mid_h,))}
    return sum(len(assemble(conn, marks, mid_h, None, rh)) + 1 for rh in rcpts)


def der_search(conn: sqlite3.Connection, until: float, vmta: str | None, outcome: int | None, budget: int,
               days: list[int]) -> int:
    marks = ",".join(str(d) for d in days)
    seen: set[int] = set()
    page = 0
    scanned = 0
    for r in conn.execute("SELECT * FROM ev WHERE t < ? ORDER BY t DESC, id DESC", (until,)):
        scanned += 1
        if scanned > budget:
            break
        if r[0] in seen:
            continue
        events = assemble(conn, marks, r[5], r[6], r[7])
        seen.update(e[0] for e in events)
        got_outcome, got_vmta = outcome_of(events)
        if (vmta is None or got_vmta == vmta) and (outcome is None or got_outcome == outcome):
            page += 1
            if page >= PAGE:
                break
    return page


def timed(fn: Callable[[], int], picks: int) -> str:
    took = []
    n = 0
    for _ in range(picks):
        started = time.perf_counter()
        n += fn()
        took.append(time.perf_counter() - started)
    return f"{1000 * statistics.median(took):8.2f} {1000 * max(took):8.1f} ms ({n / picks:.0f} rows)"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("store", type=Path)
    ap.add_argument("--work", type=Path, default=None)
    ap.add_argument("--txns", type=int, default=8)
    ap.add_argument("--picks", type=int, default=100)
    ap.add_argument("--budget", type=int, default=100_000)
    args = ap.parse_args()
    src = sqlite3.connect(f"file:{args.store}?mode=ro", uri=True)
    with tempfile.TemporaryDirectory(dir=args.work) as tmp:
        built = build(src, Path(tmp), args.txns)
        n_ev = src.execute("SELECT count(*) FROM corr_events").fetchone()[0]
        n_tl = src.execute("SELECT count(*) FROM corr_timelines").fetchone()[0]
        print(f"{n_ev:,} events of {n_tl:,} timelines, written in {args.txns} transactions (SQLite alone)")
        for label, (conn, took) in built.items():
            size = store.used_bytes(conn) / 1e6
            print(f"  write {label:<20} {took:6.2f} s  {n_ev / took:>9,.0f} events/s  {size:6.1f} MB")
        days = [r[0] for r in src.execute("SELECT day FROM corr_days")]
        rng = random.Random(10)
        mids = [r[0] for r in src.execute("SELECT mid_h FROM corr_timelines WHERE mid_h IS NOT NULL")]
        t_lo, t_hi = src.execute("SELECT min(t0), max(t0) FROM corr_timelines").fetchone()
        vmtas = [r[0] for r in src.execute("SELECT DISTINCT vmta FROM corr_timelines WHERE vmta IS NOT NULL")]
        mat = built["materialised"][0]
        der = built["derived + search"][0]  # the derived variant that can answer a search at all without a sort
        print(f"reads, median and max of {args.picks} picks (rows: timelines+events, or a page's timelines)")

        def message_case(c: sqlite3.Connection, d: bool) -> Callable[[], int]:
            return lambda: (der_message if d else mat_message)(c, rng.choice(mids), days)

        cases: list[tuple[str, Callable[[sqlite3.Connection, bool], Callable[[], int]]]] = [
            ("one Message-Id with events", message_case),
        ]
        for name, vm, oc in (("search page, unfiltered", None, None), ("search page, one vmta", "?", None),
                             ("search page, bounced", None, 3), ("search page, complained", None, 4)):
            def case(c: sqlite3.Connection, d: bool, vm: str | None = vm, oc: int | None = oc) -> Callable[[], int]:
                def run() -> int:
                    until = rng.uniform(t_lo + 0.2 * (t_hi - t_lo), t_hi)
                    v = rng.choice(vmtas) if vm else None
                    if d:
                        return der_search(c, until, v, oc, args.budget, days)
                    return mat_search(c, until, v, oc, args.budget)
                return run
            cases.append((name, case))
        for name, make in cases:
            picks = args.picks if "Message" in name else max(5, args.picks // 10)
            rng.seed(name)
            m = timed(make(mat, False), picks)
            rng.seed(name)
            d = timed(make(der, True), picks)
            print(f"  {name:<28} materialised {m}   derived {d}")


if __name__ == "__main__":
    main()
