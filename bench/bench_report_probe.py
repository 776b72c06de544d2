"""What a late report costs at a store's size: linking it (correlator) and attributing its vmta (metrics).

Usage: python bench/bench_report_probe.py STORE [--keys 200] [--batch 1]
STORE is a state database a run left behind (`bench_daemon.py --keep DIR` keeps DIR/live-state/state/watchtower.db);
it is opened read-only. A feedback-loop report or a remote bounce carries no timeQueued, so its Message-Id key is
probed in every slice of the store (linking.py `_probe`), unless the link cache still holds it: a report that arrives
hours after its delivery (the usual case) always misses the cache. This takes `--keys` stored timelines spread evenly
over the store's ids (oldest to newest), probes each one's Message-Id + recipient key as a report would, with the
correlator's own code and a cold link cache, `--batch` keys per probe call (a write probes a group's keys together),
and prints the seconds and index seeks per key by age of the timeline (which quarter of the store it is in), and
whether each probe found the timeline it was taken from. Then the same reports as the daemon's metrics attribute
them (`correlator.attribution.Attributor.lookup`, what a batch of complaints waits for on the event loop), out of the
in-memory index: per quarter, and for reports whose delivery is not in the store (not stored yet, or pruned).
The first pass over a cold store reads from disk: run it twice to compare builds. `--without-filters` ignores the
store's generation filters (correlator/genfilter.py): the search as before them, on the same store.
"""

from __future__ import annotations

import argparse
import sqlite3
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from correlator.attribution import Attributor, RecentDeliveries  # noqa: E402
from correlator.genfilter import GenerationFilters  # noqa: E402
from correlator.ingest import Ingestor  # noqa: E402
from correlator.keys import RcptHasher  # noqa: E402
from correlator.store import ReadPool  # noqa: E402
from exporter.records import Columns  # noqa: E402

FBL = ("type", "timeLogged", "orig", "rcpt", "header_Message-Id")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("store", type=Path)
    ap.add_argument("--keys", type=int, default=200)
    ap.add_argument("--batch", type=int, default=1, help="keys per probe call")
    ap.add_argument("--without-filters", action="store_true",
                    help="ignore the store's generation filters (correlator/genfilter.py): as a store before them")
    args = ap.parse_args()
    if args.without_filters:
        GenerationFilters.refresh = lambda self, conn: None  # type: ignore[method-assign]
    conn = sqlite3.connect(f"file:{args.store}?mode=ro", uri=True, isolation_level=None)
    conn.execute("PRAGMA cache_size=-65536")  # the correlator writer's page cache is at least this
    low, top = conn.execute("SELECT min(id), max(id) FROM corr_timelines").fetchone()
    ingestor = Ingestor(RcptHasher(None), lambda _rcpt, _mta: "", 3600.0)
    started = time.perf_counter()
    ingestor._sync(conn)  # the slice lists, as a write reads them (and the key filter's first load step)
    print(f"{args.store}: timelines {low:,}..{top:,}, {len(ingestor._days):,} slices listed,"
          f" {len(ingestor._gen_filters.bits):,} generation filters used;"
          f" start-up read {time.perf_counter() - started:.1f} s", flush=True)
    step = max(1, (top - low) // args.keys)
    picks = []
    for k in range(args.keys):
        row = conn.execute("SELECT id, mid_h, rcpt_h FROM corr_timelines WHERE id >= ? AND mid_h IS NOT NULL"
                           " ORDER BY id LIMIT 1", (low + k * step,)).fetchone()
        if row:
            picks.append(row)
    quarters: dict[int, list[tuple[float, int]]] = {q: [] for q in range(4)}
    wrong = 0
    for first in range(0, len(picks), args.batch):
        group = picks[first : first + args.batch]
        ingestor._link.clear()
        wanted = {mid_h ^ rcpt_h: (mid_h, rcpt_h, None) for _id, mid_h, rcpt_h in group}
        seeks = ingestor.probe_seeks
        started = time.perf_counter()
        ingestor._probe(conn, "mid_h", wanted)
        took = time.perf_counter() - started
        per_key = (took / len(group), (ingestor.probe_seeks - seeks) // len(group))
        for tl, mid_h, rcpt_h in group:
            if ingestor._link.get(mid_h ^ rcpt_h) != tl:
                wrong += 1
            quarters[min(3, (tl - low) * 4 // (top - low + 1))].append(per_key)
    for q, got in quarters.items():
        if got:
            print(f"quarter {q + 1} (oldest = 1): {len(got)} keys, {statistics.median(t for t, _ in got) * 1e3:.2f} ms"
                  f" and {statistics.median(s for _, s in got):,.0f} index seeks per key (median)", flush=True)
    print(f"found another timeline than the one taken (a newer one of the same key): {wrong}")
    attribution(args.store, conn, [tl for tl, _m, _r in picks], low, top)


def attribution(db: Path, conn: sqlite3.Connection, ids: list[int], low: int, top: int) -> None:
    """Attribute a complaint about each picked timeline's delivery (and about a delivery never stored), one by one."""
    columns = Columns.from_header(list(FBL))
    att = Attributor(RecentDeliveries(), ReadPool(db), RcptHasher(None), 3600.0, time.time)
    by_quarter: dict[int, list[float]] = {q: [] for q in range(4)}
    absent: list[float] = []
    for tl in ids:
        message_id, rcpt, orig, t_last = conn.execute(
            "SELECT message_id, rcpt, orig, t_last FROM corr_timelines WHERE id = ?", (tl,)).fetchone()
        for row, into in ((["f", str(int(t_last) + 3600), orig, rcpt, f"<{message_id}>"],
                           by_quarter[min(3, (tl - low) * 4 // (top - low + 1))]),
                          (["f", str(int(t_last) + 3600), orig, "x" + rcpt, f"<x{message_id}>"], absent)):
            started = time.perf_counter()
            att.lookup(columns, [row])
            into.append(time.perf_counter() - started)
    for q, took in by_quarter.items():
        if took:
            print(f"attribution, delivery in quarter {q + 1}: {statistics.median(took) * 1e3:.2f} ms per report"
                  f" (median), {max(took) * 1e3:.1f} ms max", flush=True)
    print(f"attribution, delivery not in the store: {statistics.median(absent) * 1e3:.2f} ms per report (median),"
          f" {max(absent) * 1e3:.1f} ms max; {getattr(att, 'seeks', 0):,} index seeks in all"
          f" ({getattr(att, 'skipped', 0)} over the budget)")


if __name__ == "__main__":
    main()
