"""The daemon under load, whole process: a backfill with the correlator on, then live appends.

1. backfill: `watchtower run` (correlator on, start_position beginning) over a varied corpus
   (bench/corpus.py, 600k lines by default); prints records/s, peak RSS (the daemon's VmHWM; with its children the
   sum of each process's own VmHWM, read every 0.1 s and before each SIGTERM, an upper bound of their joint peak,
   and the largest sampled sum of their VmRSS, a lower bound), and the time a SIGTERM sent mid-backfill took; then
   restarts and checks the totals are exact.
2. live: a separate process (the appender) appends acct+diag+fbl+bounce records on a fixed schedule, `--rate`
   records/s for `--seconds`, to a running daemon; this process only samples. The metrics lag of a sample is the
   records the schedule had written by the moment the /metrics answer arrived minus the records it counts, as
   seconds of traffic (p50/p99, per quarter); a slow answer cannot hide lag, and appends go on during it. Also
   printed: the timeline backlog (rows held in memory + bytes the writer reads again from the files) at the middle
   and at the end of the run, the timeline lag per quarter of the run as seconds of traffic (flat = the correlator
   keeps up), RSS (daemon plus its children) at start, middle and end, and the CPU of the daemon, its correlator
   process, this benchmark, the appender and the whole machine. Once the appends stop it waits (up to
   `--drain-timeout`) until the daemon has counted every record written, read every byte (bytes_behind 0) and stored
   every row (timeline backlog 0), and prints the final counts, or that it did not get there. FLAG lines say when a
   target or a sanity check fails: complaints counted with vmta `unknown` above 2%, timeline lag growing quarter over
   quarter, metrics lag p99 above 1 s, whole-page scrapes above 0.1 s (p99 from 100 of them, else the slowest), peak
   RSS rising every quarter, the appender behind its schedule, a drain that did not finish.
   Generating the records costs ~0.35 of a core at 20k records/s, taken from the daemon on a 2-core machine (PMTA
   writes its logs from C): `--pregenerate` has the appender generate them before the daemon starts and only copy
   them in while appending. `--keep DIR` keeps the run's files and store (for bench/bench_store_ops.py).
   `--complaint-delay S` writes each report (f, rb) S seconds after its delivery (their vmta is then looked up deeper
   in the store); the complaints counted, counted `unknown` and skipped by the lookup budget are printed per quarter.

Ratios are against the target in the same run (`--rate`); no assertion, just figures:
`python bench/bench_daemon.py [--lines 600000] [--rate 20000] [--seconds 30]`.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import io
import multiprocessing
import os
import signal
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from corpus import HEADERS, RECORDS, _Gen, make_corpus  # noqa: E402

from correlator import store  # noqa: E402
from exporter.config import CorrelatorConfig  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
CHECKOUT = REPO
"""The checkout whose daemon runs (`--checkout`: `python -m exporter` from its directory imports its code)."""
GEN_BITS: int | None = None
"""`--gen-bits`: timelines per key-index generation (2**N) in the daemon under test, to give a short run the
generation count of a much bigger store (what linking's probes may have to seek)."""
FILTER_BITS: int | None = None
"""`--filter-bits`: 2**N bits in the correlator's key filter (32 MiB = 2**28): a small one has the false-positive
rate of a much fuller store in a short run (its minimum of pruned timelines before a rebuild scaled alike)."""
MAX_DB: int | None = None
"""`--max-db-size`: correlator.max_db_size in bytes (pruning under the size cap during the run)."""
STARTED: list[subprocess.Popen[bytes]] = []
"""Every daemon this run started: stopped at the end whatever happened (a crashed run once left one running)."""
HTTP = httpx.Client(timeout=10)
"""One client, its connections kept alive, as Prometheus scrapes: `httpx.get` builds a client (and a TLS context,
loading the CA bundle) per request, which was a quarter of this benchmark's CPU, taken from the daemon."""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


CORRELATOR = True
POLL = 0.25
DEFAULT_WORKER = CorrelatorConfig.model_fields["worker"].default
WORKER = DEFAULT_WORKER
"""correlator.worker of the daemon under test: the daemon's default unless --worker says otherwise."""
SAMPLE_EVERY = 0.5
"""Seconds between two lag samples (each one /metrics scrape of LAG_SAMPLES)."""
LAG_SAMPLES = ("pmta_delivered_total", "pmta_bounced_total", "pmta_deferred_total", "pmta_complaints_total",
               "pmta_remote_bounced_total", "watchtower_attribution_skipped_total")
"""The samples a lag sample reads (`/metrics?name[]=`): the counts and the attribution."""
FULL_SCRAPE_EVERY = 15.0
"""Seconds between two scrapes of the whole page, as a Prometheus would (0: every sample scrapes the whole page, as the
benchmark did before the sixteenth round: 2 whole pages a second, ~20% of the daemon's time holding the GIL)."""
MAX_PENDING: int | None = None
FILES = tuple(HEADERS)
"""The corpus's file kinds (acct, diag, fbl, bounce): one file of each is appended to while live."""
UNKNOWN_FLAG_SHARE = 0.02
"""Complaints counted with vmta `unknown` above this share of all complaints: a FLAG (attribution failing)."""
SCRAPE_TARGET = 0.1
"""Issue #10's p99 for a /metrics answer, seconds: whole-page scrapes slower than this under load are a FLAG."""


def scrape_figure(seconds: list[float]) -> tuple[str, float]:
    """("p99", its value) of whole-page scrape times when there are 100 or more, else ("max", the largest): fewer
    samples cannot tell a p99, and the largest is then the honest bound."""
    ordered = sorted(seconds)
    if len(ordered) >= 100:
        return "p99", ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))]
    return "max", ordered[-1]


def rises(values: list[float], slack: float = 0.01) -> bool:
    """Whether each of `values` is more than `slack` (a share) above the one before: memory climbing all run."""
    return len(values) >= 2 and all(b > a * (1 + slack) for a, b in zip(values, values[1:], strict=False))


