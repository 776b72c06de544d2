"""Whole-process benchmark: `watchtower oneshot` and the daemon's timeline backfill against a bare `csv.reader` loop.

What a user sees is the whole process (interpreter start, imports, reading, parsing, classification, aggregation,
the correlator's SQLite writes, the exposition), on varied data. So every path runs as a subprocess over the same
corpus (bench/corpus.py: acct + diag + fbl + bounce files, a long tail of recipient domains and MX hosts, varied
dsnMta IPs, per-message ids in replies, 16 bounce categories, rb records, one invalid byte, one CRLF file),
interleaved, median of `--repeat` runs:

* bare csv.reader (the ceiling, 1.0x);
* `watchtower oneshot`, correlator off (metrics only);
* `watchtower oneshot`, correlator on (attribution only): a correlator-on oneshot stores only the rows an f/rb
  report can reach (exporter/daemon.py ONESHOT_REACHABLE_ONLY) and builds no timelines, so its ratio says how fast
  complaints are attributed, not how fast timelines are built;
* `watchtower run`, correlator on, timeline backfill: the daemon reading the same files from the start until every
  record is counted and stored (what issue #10's "timelines at a quarter of a bare read" is about).

Each row prints wall seconds and their ratio to the ceiling (ceiling / path: 1.0 = as fast as the bare read), CPU
seconds (user+sys of the process and of the children it reaped, from os.wait4's rusage) and their ratio, and the
peak RSS: os.wait4's ru_maxrss for the oneshots (the largest of the process and its reaped children), and for the
daemon the sum of each process's own VmHWM (the daemon and its children: the correlator process, multiprocessing's
resource tracker), read from /proc/PID/status while they run and just before the SIGTERM (an upper bound of their
joint peak: their peaks need not coincide; the footnote adds the largest sum of their VmRSS sampled together, a lower
bound, and the largest sum of their PSS sampled together: both RSS figures count a page the processes share, such as
polars' library, in each of them, PSS once). The wall ratio depends on
a free second core (watchtower uses two threads or processes, the ceiling one): the header prints the core count
and the load, and the CPU ratio is the figure that does not.

Every oneshot's exposition is checked against the corpus's manifest: each record read and counted once per type,
no parse error, no record skipped, exactly one invalid byte repaired. A mismatch stops the run.

    .venv/bin/python bench/bench_e2e.py --dir /tmp/corpus250                # 250k lines, all paths, median of 3
    .venv/bin/python bench/bench_e2e.py --lines 50000 --repeat 1            # quick run
    .venv/bin/python bench/bench_e2e.py --only metrics                      # one path (metrics|correlator|backfill)
    .venv/bin/python bench/bench_e2e.py --only correlator --also base=../base   # and another checkout's oneshot

`--dir` keeps the corpus; it is reused only while its manifest.json names the same generator version and parameters
(--lines, --complaint-rate), else written again.

Targets (issue #10): metrics-only >= 1.0x; correlator on >= 0.25x with peak RSS <= 300 MB.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.parse
from pathlib import Path
from typing import Any, NamedTuple

import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

CORPUS = Path(__file__).with_name("corpus.py")
MANIFEST = "manifest.json"
"""bench/corpus.py's manifest of a corpus directory."""
# This process stays small (~16 MB): a child's ru_maxrss counts the image it was started from (the ceiling's own peak
# is ~15-22 MB), so nothing heavy is imported or held here: not the generator (compiling it is ~3 MB), not
# urllib.request (~7 MB: the daemon is asked over a bare socket), not sqlite3 (the store is counted by a child), not
# the pages (written to a file and checked by a child).

BASELINE = """
import csv, sys
n = 0
for path in sys.argv[1:]:
    with open(path, newline="", encoding="utf-8", errors="replace") as f:
        for _row in csv.reader(f):
            n += 1
print(n)
"""
COUNTED: dict[str, tuple[str, ...]] = {
    "pmta_delivered_total": ("d",), "pmta_bounced_total": ("b",), "pmta_deferred_total": ("t", "tq"),
    "pmta_complaints_total": ("f",), "pmta_remote_bounced_total": ("rb",)}
"""The counters that count each record of the corpus exactly once, with the record types each counts: a record
counted under another family (a bounce as a delivery) must not pass because the total is right."""