def config(directory: Path, logs: Path) -> tuple[Path, str]:
    listen = f"127.0.0.1:{free_port()}"
    cfg = {
        "sources": [{"name": kind, "paths": [str(logs / f"{kind}-*.csv")], "records": list(records)}
                    for kind, records in RECORDS.items()],
        "state_dir": str(directory / "state"),
        "listen": listen,
        "log_level": "warning",
        "tail": {"start_position": "beginning", "poll_interval": POLL,
                 **({"max_pending_rows": MAX_PENDING} if MAX_PENDING else {})},
        "correlator": {"enabled": CORRELATOR, "worker": WORKER, **({"max_db_size": MAX_DB} if MAX_DB else {})},
    }
    path = directory / "watchtower.yml"
    path.write_text(yaml.safe_dump(cfg))
    return path, listen


def start(cfg: Path, listen: str, log: Path) -> subprocess.Popen[bytes]:
    env = dict(os.environ)
    lines = []  # a sitecustomize (after the checkout on the path) that sets them in every process of the daemon
    if GEN_BITS is not None:
        lines += ["import correlator.store", f"correlator.store.GEN_BITS = {GEN_BITS}"]
    if FILTER_BITS is not None:
        lines += ["import exporter.allocator", "exporter.allocator.set_default()",  # as exporter.cli, before polars
                  "import correlator.keyfilter as kf", f"kf._LOG2_BITS = {FILTER_BITS}",
                  f"kf._MASK = {(1 << FILTER_BITS) - 1}", "import correlator.ingest as ing",  # rebuilt as much sooner
                  "for m in (kf, ing):  # keyfilter.py since the twenty-second round, ingest.py before",
                  "    if hasattr(m, 'FILTER_REBUILD_MIN_DEAD'):",
                  f"        m.FILTER_REBUILD_MIN_DEAD >>= {28 - FILTER_BITS}"]
    if lines:
        site = cfg.parent / "site"
        site.mkdir(exist_ok=True)
        (site / "sitecustomize.py").write_text("\n".join(lines) + "\n")
        env["PYTHONPATH"] = os.pathsep.join([str(CHECKOUT), str(site)])
    with open(log, "ab") as f:
        proc = subprocess.Popen([sys.executable, "-m", "exporter", "run", "--config", str(cfg)], cwd=CHECKOUT,
                                stdout=f, stderr=subprocess.STDOUT, env=env)
    STARTED.append(proc)
    for _ in range(600):
        try:
            HTTP.get(f"http://{listen}/healthz", timeout=1)
            return proc
        except httpx.HTTPError:
            time.sleep(0.05)
    raise SystemExit("daemon did not start: " + log.read_text()[-2000:])


def scrape(listen: str, names: tuple[str, ...] | None = None) -> str:
    """/metrics (only the samples `names`, when given), uncompressed: the benchmark's own scrapes should cost the
    daemon little. A daemon older than `name[]` answers the whole page: the same lines are found in it."""
    return HTTP.get(f"http://{listen}/metrics", params={"name[]": list(names)} if names else None,
                    headers={"Accept-Encoding": "identity"}).text


PROMETHEUS_HEADERS = {"Accept": "application/openmetrics-text;version=1.0.0,application/openmetrics-text;"
                      "version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1", "Accept-Encoding": "gzip"}
"""What Prometheus 2.x sends by default: the whole page, gzipped."""


def prometheus_scrape(listen: str) -> int:
    """The whole page as a Prometheus asks for it, read as sent (not gunzipped here: the client's decoding is not
    the daemon's time); its size in bytes."""
    with HTTP.stream("GET", f"http://{listen}/metrics", headers=PROMETHEUS_HEADERS) as r:
        return sum(len(chunk) for chunk in r.iter_raw())


def counted(listen: str, text: str | None = None) -> tuple[float, int, int, int]:
    """(records counted by the persisted pmta_* counters, rows waiting to be committed, bytes to read again, bytes
    written to the files and not read yet).

    The corpus holds d, b (acct), t, tq (diag), f (fbl) and rb (bounce) records: each is counted by exactly one of
    these. (watchtower_* self-metrics restart at 0 with the process, so they cannot measure across a restart.)
    """
    if text is None:
        text = scrape(listen, LAG_SAMPLES)
    n = sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
            if line.startswith(("pmta_delivered_total{", "pmta_bounced_total{", "pmta_deferred_total{",
                                "pmta_complaints_total{", "pmta_remote_bounced_total{")))
    health = HTTP.get(f"http://{listen}/healthz").json()
    return (n, int(health.get("commit_backlog_rows", -1)), int(health.get("commit_backlog_bytes", 0)),
            int(health.get("bytes_behind", 0)))


def kb_field_mb(path: str, key: str) -> float:
    """A `Key: N kB` field of a /proc file in MB (0 where there is none)."""
    for line in Path(path).read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1]) / 1024
    return 0.0


def status(pid: int, key: str) -> float:
    return kb_field_mb(f"/proc/{pid}/status", key)


def child_pids(pid: int) -> list[int]:
    """The daemon's child processes alive now (the correlator process with `--worker process`)."""
    return [int(child) for task in Path(f"/proc/{pid}/task").iterdir()
            for child in (task / "children").read_text().split()]


def over_children(pid: int, of_one: Callable[[int], float]) -> float:
    """`of_one(child)` summed over the daemon's child processes alive now (one gone meanwhile counts 0)."""
    total = 0.0
    for child in child_pids(pid):
        try:
            total += of_one(child)
        except OSError:  # gone meanwhile
            pass
    return total


def rss_with_children(pid: int) -> float:
    """VmRSS of the daemon plus its child processes, MB."""
    return status(pid, "VmRSS") + over_children(pid, lambda child: status(child, "VmRSS"))