def miscounted(counted: dict[str, float], expected: dict[str, int]) -> list[str]:
    """Each of COUNTED's families whose total is not the number of the corpus's records of its types."""
    return [f"{name} totals {counted.get(name, 0):,.0f}, the corpus holds {want:,} records of type "
            f"{'+'.join(types)}" for name, types in COUNTED.items()
            if counted.get(name, 0) != (want := sum(expected.get(t, 0) for t in types))]


def run(cmd: list[str], env: dict[str, str] | None = None, cwd: Path | None = None,
        out_path: Path | None = None) -> tuple[float, float, bytes, float]:
    """(wall seconds, peak RSS in MB, stdout, CPU seconds user+sys) of one child process (and the children it
    reaped: os.wait4's rusage). With `out_path`, stdout goes to that file instead (b"" returned): a page of several
    MB read into this process would count in the peak RSS of the children started after it."""
    t0 = time.perf_counter()
    with open(out_path or os.devnull, "wb") as sink:
        proc = subprocess.Popen(cmd, stdout=sink if out_path else subprocess.PIPE, stderr=subprocess.PIPE, env=env,
                                cwd=cwd)
    assert proc.stderr is not None
    out = proc.stdout.read() if proc.stdout is not None else b""
    err = proc.stderr.read()
    _pid, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t0
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise SystemExit(f"{cmd[:3]} failed ({proc.returncode}): {err.decode(errors='replace')[-2000:]}")
    return wall, usage.ru_maxrss / 1024.0, out, usage.ru_utime + usage.ru_stime


def ensure_corpus(directory: Path, lines: int, *options: str) -> list[str]:
    """The corpus's files in `directory`, written by bench/corpus.py (`options` passed on: `--complaint-rate R`)
    unless a corpus of the same generator version and parameters is there already (its manifest.json says so).

    A corpus written with other parameters, by another generator version, without a manifest, or so long ago that its
    records would fall out of the correlator's retention is removed (its CSV files and the JSON copies bench_json.py
    made of them) and written again (corpus.py --reuse, which says why). Decided and written by a child process: a
    child's peak RSS counts the image it was started from, so importing the generator here (~3 MB of compiling) or
    building the corpus in this process would inflate every RSS measured after it."""
    directory.mkdir(parents=True, exist_ok=True)
    done = subprocess.run([sys.executable, str(CORPUS), str(directory), "--lines", str(lines), *options, "--reuse"],
                          capture_output=True, text=True)
    if done.returncode:
        raise SystemExit(done.stderr.strip().splitlines()[-1] if done.stderr.strip() else "bench/corpus.py failed")
    if done.stdout.strip():
        print(done.stdout.strip(), flush=True)
    return sorted(str(p) for p in directory.glob("*.csv"))


def manifest_of(directory: Path) -> dict[str, Any]:
    """bench/corpus.py's manifest.json of the corpus in `directory`: its parameters, files, record counts."""
    return dict(json.loads((directory / MANIFEST).read_text()))


def sources(directory: Path) -> list[dict[str, object]]:
    """One source per file kind of the corpus, each fed the record types its files hold (from its manifest)."""
    return [{"name": kind, "paths": [str(directory / f"{kind}-*.csv")], "records": list(records)}
            for kind, records in manifest_of(directory)["sources"].items()]


def write_config(directory: Path, correlator: bool) -> Path:
    state = directory / ("state-corr" if correlator else "state")
    state.mkdir(exist_ok=True)
    config = {
        "sources": sources(directory),
        "state_dir": str(state),
        "listen": "127.0.0.1:0",
        "log_level": "warning",
        "correlator": {"enabled": correlator},
    }
    path = directory / ("corr.yml" if correlator else "metrics.yml")
    path.write_text(yaml.safe_dump(config))
    return path


def moved_config(config: Path, directory: Path, name: str, suffix: str | None = None, **overrides: object) -> Path:
    """`config` with each glob's file name in `directory` (`.csv` made `suffix`), its own state directory there and
    `overrides` on top; written as `directory/name`."""
    data = yaml.safe_load(config.read_text())
    for source in data["sources"]:
        source["paths"] = [str(directory / (Path(p).name.replace(".csv", suffix) if suffix else Path(p).name))
                           for p in source["paths"]]
    state = directory / ("state-corr" if data["correlator"]["enabled"] else "state")
    state.mkdir(parents=True, exist_ok=True)
    data["state_dir"] = str(state)
    data.update(overrides)
    path = directory / name
    path.write_text(yaml.safe_dump(data))
    return path


def check_counts(page: Path, manifest: dict[str, object]) -> list[str]:
    """What an exposition gets wrong about the corpus: records read per type against the manifest's, parse errors,
    records skipped, invalid bytes repaired (exactly one), each family of record counters' total (each record counted
    once, in its own family)."""
    expected: dict[str, int] = manifest["records_by_type"]  # type: ignore[assignment]
    read: dict[str, float] = {}
    counted: dict[str, float] = {}
    errors = skipped = repaired = 0.0
    wanted = (b"watchtower_records_", b"watchtower_parse_errors_total", *(name.encode() + b"{" for name in COUNTED))
    with open(page, "rb") as f:
        lines = [raw.decode(errors="replace").rstrip() for raw in f if raw.startswith(wanted)]  # a few hundred
    for line in lines:
        value = float(line.rsplit(" ", 1)[1])
        if line.startswith("watchtower_records_read_total{"):
            kind = re.search(r'type="([^"]*)"', line)
            if kind:
                read[kind[1]] = read.get(kind[1], 0.0) + value
        elif line.startswith("watchtower_records_skipped_total"):
            skipped += value
        elif line.startswith("watchtower_parse_errors_total"):
            errors += value
        elif line.startswith('watchtower_records_repaired_total{reason="invalid_utf8"'):
            repaired += value
        elif (name := line.partition("{")[0]) in COUNTED:
            counted[name] = counted.get(name, 0.0) + value
    problems = [f"{kind} records read {read.get(kind, 0):,.0f}, the corpus holds {n:,}"
                for kind, n in expected.items() if read.get(kind, 0) != n]
    problems += [f"{kind} records read {n:,.0f}, the corpus holds none" for kind, n in read.items()
                 if n and kind not in expected]
    if errors:
        problems.append(f"{errors:,.0f} parse errors (watchtower_parse_errors_total)")
    if skipped:
        problems.append(f"{skipped:,.0f} records skipped (watchtower_records_skipped_total)")
    if repaired != 1:
        problems.append(f"{repaired:,.0f} records repaired for invalid UTF-8, the corpus holds 1")
    return problems + miscounted(counted, expected)


def checked(page: Path, directory: Path) -> list[str]:
    """check_counts() of a page against the corpus in `directory`, done by a child: reading a page of several MB
    grows this process by a MB or two, which every child started after it would count in its peak RSS."""
    done = subprocess.run([sys.executable, __file__, "--check-page", str(page), "--dir", str(directory)],
                          check=True, capture_output=True, text=True)
    return list(json.loads(done.stdout))


# --- the daemon's timeline backfill -----------------------------------------------------------------------------

def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _get(listen: str, target: str, line: object = None) -> bytes:
    """The body of `GET target` from the daemon (HTTP/1.0, identity), or OSError. With `line` (a callable), each
    line of the body goes to it as it arrives and b"" is returned: a /metrics page of a few MB held whole (as bytes,
    text and lines) would grow this process, and the peak RSS of every child started after it, by ~10 MB."""
    host, _, port = listen.rpartition(":")
    body: list[bytes] = []
    with socket.create_connection((host, int(port)), timeout=10) as conn:
        conn.sendall(f"GET {target} HTTP/1.0\r\nHost: {listen}\r\nAccept-Encoding: identity\r\n\r\n".encode())
        rest, head = b"", None
        while chunk := conn.recv(65536):
            rest += chunk
            if head is None:
                if b"\r\n\r\n" not in rest:
                    continue
                head, _, rest = rest.partition(b"\r\n\r\n")
                if not head.startswith((b"HTTP/1.0 200", b"HTTP/1.1 200")):
                    raise OSError(f"GET {target}: {head[:80]!r}")
            if callable(line):
                *complete, rest = rest.split(b"\n")
                for one in complete:
                    line(one)
            else:
                body.append(rest)
                rest = b""
    if head is None:
        raise OSError(f"GET {target}: no answer")
    if callable(line):
        if rest:
            line(rest)
        return b""
    return b"".join(body)