class Peaks:
    """Peak memory of the daemons of a run and their children: each process's own VmHWM (its high-water mark, the
    kernel's), summed over the processes alive together (an upper bound of their joint peak: their peaks need not
    coincide), and the largest sampled sum of their VmRSS (a lower bound)."""

    def __init__(self) -> None:
        self.daemon = self.hwm_sum = self.rss_sum = 0.0
        self.parts: dict[str, float] = {}
        """The last VmHWM sum's processes: daemon, correlator process, resource tracker (MB)."""

    def sample(self, pid: int) -> None:
        try:
            self.daemon = max(self.daemon, status(pid, "VmHWM"))
            parts = {"daemon": status(pid, "VmHWM")}
            rss = status(pid, "VmRSS")
        except OSError:  # exited meanwhile
            return
        for child in child_pids(pid):
            try:
                cmdline = Path(f"/proc/{child}/cmdline").read_bytes()
                name = "resource tracker" if b"resource_tracker" in cmdline else "correlator process"
                parts[name] = parts.get(name, 0.0) + status(child, "VmHWM")
                rss += status(child, "VmRSS")
            except OSError:
                pass
        self.rss_sum = max(self.rss_sum, rss)
        if sum(parts.values()) >= self.hwm_sum:
            self.hwm_sum, self.parts = sum(parts.values()), parts

    def __str__(self) -> str:
        parts = " + ".join(f"{name} {mb:.0f}" for name, mb in self.parts.items())
        return (f"peak RSS {self.daemon:.0f} MB (the daemon's VmHWM); with children {self.hwm_sum:.0f} MB = {parts} "
                f"(each process's own VmHWM, read every 0.1 s and before each SIGTERM, summed: an upper bound), "
                f"{self.rss_sum:.0f} MB (their VmRSS summed, sampled every 0.1 s: a lower bound)")


def backfill(work: Path, lines: int) -> None:
    logs = work / "logs"
    counts = make_corpus(logs, lines)
    records = counts["lines"]
    cfg, listen = config(work, logs)
    log = work / "daemon.log"
    t0 = time.perf_counter()
    proc = start(cfg, listen, log)
    peaks = Peaks()
    while counted(listen)[0] < records // 2:
        peaks.sample(proc.pid)
        time.sleep(0.1)
    peaks.sample(proc.pid)
    stop0 = time.perf_counter()
    proc.send_signal(signal.SIGTERM)
    proc.wait(timeout=60)
    stop_s = time.perf_counter() - stop0
    proc = start(cfg, listen, log)
    while True:
        n, backlog, _bytes, behind = counted(listen)
        peaks.sample(proc.pid)
        if n >= records and backlog == 0 and _bytes == 0 and behind == 0:
            break
        time.sleep(0.1)
    took = time.perf_counter() - t0
    peaks.sample(proc.pid)
    exact = counted(listen)[0] == records
    proc.send_signal(signal.SIGTERM)
    proc.wait(timeout=60)
    mode = "on" if CORRELATOR else "off"
    print(f"backfill: {records:,} records (correlator {mode}) in {took:.1f}s = {records / took:,.0f} records/s "
          f"incl. one restart; {peaks}; SIGTERM mid-backfill exited in {stop_s:.2f}s; "
          f"totals exact after restart: {exact}" + (f"; {stored_exactly(work / 'state' / 'watchtower.db', records)}"
                                                    if CORRELATOR else ""))


def stored_exactly(db: Path, records: int) -> str:
    """Whether the store holds each record once and each message in one timeline: the restart must not split a
    message's deferrals from its delivery (two writers did, before the twenty-second round: 3-5k split timelines)."""
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        events = conn.execute("SELECT (SELECT count(*) FROM corr_events) + (SELECT count(*) FROM corr_queue_events)"
                              ).fetchone()[0]
        split = conn.execute("SELECT count(*) FROM (SELECT 1 FROM corr_timelines WHERE job_h IS NOT NULL"
                             " GROUP BY job_h, rcpt_h, scope HAVING count(*) > 1)").fetchone()[0]
    finally:
        conn.close()
    return f"records stored {events:,} of {records:,}, messages split across timelines {split:,}"


def drain(listen: str, written: int, limit: float) -> tuple[str, bool, tuple[float, int, int, int] | None]:
    """Once nothing is appended: how long until the daemon has counted every record written and read every byte
    (metrics), then stored every row (timelines: no rows held, no bytes to read again); (what it says, whether it
    got there within `limit` seconds, the last counted())."""
    t0 = time.monotonic()
    metrics_at: float | None = None
    last = None
    while time.monotonic() - t0 < limit:
        try:
            last = counted(listen)
        except httpx.HTTPError:
            continue  # no answer within 10 s: ask again
        n, rows, nbytes, behind = last
        if metrics_at is None and n >= written and behind == 0:
            metrics_at = time.monotonic() - t0
        if metrics_at is not None and rows == 0 and nbytes == 0:
            return f"metrics in {metrics_at:.1f}s, timelines in {time.monotonic() - t0:.1f}s", True, last
        time.sleep(0.2)
    return (f"NOT within {limit:.0f}s (metrics " + (f"in {metrics_at:.1f}s" if metrics_at is not None else "not either")
            + ")", False, last)


def by_quarter(samples: list[tuple[float, float]], end: float) -> list[list[float]]:
    """The values of (time, value) samples in each quarter of [0, end], each sorted (the last sample, at `end`,
    in the fourth)."""
    quarters: list[list[float]] = [[], [], [], []]
    for t, value in samples:
        quarters[min(3, int(t * 4 / end)) if end else 0].append(value)
    return [sorted(q) for q in quarters]


def p99(ordered: list[float]) -> float:
    return ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]


def metrics_lag_summary(lag_at: list[tuple[float, float]], seconds: float) -> str:
    """p50/p99/max of the metrics lag in each quarter of the run: whether it grows with the store."""
    return ", ".join(f"Q{q + 1} {statistics.median(lags):.2f}/{p99(lags):.2f}/{lags[-1]:.2f}s"
                     for q, lags in enumerate(by_quarter(lag_at, seconds)) if lags)