def _counted(listen: str) -> dict[str, float]:
    """Records the daemon has counted, per family of COUNTED (each record of the corpus in exactly one)."""
    query = urllib.parse.urlencode([("name[]", name) for name in COUNTED])
    names = {name.encode(): name for name in COUNTED}
    totals: dict[str, float] = {}

    def add(line: bytes) -> None:
        name = names.get(line.partition(b"{")[0])
        if name is not None:
            totals[name] = totals.get(name, 0.0) + float(line.rsplit(b" ", 1)[1])

    _get(listen, f"/metrics?{query}", add)
    return totals


def _children(pid: int) -> list[int]:
    try:
        return [int(child) for task in Path(f"/proc/{pid}/task").iterdir()
                for child in (task / "children").read_text().split()]
    except OSError:
        return []


class Proc(NamedTuple):
    """One live process of the daemon's tree, as /proc shows it now."""

    name: str
    hwm: float
    """VmHWM in MB."""
    cpu: float
    """CPU seconds so far."""
    rss: float
    """VmRSS in MB now."""
    pss: float
    """Its proportional set size in MB now (/proc/PID/smaps_rollup): a page it shares with the others (the
    interpreter, polars' library, read by both the daemon and the correlator process) counted as its share, so
    a sum over the tree is the physical memory they hold; 0 where the kernel does not say (before Linux 4.14)."""


def _pss(pid: int) -> float:
    """_proc's `pss`."""
    try:
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Pss:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def _proc(pid: int) -> Proc:
    """What a live process is, with its memory and CPU so far."""
    hwm = rss = 0.0
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            hwm = int(line.split()[1]) / 1024
        elif line.startswith("VmRSS:"):
            rss = int(line.split()[1]) / 1024
    cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    name = ("resource tracker" if "resource_tracker" in cmdline else
            "correlator process" if "multiprocessing" in cmdline or "spawn_main" in cmdline else
            "daemon" if " exporter run" in cmdline else cmdline[:40])
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    cpu = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return Proc(name, hwm, cpu, rss, _pss(pid))


def _tree(pid: int) -> dict[int, Proc]:
    """_proc() of the daemon and each of its children alive now (one gone meanwhile left out)."""
    out = {}
    for p in [pid, *_children(pid)]:
        try:
            out[p] = _proc(p)
        except OSError:
            pass
    return out


def daemon_backfill(directory: Path, records: int, env: dict[str, str], cwd: Path,
                    timeout: float) -> dict[str, object]:
    """`watchtower run` (correlator on, the daemon's default worker, start_position beginning) on a fresh state
    directory over the corpus, until every record is counted and stored: the commit backlog (rows held, bytes the
    correlator has to read again) and the bytes behind all 0. Wall time from the start of the process to then (its
    shutdown not included); CPU from os.wait4 after a SIGTERM; peak RSS as the module docstring says."""
    work = Path(tempfile.mkdtemp(prefix="daemon-", dir=directory))
    listen = f"127.0.0.1:{free_port()}"
    cfg = work / "daemon.yml"
    cfg.write_text(yaml.safe_dump({
        "sources": sources(directory), "state_dir": str(work / "state"), "listen": listen, "log_level": "warning",
        "tail": {"start_position": "beginning", "poll_interval": 0.25}, "correlator": {"enabled": True}}))
    log_path = work / "daemon.log"
    with open(log_path, "wb") as log:
        t0 = time.perf_counter()
        proc = subprocess.Popen([sys.executable, "-m", "exporter", "run", "--config", str(cfg)], cwd=cwd, env=env,
                                stdout=log, stderr=subprocess.STDOUT)
    peak = joint = physical = 0.0
    last: dict[int, Proc] = {}
    n = 0.0
    families: dict[str, float] = {}
    try:
        while True:
            if proc.poll() is not None:
                raise SystemExit(f"the daemon exited ({proc.returncode}): " + log_path.read_text()[-2000:])
            if time.perf_counter() - t0 > timeout:
                raise SystemExit(f"the daemon had not stored every record within {timeout:.0f} s: counted {n:,.0f} of "
                                 f"{records:,}; its log: {log_path}")
            try:
                families = _counted(listen)
                n = sum(families.values())
                health = json.loads(_get(listen, "/healthz"))
            except (OSError, ValueError):  # not listening yet, or a slow or partial answer
                time.sleep(0.05)
                continue
            last = _tree(proc.pid)
            peak, joint = max(peak, sum(p.hwm for p in last.values())), max(joint, sum(p.rss for p in last.values()))
            physical = max(physical, sum(p.pss for p in last.values()))
            if (n >= records and health.get("commit_backlog_rows") == 0 and health.get("commit_backlog_bytes") == 0
                    and health.get("bytes_behind") == 0):
                wall = time.perf_counter() - t0
                break
            time.sleep(0.1)
        last = _tree(proc.pid)  # the high-water marks just before the SIGTERM
        peak, joint = max(peak, sum(p.hwm for p in last.values())), max(joint, sum(p.rss for p in last.values()))
        physical = max(physical, sum(p.pss for p in last.values()))
        proc_cpu = sum(p.cpu for p in last.values())
        proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + 120
        while True:
            pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                break
            if time.monotonic() > deadline:
                proc.kill()
                pid, status, usage = os.wait4(proc.pid, 0)
                break
            time.sleep(0.05)
        proc.returncode = os.waitstatus_to_exitcode(status)
    finally:
        if proc.returncode is None:
            proc.kill()
            proc.wait()
    stored = _stored(work / "state" / "watchtower.db")
    result = {"wall": wall, "cpu": usage.ru_utime + usage.ru_stime, "proc_cpu": proc_cpu, "peak": peak, "joint": joint,
              "physical": physical, "processes": sorted(last.values(), key=lambda p: -p.hwm), "counted": n,
              "families": families, "stored": stored, "exit": proc.returncode}
    for p in sorted(work.rglob("*"), reverse=True):  # the store of a 250k backfill is ~200 MB: not kept
        p.rmdir() if p.is_dir() else p.unlink()
    work.rmdir()
    return result