def timeline_quarters(behind: list[tuple[float, int, int]], rate: int, traffic: float) -> list[list[float]]:
    """The timeline lag samples (seconds of traffic) of each quarter of the run, each sorted."""
    def seconds(rows: int, nbytes: int) -> float:
        return rows / rate + (nbytes / traffic if traffic else 0.0)

    end = behind[-1][0] if behind else 0.0
    return by_quarter([(t, seconds(r, b)) for t, r, b in behind], end)


def lag_summary(quarters: list[list[float]]) -> str:
    """Median and max of the timeline lag in each quarter of the run: flat when the quarters agree."""
    return "median/max " + ", ".join(f"Q{q + 1} {statistics.median(lags):.1f}/{lags[-1]:.1f}s"
                                     for q, lags in enumerate(quarters) if lags)


def grows(quarters: list[list[float]]) -> bool:
    """Whether the timeline lag grows quarter over quarter: its medians rise every quarter by 0.5 s in all, or the
    last quarter's is over 1.5x the first's plus 1 s."""
    medians = [statistics.median(q) for q in quarters if q]
    if len(medians) < 4:
        return False
    rising = all(a < b for a, b in zip(medians, medians[1:], strict=False)) and medians[-1] - medians[0] >= 0.5
    return rising or medians[-1] > 1.5 * medians[0] + 1.0


def machine_cpu() -> tuple[float, float, float]:
    """(busy, all, iowait) CPU seconds of the whole machine since boot, from /proc/stat: is anything starved, or
    waiting for the disk?"""
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = fields[3] + fields[4]  # idle + iowait
    tick = os.sysconf("SC_CLK_TCK")
    return (sum(fields) - idle) / tick, sum(fields) / tick, fields[4] / tick


def stat_fields(pid: int) -> list[str]:
    """/proc/PID/stat after the command name (field 3 on: state, ppid, ...)."""
    return Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()


def usage(pid: int, appender_cpu: float) -> tuple[float, ...]:
    """(wall, daemon CPU, children CPU, this benchmark's CPU, the appender's CPU, machine busy, machine all, iowait,
    children's major faults) now: two of them give the shares of a stretch of the run."""
    daemon, children = cpu_seconds(pid)
    busy, total, iowait = machine_cpu()
    return (time.monotonic(), daemon, children, time.process_time(), appender_cpu, busy, total, iowait,
            over_children(pid, lambda child: int(stat_fields(child)[9])))  # majflt


def usage_summary(marks: list[tuple[float, ...]]) -> str:
    """Per stretch between two marks: cores busy (daemon, correlator, benchmark, appender, machine), iowait, major
    faults."""
    out = []
    for q, (a, b) in enumerate(zip(marks, marks[1:], strict=False)):
        wall = max(b[0] - a[0], 1e-9)
        busy = "/".join(f"{(b[i] - a[i]) / wall:.2f}" for i in (1, 2, 3, 4, 5))
        out.append(f"Q{q + 1} {busy} iowait {(b[7] - a[7]) / wall:.2f} majflt {b[8] - a[8]:,.0f}")
    return "; ".join(out)


def cpu_seconds(pid: int) -> tuple[float, float]:
    """(CPU seconds of the daemon, of its child processes alive now)."""
    def one(p: int) -> float:
        fields = stat_fields(p)
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime

    return one(pid), over_children(pid, one)


class Generated:
    """Messages generated while appending (bench/corpus.py): ~0.35 of a core at 20k records/s, taken from the
    machine the daemon runs on."""

    def __init__(self, complaint_delay: float = 0.0) -> None:
        self.gen = _Gen(11, start=time.time() - 3600, invalid_at=-1)
        self.complaint_delay = complaint_delay
        """`--complaint-delay`: seconds between a delivery's line and its reports' (f, rb) (0: in the same write)."""
        self.held: collections.deque[tuple[float, str, str]] = collections.deque()
        """Report lines not written yet, with when they are due and their file (in order)."""

    def append(self, handles: dict[str, Any], due: int) -> int:
        """Whole messages of at least `due` records, and the reports now due; returns the records written."""
        written = 0
        now = time.perf_counter()
        held = self.held
        if held and held[0][0] <= now:
            lines: dict[str, list[str]] = {}
            while held and held[0][0] <= now:
                _due, name, line = held.popleft()
                lines.setdefault(name, []).append(line)
            for name, rows in lines.items():
                handles[name].write("\n".join(rows) + "\n")
                written += len(rows)
        while written < due:
            a, d, f, r = self.gen.message()
            if (f or r) and self.complaint_delay:
                held.extend((now + self.complaint_delay, name, line) for name, rows in (("fbl", f), ("bounce", r))
                            for line in rows)
                f, r = [], []
            for name, rows in (("acct", a), ("diag", d), ("fbl", f), ("bounce", r)):
                if rows:
                    handles[name].write("\n".join(rows) + "\n")
            written += len(a) + len(d) + len(f) + len(r)
        return written


class Pregenerated:
    """The same messages, generated before the daemon starts and copied in blocks while appending: PMTA writes
    its logs from C, so what the daemon gets of the machine should not go to a Python generator (`--pregenerate`)."""

    BLOCK = 500
    """Records per block, at least (whole messages): the pace is kept to 25 ms at 20k records/s."""

    def __init__(self, records: int) -> None:
        """Held in memory, one string per file and block: ~470 bytes a record, ~8.5 GB for 900 s at 20k/s (needs a
        machine with room for that beside the daemon's store). Kept in a file of the run instead, the file was
        written back to disk during the run (941 MB dirty at the peak) and the one run so taken fell far behind
        (bench/README.md, tenth round)."""
        gen = Generated()
        self.blocks: list[tuple[int, dict[str, str]]] = []
        started = time.perf_counter()
        total = 0
        while total < records:
            parts = {name: io.StringIO() for name in FILES}
            n = gen.append(parts, self.BLOCK)
            self.blocks.append((n, {name: text for name, part in parts.items() if (text := part.getvalue())}))
            total += n
        self.blocks.reverse()  # popped from the end
        print(f"  {total:,} records generated in {time.perf_counter() - started:.0f} s before the daemon started",
              flush=True)

    def append(self, handles: dict[str, Any], due: int) -> int:
        written = 0
        while written < due and self.blocks:
            n, texts = self.blocks.pop()
            for name, text in texts.items():
                handles[name].write(text)
            written += n
        return written


WRITTEN, APPENDER_CPU, BEHIND_SCHEDULE, FINISHED = range(4)
"""Slots of the appender's shared array: records written (and flushed), its CPU seconds since the start of the
schedule, the most seconds of traffic it was behind its schedule after a write, 1 once it is done."""


def append_on_schedule(paths: dict[str, str], rate: int, seconds: float, pregenerate: bool, complaint_delay: float,
                       start_at: Any, go: Any, ready: Any, shared: Any) -> None:
    """The appender (its own process): from `start_at` (time.monotonic(), the same clock in every process) on, keeps
    the files at int(rate * elapsed) records, flushing every 10 ms, until rate * seconds records are written; the
    sampling process reads its progress from `shared`."""
    source: Generated | Pregenerated = (Pregenerated(int(rate * seconds * 1.01)) if pregenerate
                                        else Generated(complaint_delay))
    handles = {name: open(path, "a", encoding="utf-8") for name, path in paths.items()}  # noqa: SIM115
    ready.set()
    go.wait()
    t0 = start_at.value
    total = int(rate * seconds)
    written = 0
    behind = 0.0
    cpu0 = time.process_time()
    time.sleep(max(0.0, t0 - time.monotonic()))
    while True:
        now = time.monotonic()
        due = min(total, int((now - t0) * rate))
        if due > written:
            written += source.append(handles, due - written)
            for h in handles.values():
                h.flush()
            shared[WRITTEN] = written
            behind = max(behind, (min(total, (time.monotonic() - t0) * rate) - written) / rate)
            shared[BEHIND_SCHEDULE] = behind
        shared[APPENDER_CPU] = time.process_time() - cpu0
        if due >= total or (pregenerate and not source.blocks):  # type: ignore[union-attr]
            break
        time.sleep(max(0.0, 0.01 - (time.monotonic() - now)))
    for h in handles.values():
        h.close()
    shared[APPENDER_CPU] = time.process_time() - cpu0
    shared[FINISHED] = 1


def attribution(text: str) -> tuple[float, float, float]:
    """(complaints counted, of them with vmta `unknown`, f/rb records whose store lookup was skipped), from a
    scrape."""
    complaints = unknown = skipped = 0.0
    for line in text.splitlines():
        if line.startswith("pmta_complaints_total{"):
            value = float(line.rsplit(" ", 1)[1])
            complaints += value
            unknown += value if 'vmta="unknown"' in line else 0.0
        elif line.startswith("watchtower_attribution_skipped_total "):
            skipped = float(line.rsplit(" ", 1)[1])
    return complaints, unknown, skipped