STORED = """
import json, sqlite3, sys
from correlator.store import TYPE_NAMES
conn = sqlite3.connect(f"file:{sys.argv[1]}?mode=ro", uri=True)
rows = conn.execute("SELECT type, count(*) FROM corr_events GROUP BY type")
types = {TYPE_NAMES.get(code, str(code)): n for code, n in rows}
types["tq"] = types.get("tq", 0) + conn.execute("SELECT count(*) FROM corr_queue_events").fetchone()[0]
print(json.dumps(types))
"""


def _stored(db: Path) -> dict[str, int]:
    """Records the correlator's store holds per record type (its events by type, its queue events as tq), counted by
    a child (sqlite3 and the store's module are ~1 MB here)."""
    return dict(json.loads(subprocess.run([sys.executable, "-c", STORED, str(db)], check=True, capture_output=True,
                                          text=True).stdout))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--lines", type=int, default=250_000, help="corpus size in lines (default 250k)")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--only", choices=["metrics", "correlator", "backfill"], default=None,
                    help="one path: metrics (oneshot, correlator off), correlator (oneshot, correlator on, and the "
                         "daemon's backfill), backfill (the daemon's backfill alone)")
    ap.add_argument("--no-daemon-backfill", action="store_true",
                    help="leave out the daemon's timeline backfill (the longest row: ~15 s a run at 250k lines)")
    ap.add_argument("--backfill-timeout", type=float, default=600.0,
                    help="seconds the daemon may take to store every record before the run fails (default 600)")
    ap.add_argument("--dir", type=Path, default=None, help="reuse/keep the corpus here")
    ap.add_argument("--complaint-rate", type=float, default=0.004,
                    help="complaints as a share of all deliveries in a new corpus; only providers with a feedback "
                         "loop (~35%% of the mail) send them, so from ~0.35 on every delivery to them draws one "
                         "(a correlator-on oneshot then stores every row of those)")
    ap.add_argument("--installed", action="store_true",
                    help="run watchtower from cached bytecode, as an installed package does (pip compiles it at "
                         "install); by default it inherits the environment, and PYTHONDONTWRITEBYTECODE=1 "
                         "makes every run compile the checkout's modules again (~60 ms)")
    ap.add_argument("--also", action="append", default=[], metavar="NAME=CHECKOUT",
                    help="also run another checkout's oneshot (e.g. base=../base) on the same paths, interleaved")
    ap.add_argument("--check-page", type=Path, help=argparse.SUPPRESS)  # checked(): a child's part
    args = ap.parse_args()
    if args.check_page:
        manifest = manifest_of(args.dir)
        print(json.dumps(check_counts(args.check_page, manifest)))
        return 0
    with tempfile.TemporaryDirectory(prefix="wt-bench-") as tmp:
        directory = args.dir or Path(tmp)
        files = ensure_corpus(directory, args.lines, "--complaint-rate", str(args.complaint_rate))
        manifest = manifest_of(directory)
        records = sum(manifest["records_by_type"].values())
        size = sum(Path(p).stat().st_size for p in files)
        watchtower = [sys.executable, "-m", "exporter", "oneshot", "--config"]
        paths = {"metrics": False, "correlator": True}
        if args.only in ("metrics", "correlator"):
            paths = {args.only: paths[args.only]}
        elif args.only == "backfill":
            paths = {}
        backfill = args.only in (None, "correlator", "backfill") and not args.no_daemon_backfill
        configs = {name: write_config(directory, corr) for name, corr in paths.items()}
        roots = {name: ROOT for name in paths}
        labels = {name: "oneshot, correlator " + ("on (attribution only)" if corr else "off")
                  for name, corr in paths.items()}
        for item in args.also:
            other, _, checkout = item.partition("=")
            for name in paths:
                key = f"{name} ({other})"
                configs[key] = configs[name]
                roots[key] = Path(checkout).resolve()
                labels[key] = f"{labels[name]} ({other})"
        base: list[tuple[float, float, float]] = []
        ours: dict[str, list[tuple[float, float, float]]] = {name: [] for name in configs}
        daemon: list[dict[str, object]] = []
        extra_env: dict[str, str] = {}
        if args.installed:  # bytecode in a cache of this run (never written into a checkout), compiled once
            extra_env = {"PYTHONPYCACHEPREFIX": str(Path(tmp) / "pycache"), "PYTHONDONTWRITEBYTECODE": ""}
            for name in configs:
                env = dict(os.environ, PYTHONPATH=str(roots[name]), **extra_env)
                run([*watchtower, str(configs[name])], env=env, cwd=roots[name], out_path=Path(tmp) / "page.txt")
        cores, usable = os.cpu_count(), len(os.sched_getaffinity(0))
        load0 = os.getloadavg()[0]
        warnings = []
        for _ in range(args.repeat):  # interleaved so machine drift hits every path alike
            wall, rss, _out, cpu = run([sys.executable, "-c", BASELINE, *files])
            base.append((wall, rss, cpu))
            for name in configs:
                env = dict(os.environ, PYTHONPATH=str(roots[name]), **extra_env)
                # cwd too: `python -m` puts the working directory first on sys.path
                page = Path(tmp) / "page.txt"
                wall, rss, _out, cpu = run([*watchtower, str(configs[name])], env=env, cwd=roots[name], out_path=page)
                ours[name].append((wall, rss, cpu))
                problems = checked(page, directory)
                if problems and roots[name] == ROOT:
                    raise SystemExit(f"{labels[name]} miscounted the corpus: " + "; ".join(problems))
                if problems:
                    warnings.append(f"{labels[name]} miscounted the corpus: " + "; ".join(problems))
            if backfill:
                env = dict(os.environ, PYTHONPATH=str(ROOT), **extra_env)
                daemon.append(daemon_backfill(directory, records, env, ROOT, args.backfill_timeout))
        load1 = os.getloadavg()[0]
        types = manifest["records_by_type"]
        print(f"corpus: {records:,} records ({', '.join(f'{k} {v:,}' for k, v in types.items())}) in {len(files)} "
              f"files, {size / 1e6:.1f} MB; {manifest['recipient_domains']:,} recipient domains, "
              f"{manifest['mx_hosts']:,} MX hosts, {len(manifest['bounce_categories'])} bounce categories, "
              f"{manifest['vmtas']} VMTAs (generator v{manifest['generator_version']})")
        print(f"machine: {cores} cores, {usable} usable by this process (sched_getaffinity); load {load0:.2f} at the "
              f"start, {load1:.2f} at the end; median of {args.repeat} runs; this process's peak RSS "
              f"{resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MB (a child's ru_maxrss counts it)"
              + ("; bytecode cached (--installed)" if args.installed else ""))
        if configs:
            print("every oneshot counted each record once: no parse error, none skipped, 1 invalid byte repaired "
                  "(checked on every run)")
        for warning in warnings:
            print("WARNING: " + warning)
        print(f"{'path':<52} {'seconds':>8} {'ratio':>6} {'CPU s':>7} {'CPU ratio':>9} {'peak RSS':>10}")
        b = statistics.median(w for w, _, _ in base)
        bc = statistics.median(c for _, _, c in base)
        print(f"{'bare csv.reader (ceiling)':<52} {b:8.2f} {1.0:6.2f} {bc:7.2f} {1.0:9.2f} "
              f"{max(r for _, r, _ in base):7.0f} MB")
        for name, runs in ours.items():
            w = statistics.median(x for x, _, _ in runs)
            c = statistics.median(x for _, _, x in runs)
            rss = max(r for _, r, _ in runs)
            print(f"{labels[name]:<52} {w:8.2f} {b / w:6.2f} {c:7.2f} {bc / c:9.2f} {rss:7.0f} MB")
        if daemon:
            w = statistics.median(float(d["wall"]) for d in daemon)  # type: ignore[arg-type]
            c = statistics.median(float(d["cpu"]) for d in daemon)  # type: ignore[arg-type]
            peak = max(float(d["peak"]) for d in daemon)  # type: ignore[arg-type]
            print(f"{'run, correlator on: timeline backfill':<52} {w:8.2f} {b / w:6.2f} {c:7.2f} {bc / c:9.2f} "
                  f"{peak:7.0f} MB *")
        print("seconds: wall time of the whole process, median; ratio: ceiling seconds / seconds. CPU s: user+sys of "
              "the process and the children it reaped (os.wait4), median; CPU ratio: ceiling CPU / CPU.")
        if "correlator" in paths:
            print("oneshot, correlator on (attribution only): stores only the rows an f/rb report can reach "
                  "(ONESHOT_REACHABLE_ONLY) and builds no timelines; the backfill row is the timeline figure.")
        if daemon:
            top = max(daemon, key=lambda d: float(d["peak"]))  # type: ignore[arg-type]
            parts = " + ".join(f"{p.name} {p.hwm:.0f}" for p in top["processes"])  # type: ignore[attr-defined]
            joint = max(float(d["joint"]) for d in daemon)  # type: ignore[arg-type]
            physical = max(float(d["physical"]) for d in daemon)  # type: ignore[arg-type]
            print(f"* watchtower run from the start of the files until every record was counted and stored (commit "
                  f"backlog 0, bytes behind 0; shutdown not timed); peak RSS = the sum of each process's own VmHWM "
                  f"(/proc/PID/status, read while it ran and just before SIGTERM; an upper bound of their joint "
                  f"peak): {parts} MB; the largest sum of their VmRSS sampled together (every ~0.1 s: a lower bound "
                  f"of the joint peak): {joint:.0f} MB; " + (
                      f"the largest sum of their PSS sampled together (a page they share, such as polars' library, "
                      f"split among the processes that map it, others on the machine too: a lower bound of what "
                      f"they held together, without counting a shared page twice): {physical:.0f} MB" if physical
                      else "their PSS: not available (/proc/PID/smaps_rollup, Linux 4.14 and later)"))
            expected: dict[str, int] = manifest["records_by_type"]  # type: ignore[assignment]
            for i, d in enumerate(daemon, 1):
                note = (f"; /proc counted {float(d['proc_cpu']):.2f} s of CPU before the SIGTERM, more than wait4's "
                        "(a child the daemon did not reap)" if float(d["proc_cpu"]) > float(d["cpu"]) + 0.1 else "")
                stored: dict[str, int] = d["stored"]  # type: ignore[assignment]
                wrong = miscounted(d["families"], expected) + [  # type: ignore[arg-type]
                    f"stored {stored.get(t, 0):,} records of type {t}, the corpus holds {expected.get(t, 0):,}"
                    for t in sorted(set(stored) | set(expected)) if stored.get(t, 0) != expected.get(t, 0)]
                exact = "exact, per type" if not wrong else "NOT EXACT: " + "; ".join(wrong)
                print(f"  backfill run {i}: {float(d['wall']):.2f} s, CPU {float(d['cpu']):.2f} s, peak "
                      f"{float(d['peak']):.0f} MB (sampled together {float(d['joint']):.0f} MB, PSS "
                      f"{float(d['physical']):.0f} MB); counted "
                      f"{float(d['counted']):,.0f} and stored {sum(stored.values()):,} of "
                      f"{records:,} records ({exact}); exit status {d['exit']}{note}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