def live(work: Path, rate: int, seconds: float, restart_at: float | None = None, pregenerate: bool = False,
         complaint_delay: float = 0.0, drain_limit: float = 120.0) -> None:
    logs = work / "live"
    logs.mkdir()
    paths = {name: logs / f"{name}-2026-11-30-0000.csv" for name in FILES}
    for name, path in paths.items():
        path.write_text(HEADERS[name] + "\n")
    headers = sum(path.stat().st_size for path in paths.values())
    ctx = multiprocessing.get_context("fork")  # the appender needs nothing of this process but the code
    start_at = ctx.Value("d", 0.0, lock=False)
    shared = ctx.Array("d", 4, lock=False)
    go, ready = ctx.Event(), ctx.Event()
    appender = ctx.Process(target=append_on_schedule, name="bench-appender", daemon=True,
                           args=({name: str(p) for name, p in paths.items()}, rate, seconds, pregenerate,
                                 complaint_delay, start_at, go, ready, shared))
    appender.start()
    ready.wait()  # --pregenerate: generated before the daemon starts
    cfg, listen = config(work / "live-state" if (work / "live-state").mkdir() is None else work, logs)
    proc = start(cfg, listen, work / "live.log")
    rss0 = rss_with_children(proc.pid)
    total = int(rate * seconds)
    lags: list[float] = []
    lag_at: list[tuple[float, float]] = []
    """(seconds since the start, metrics lag) of each sample: when the slow samples came."""
    behind: list[tuple[float, int, int]] = []
    """(seconds since the start, rows in memory, bytes to read again) at each sample."""
    middle: tuple[int, int, float] | None = None
    rss_by_quarter = [0.0] * 4
    """Peak RSS (with children) seen in each quarter of the run (sampled with the lag)."""
    db = Path(yaml.safe_load(cfg.read_text())["state_dir"]) / "watchtower.db"
    used_by_quarter = [0.0] * 4
    """Peak bytes in use in the state DB in each quarter (what `correlator.max_db_size` caps)."""
    stalls: list[tuple[float, str]] = []
    """(seconds since the start, error) of each sample the daemon did not answer within 10 s."""
    dirty = 0.0
    """Peak MB of file pages waiting to be written (Dirty + Writeback): the disk falling behind stalls writers."""
    planned_restart = restart_at
    reports: list[tuple[float, float, float]] = [(0.0, 0.0, 0.0)] * 5
    """attribution() at the start and at the end of each quarter (the same process: no restart)."""
    t0 = time.monotonic() + 0.2
    start_at.value = t0
    go.set()
    time.sleep(max(0.0, t0 - time.monotonic()))
    cpu0 = cpu_seconds(proc.pid)
    machine0, own0, appender0 = machine_cpu(), time.process_time(), 0.0
    marks = [usage(proc.pid, 0.0)]
    """usage() at the start and at the end of each quarter (the same process: no restart)."""

    def scheduled(at: float) -> float:
        """Records the schedule has written by `at` (time.monotonic())."""
        return min(total, max(0.0, (at - t0) * rate))

    cpu_from = t0
    next_sample = t0 + SAMPLE_EVERY
    next_full, full_scrapes = t0 + FULL_SCRAPE_EVERY, []
    while (now := time.monotonic()) - t0 < seconds:
        if restart_at is not None and now - t0 >= restart_at:  # the appender goes on writing meanwhile (a burst after)
            restart_at = None
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=60)
            proc = start(cfg, listen, work / "live.log")
            cpu0, cpu_from = cpu_seconds(proc.pid), time.monotonic()
            machine0, own0, appender0 = machine_cpu(), time.process_time(), shared[APPENDER_CPU]
            continue
        if now < next_sample:
            time.sleep(min(next_sample - now, 0.05))
            continue
        dirty = max(dirty, kb_field_mb("/proc/meminfo", "Dirty") + kb_field_mb("/proc/meminfo", "Writeback"))
        try:
            text = scrape(listen, LAG_SAMPLES if FULL_SCRAPE_EVERY else None)  # the counts and the attribution
            answered = time.monotonic()  # the lag is taken against the schedule at the answer, however slow it was
            n, _rows, _bytes, _behind = counted(listen, text)
            if FULL_SCRAPE_EVERY and answered >= next_full:  # after the sample: what a Prometheus costs, timed
                began = time.monotonic()
                prometheus_scrape(listen)
                full_scrapes.append(time.monotonic() - began)
                next_full += FULL_SCRAPE_EVERY
        except httpx.HTTPError as exc:  # a stall is a result: counted, its time and the daemon's log kept
            stalls.append((now - t0, f"{type(exc).__name__}: {exc}"))
            next_sample = time.monotonic() + SAMPLE_EVERY
            continue
        at = answered - t0
        lags.append(max(0.0, (scheduled(answered) - n) / rate))
        lag_at.append((at, lags[-1]))
        behind.append((at, _rows, _bytes))
        quarter = min(3, int(at * 4 / seconds))
        if quarter >= len(marks) and planned_restart is None:
            marks.append(usage(proc.pid, shared[APPENDER_CPU]))
        rss_by_quarter[quarter] = max(rss_by_quarter[quarter], rss_with_children(proc.pid))
        if CORRELATOR:
            used_by_quarter[quarter] = max(used_by_quarter[quarter], bytes_in_use(db))
            reports[quarter + 1] = attribution(text)
        next_sample = max(next_sample + SAMPLE_EVERY, time.monotonic())
        if middle is None and at >= seconds / 2:
            middle = (_rows, _bytes, rss_with_children(proc.pid))
    flags: list[str] = []
    appender.join(timeout=max(60.0, seconds))
    if appender.is_alive():
        appender.terminate()
        flags.append(f"the appender had not finished {max(60.0, seconds):.0f} s after the end of its schedule")
    written = int(shared[WRITTEN])
    n, backlog, backlog_bytes = 0.0, -1, 0
    for _ in range(30):  # the last sample, through a stall of up to 5 min
        try:
            n, backlog, backlog_bytes, _behind = counted(listen)
            break
        except httpx.HTTPError as exc:
            stalls.append((time.monotonic() - t0, f"{type(exc).__name__}: {exc}"))
    rss1 = rss_with_children(proc.pid)
    marks.append(usage(proc.pid, shared[APPENDER_CPU]))
    elapsed = time.monotonic() - cpu_from
    cpu1 = cpu_seconds(proc.pid)
    machine1, own1, appender1 = machine_cpu(), time.process_time(), shared[APPENDER_CPU]
    drained, caught_up, final = drain(listen, written, drain_limit)
    traffic = (sum(path.stat().st_size for path in paths.values()) - headers) / seconds  # bytes appended per second
    mid_rows, mid_bytes, mid_rss = middle or (0, 0, 0.0)
    lags.sort()
    mode = f"on, {WORKER}" if CORRELATOR else "off"
    if planned_restart is not None:
        mode += f", restarted at {planned_restart:.0f}s"
    print(f"live (correlator {mode}, poll {POLL}s): {written:,} records at {written / seconds:,.0f}/s "
          f"for {seconds:.0f}s (target {rate:,}/s = "
          f"{written / seconds / rate:.2f}x), appended by a separate process on a fixed schedule (at most "
          f"{shared[BEHIND_SCHEDULE]:.2f}s behind it); metrics lag (the schedule's records at each answer minus "
          f"those counted) p50 {statistics.median(lags):.2f}s p99 {p99(lags):.2f}s; "
          f"timeline backlog (rows in memory + MB to read again) middle {mid_rows:,} + {mid_bytes / 1e6:.1f} MB, "
          f"end {backlog:,} + {backlog_bytes / 1e6:.1f} MB; "
          f"RSS (with children) {rss0:.0f} -> {mid_rss:.0f} -> {rss1:.0f} MB")
    quarters = timeline_quarters(behind, rate, traffic)
    print("  timeline lag (backlog as seconds of traffic, one sample per 0.5 s): " + lag_summary(quarters)
          + f"; caught up after the appends stopped: {drained}")
    if final is not None:
        fn, frows, fbytes, fbehind = final
        print(f"  final counts: {written:,} records written, {fn:,.0f} counted ("
              + ("exact" if fn == written else f"{fn - written:+,.0f}") + f"), {fbehind:,} bytes behind, timeline "
              f"backlog {frows:,} rows + {fbytes / 1e6:.1f} MB")
        if fn > written:
            flags.append(f"the daemon counted {fn - written:,.0f} records more than were written")
    busy = [(b - a) / elapsed for a, b in zip(cpu0, cpu1, strict=True)]
    print("  metrics lag p50/p99/max per quarter: " + metrics_lag_summary(lag_at, seconds)
          + "; the slowest samples at " + ", ".join(f"{t:.0f} s ({lag:.1f})" for t, lag in
                                                      sorted(lag_at, key=lambda s: -s[1])[:5]))
    if full_scrapes:
        print(f"  whole-page scrapes (one per {FULL_SCRAPE_EVERY:.0f} s, with Prometheus' headers: gzip, timed to the"
              f" last byte, not decoded): {len(full_scrapes)},"
              f" p50 {statistics.median(full_scrapes):.3f} s,"
              + (f" p99 {scrape_figure(full_scrapes)[1]:.3f} s," if len(full_scrapes) >= 100 else "")
              + f" max {max(full_scrapes):.3f} s; lag samples read"
              f" {len(LAG_SAMPLES)} samples (`name[]`)")
    elif FULL_SCRAPE_EVERY:
        print(f"  no whole-page scrape: the run was shorter than --full-scrape-every ({FULL_SCRAPE_EVERY:.0f} s)")
    else:
        print("  every lag sample scraped the whole page (--full-scrape-every 0)")
    print("  peak RSS (with children) per quarter: " + ", ".join(f"{r:.0f}" for r in rss_by_quarter) + " MB")
    complaints = unknown = 0.0
    if CORRELATOR:
        print("  peak bytes in use in the state DB per quarter: "
              + ", ".join(f"{u / 1e6:,.0f}" for u in used_by_quarter) + " MB")
        if planned_restart is None:  # the self-metric of skipped lookups restarts with the process
            per_quarter = []
            for q in range(4):
                (c0, u0, s0), (c1, u1, s1) = reports[q], reports[q + 1]
                per_quarter.append(f"{c1 - c0:,.0f} / {u1 - u0:,.0f} / {s1 - s0:,.0f}")
            print(f"  complaints (written {complaint_delay:g} s after their delivery) counted / with vmta unknown /"
                  " store lookup skipped, per quarter: " + ", ".join(per_quarter))
        with contextlib.suppress(httpx.HTTPError):
            complaints, unknown, _skipped = attribution(scrape(listen, LAG_SAMPLES))
        print(f"  complaints in all (after the drain): {complaints:,.0f}, with vmta unknown {unknown:,.0f}"
              + (f" ({unknown / complaints:.1%})" if complaints else ""))
    print(f"  peak dirty + writeback file pages: {dirty:,.0f} MB; samples without an answer within 10 s:"
          f" {len(stalls)}" + (f" (first at {stalls[0][0]:.0f} s: {stalls[0][1]}, last at {stalls[-1][0]:.0f} s)"
                               if stalls else ""))
    if stalls:
        print("  the daemon's log, last lines:\n    " + "\n    ".join(
            (work / "live.log").read_text(errors="replace").splitlines()[-30:]))
    else:
        print("  " + log_problems(work / "live.log"))
    print(f"  CPU while appending{' (since the restart)' if cpu_from > t0 else ''} (cores busy): daemon {busy[0]:.2f}"
          + (f", correlator process {busy[1]:.2f}" if WORKER == "process" and CORRELATOR else "")
          + f", this benchmark (sampling) {(own1 - own0) / elapsed:.2f}, the appender (generating and writing the"
          f" files) {(appender1 - appender0) / elapsed:.2f}; the whole machine"
          f" {(machine1[0] - machine0[0]) / elapsed:.2f} of {(machine1[1] - machine0[1]) / elapsed:.2f}")
    if planned_restart is None:
        print("  per quarter, cores busy (daemon/correlator process/this benchmark/appender/machine), iowait (cores"
              " idle waiting for the disk), major faults of the correlator process: " + usage_summary(marks))
    proc.send_signal(signal.SIGTERM)
    proc.wait(timeout=60)
    if CORRELATOR:
        state = Path(yaml.safe_load(cfg.read_text())["state_dir"])
        print("  store at the end: " + store_shape(state / "watchtower.db"))
    if complaints and unknown / complaints > UNKNOWN_FLAG_SHARE:
        flags.append(f"{unknown / complaints:.1%} of the complaints were counted with vmta `unknown` (more than "
                     f"{UNKNOWN_FLAG_SHARE:.0%}): attribution did not find their deliveries"
                     + (f" (each written {complaint_delay:g} s after its delivery, within the timeline lag: the"
                        " delivery may not be stored yet; real reports come minutes to hours later, see"
                        " --complaint-delay)" if complaint_delay < 5 else ""))
    if grows(quarters):
        flags.append("the timeline lag grows quarter over quarter (" + ", ".join(
            f"Q{q + 1} {statistics.median(lag):.1f}s" for q, lag in enumerate(quarters) if lag)
                     + " median): the correlator does not keep up")
    if lags and p99(lags) > 1.0:
        flags.append(f"metrics lag p99 {p99(lags):.2f}s, above issue #10's 1 s")
    if full_scrapes and (slow := scrape_figure(full_scrapes))[1] > SCRAPE_TARGET:
        flags.append(f"whole-page scrapes under this load: {slow[0]} {slow[1]:.3f} s, above issue #10's "
                     f"{SCRAPE_TARGET:.1f} s for /metrics (measured idle by bench_scrape.py; here the scrapes share "
                     "the cores with the appends)")
    if rises(rss_by_quarter):
        flags.append("the peak RSS (with children) rose every quarter (" + ", ".join(
            f"{r:.0f}" for r in rss_by_quarter) + " MB): memory is not flat over this run")
    if shared[BEHIND_SCHEDULE] > 0.5:
        flags.append(f"the appender fell {shared[BEHIND_SCHEDULE]:.2f}s behind its schedule: the rate offered was "
                     "less than --rate for a while (the machine could not generate and write that fast)")
    if written < total:
        flags.append(f"the appender wrote {written:,} of the {total:,} records scheduled")
    if not caught_up:
        flags.append(f"the daemon did not catch up within {drain_limit:.0f}s of the appends stopping ({drained})")
    for flag in flags:
        print("FLAG: " + flag)


def log_problems(log: Path) -> str:
    """The daemon's warnings and errors during the run: how many, the first and last few (a pause, a failed commit)."""
    lines = [line for line in log.read_text(errors="replace").splitlines() if " WARNING " in line or " ERROR " in line]
    if not lines:
        return "the daemon logged no warning or error"
    shown = lines if len(lines) <= 6 else [*lines[:3], "...", *lines[-3:]]
    return f"the daemon logged {len(lines)} warnings/errors:\n    " + "\n    ".join(shown)


def bytes_in_use(db: Path) -> float:
    """The state DB's bytes in use now, as pruning counts them (0 before the daemon created it)."""
    if not db.exists():
        return 0.0
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        return float(store.used_bytes(conn))
    except sqlite3.Error:
        return 0.0
    finally:
        conn.close()


def store_shape(db: Path) -> str:
    """Timelines and key-index slices of the store: what a probe of linking may have to seek."""
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        timelines = conn.execute("SELECT count(*) FROM corr_timelines").fetchone()[0]
        slices = [v for (v,) in conn.execute("SELECT day FROM corr_days")]
        undated = sum(1 for v in slices if store.day_of_slice(v) == store.NO_DAY)
        have_scopes = conn.execute("SELECT 1 FROM sqlite_master WHERE name = 'corr_scopes'").fetchone()
        scopes = ""
        if have_scopes:
            rows, buckets = conn.execute("SELECT count(*), count(DISTINCT bucket) FROM corr_scopes").fetchone()
            scopes = (f", {rows:,} scope rows ({rows / max(1, buckets):.1f} slices per {store.SCOPE_BUCKET} s bucket"
                      " of timeQueued)")
        used = store.used_bytes(conn) / 1e6
        return f"{timelines:,} timelines, {used:,.0f} MB in use, {len(slices):,} slices ({undated:,} undated){scopes}"
    finally:
        conn.close()


def main() -> int:
    global CORRELATOR, POLL, MAX_PENDING, WORKER, CHECKOUT, GEN_BITS, MAX_DB, FILTER_BITS, FULL_SCRAPE_EVERY
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--lines", type=int, default=600_000)
    ap.add_argument("--rate", type=int, default=20_000)
    ap.add_argument("--seconds", type=float, default=30.0)
    ap.add_argument("--only", choices=["backfill", "live"])
    ap.add_argument("--poll", type=float, default=0.25, help="tail.poll_interval of the daemon (default 0.25 s)")
    ap.add_argument("--max-pending", type=int, default=None, help="tail.max_pending_rows (default: the daemon's)")
    ap.add_argument("--restart-at", type=float, default=None,
                    help="live: stop the daemon (SIGTERM) this many seconds in and start it again, appends going on")
    ap.add_argument("--no-correlator", action="store_true", help="metrics only (the reference for the lag)")
    ap.add_argument("--worker", choices=["thread", "process"], default=DEFAULT_WORKER,
                    help=f"correlator.worker (default: the daemon's, {DEFAULT_WORKER})")
    ap.add_argument("--checkout", type=Path, default=REPO,
                    help="run the daemon of this checkout (a baseline, e.g. a git worktree), with this benchmark")
    ap.add_argument("--gen-bits", type=int, default=None,
                    help="2**N timelines per key-index generation (the daemon's is 16): 12 gives a 300 s run the"
                         " generation count of a store 16x its size")
    ap.add_argument("--filter-bits", type=int, default=None,
                    help="2**N bits in the key filter (the daemon's is 28): with 23 and a 300 MB cap, 150 s add the"
                         " pruned keys that ~1 h at 20k records/s adds to 32 MiB")
    ap.add_argument("--max-db-size", type=int, default=None, help="correlator.max_db_size in bytes (default: the"
                    " daemon's, 20 GiB): a small one makes the run prune under the size cap")
    ap.add_argument("--complaint-delay", type=float, default=0.0,
                    help="write each report (f, rb) this many seconds after its delivery (reports arrive late: their"
                         " delivery must be found deeper in the store); not with --pregenerate")
    ap.add_argument("--pregenerate", action="store_true",
                    help="live: generate the run's records before the daemon starts (held in memory, ~470 bytes each)"
                         " and copy them in while appending (generating them meanwhile takes ~0.35 of a core at 20k"
                         " records/s from the daemon)")
    ap.add_argument("--full-scrape-every", type=float, default=FULL_SCRAPE_EVERY,
                    help="seconds between whole-page /metrics scrapes (default 15, as a Prometheus); the lag samples"
                         " read only the counts they need. 0: every lag sample scrapes the whole page (the harness"
                         " before the sixteenth round)")
    ap.add_argument("--drain-timeout", type=float, default=120.0,
                    help="live: seconds to wait, once the appends stop, for the daemon to count every record written,"
                         " read every byte and store every row before saying it did not (default 120)")
    ap.add_argument("--keep", type=Path, default=None,
                    help="work in this (new) directory and keep it: the store, logs and files, to study afterwards")
    args = ap.parse_args()
    if args.complaint_delay and args.pregenerate:
        ap.error("--complaint-delay holds complaints back while generating: not with --pregenerate")
    FULL_SCRAPE_EVERY = args.full_scrape_every
    FILTER_BITS = args.filter_bits
    MAX_DB = args.max_db_size
    CHECKOUT = args.checkout.resolve()
    GEN_BITS = args.gen_bits
    CORRELATOR = not args.no_correlator
    WORKER = args.worker
    POLL = args.poll
    MAX_PENDING = args.max_pending
    with contextlib.ExitStack() as stack:
        if args.keep is None:
            work = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="wt-bench-daemon-")))
        else:
            work = args.keep.resolve()
            work.mkdir(parents=True, exist_ok=False)
        try:
            if args.only in (None, "backfill"):
                backfill(work, args.lines)
            if args.only in (None, "live"):
                live(work, args.rate, args.seconds, args.restart_at, args.pregenerate, args.complaint_delay,
                     args.drain_timeout)
        finally:  # a run that fails must not leave its daemon running under the next measurement
            for proc in STARTED:
                if proc.poll() is None:
                    proc.send_signal(signal.SIGTERM)
                    proc.wait(timeout=60)
    return 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    raise SystemExit(main())
