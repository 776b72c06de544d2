"""Metrics-only ingest rate against Python's bare csv.reader on the same files, measured in one run.

The target (issue: exporter core) is a ratio of at least 0.5: Watchtower's full metrics path
(chunked read, parse by header, validation, classification, aggregation) must run at half the
speed of a loop that does nothing but `csv.reader` over the same bytes. Ratios, not absolute
rates, are reported because these machines are noisy. Run: `python bench/bench_ingest.py`.
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import io
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

from prometheus_client import CollectorRegistry

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from exporter.classify import load_classifiers  # noqa: E402
from exporter.config import config_from_dict  # noqa: E402
from exporter.daemon import Pipeline  # noqa: E402
from exporter.tailer import Tailer  # noqa: E402

HEADER = (
    "type,timeLogged,timeQueued,orig,rcpt,orcpt,dsnAction,dsnStatus,dsnDiag,dsnMta,bounceCat,srcType,srcMta,"
    "dlvType,dlvSourceIp,dlvDestinationIp,dlvEsmtpAvailable,dlvSize,vmta,jobId,envId,queue,vmtaPool"
)
DOMAINS = [("gmail.com", "gmail-smtp-in.l.google.com"), ("yahoo.com", "mta6.am0.yahoodns.net"),
           ("hotmail.com", "hotmail-com.olc.protection.outlook.com"), ("icloud.com", "mx01.mail.icloud.com"),
           ("comcast.net", "mx1.comcast.net"), ("corp.example", "corp-example.mail.protection.outlook.com")]
DEFERRALS = [
    ("4.7.28 (delivery not authorized)", "smtp;421-4.7.28 [10.1.1.1 15] Our system has detected an unusual rate "
     "of unsolicited mail originating from your IP address. To protect our users from spam, mail sent from your "
     "IP address has been temporarily rate limited. {gid} - gsmtp"),
    ("4.2.2 (mailbox full)", "smtp;452-4.2.2 The email account that you tried to reach is over quota. "
     "{gid} - gsmtp"),
    ("4.7.0 (delivery not authorized)", "smtp;421 4.7.0 [TSS04] Messages from 10.1.1.1 temporarily deferred due "
     "to unexpected volume or user complaints - 4.16.55.1; see https://postmaster.yahooinc.com/error-codes"),
]


def gmail_id(n: int) -> str:
    """The per-message id Gmail appends to every reply (`s142si14934335lfe.256`)."""
    return f"{'abcdefghijklmnopqrstuvwxyz'[n % 26]}{n % 997}si{(n * 7919) % 99999999}lfe.{n % 300}"


def make_corpus(directory: Path, records: int, seed: int = 7) -> int:
    """A realistic record mix (d 88%, t 9%, b 3%) over 200 VMTAs in 10 pools, split in 4 files."""
    rng = random.Random(seed)
    per_file = records // 4
    for f in range(4):
        lines = [HEADER]
        for i in range(per_file):
            n = f * per_file + i
            dom, mx = rng.choice(DOMAINS)
            v = rng.randrange(200)
            vmta, pool = f"vmta-{v:03d}", f"pool-{v % 10}"
            r = rng.random()
            ts = f"2026-11-25 12:{(n // 1000) % 60:02d}:{n % 60:02d}+0000"
            tq = f"2026-11-25 11:{(n // 7) % 60:02d}:{n % 60:02d}+0000"
            if r < 0.88:
                lines.append(f"d,{ts},{tq},news@sender{n % 5}.example,u{n}@{dom},,relayed,2.0.0 (success),"
                             f"smtp;250 2.0.0 OK {n} - gsmtp,{mx} (1.2.3.4),success,smtp,app (10.0.0.1),smtp,"
                             f"10.1.1.{v % 250},1.2.3.4,\"PIPELINING,8BITMIME,SIZE,STARTTLS\",{1000 + n % 5000},"
                             f"{vmta},job{n % 40},,{dom}/{vmta},{pool}")
            elif r < 0.97:
                st, diag = rng.choice(DEFERRALS)
                text = diag.format(gid=gmail_id(n))
                lines.append(f"t,{ts},{tq},news@sender{n % 5}.example,u{n}@{dom},,delayed,{st},\"{text}\","
                             f"{mx} (1.2.3.4),,smtp,app (10.0.0.1),smtp,10.1.1.{v % 250},"
                             f"1.2.3.4,,,{vmta},job{n % 40},,{dom}/{vmta},{pool}")
            else:
                lines.append(f"b,{ts},{tq},news@sender{n % 5}.example,u{n}@{dom},,failed,"
                             "5.1.1 (bad destination mailbox address),\"smtp;550 5.1.1 The email account that you "
                             f"tried to reach does not exist. {gmail_id(n)} - gsmtp\",{mx} (1.2.3.4),bad-mailbox,smtp,"
                             f"app (10.0.0.1),smtp,10.1.1.{v % 250},1.2.3.4,,,{vmta},job{n % 40},,{dom}/{vmta},"
                             f"{pool}")
        (directory / f"acct-2026-11-25-{f:04d}.csv").write_text("\n".join(lines) + "\n")
    return per_file * 4


def bare_csv(directory: Path) -> int:
    """Baseline: the cheapest honest read of the same files, one csv.reader per file."""
    n = 0
    for path in sorted(directory.glob("acct-*.csv")):
        with open(path, newline="", encoding="utf-8") as f:
            for _row in csv.reader(f):
                n += 1
    return n


def watchtower_path(directory: Path) -> float:
    """The daemon's metrics-only path: tailer chunks -> parser -> classification -> aggregation."""
    config = config_from_dict({"sources": [{"name": "acct", "paths": [str(directory / "acct-*.csv")]}],
                               "state_dir": str(directory / "state"), "listen": "127.0.0.1:0",
                               "correlator": {"enabled": False}})
    registry = CollectorRegistry()
    isp, replies = load_classifiers(config)
    pipeline = Pipeline(config, registry, None, isp, replies)
    tailer = Tailer(config.sources, config.tail, pipeline.self_metrics, first_run=True, oneshot=True)

    async def run() -> None:
        more = await tailer.poll(pipeline.on_batch, force_scan=True)
        while more:
            more = await tailer.poll(pipeline.on_batch)
        await tailer.close()

    asyncio.run(run())
    return registry.get_sample_value("watchtower_records_read_total", {"source": "acct", "type": "d"}) or 0.0


def poll_cost(directory: Path, lines: int, batches: int = 60) -> tuple[float, float]:
    """(parse ms, fold ms) per batch of `lines` records, as the daemon's polls hand them over (inline,
    every column): the fixed per-batch cost that dominates a live tail."""
    from exporter.parser import FileParser

    config = config_from_dict({"sources": [{"name": "acct", "paths": [str(directory / "acct-*.csv")]}],
                               "state_dir": str(directory / "state"), "listen": "127.0.0.1:0",
                               "correlator": {"enabled": False}})
    isp, replies = load_classifiers(config)
    pipeline = Pipeline(config, CollectorRegistry(), None, isp, replies)
    path = sorted(directory.glob("acct-*.csv"))[0]
    with open(path, "rb") as f:
        data = f.read().splitlines(keepends=True)[1 : 1 + lines * batches]  # after the header line
    parser = FileParser("acct", str(path), None)
    parser.parse(HEADER.encode() + b"\n")
    chunks = [b"".join(data[i : i + lines]) for i in range(0, len(data), lines)]
    parse_t, fold_t = [], []
    for chunk in chunks:
        t0 = time.perf_counter()
        batch, _n = parser.parse(chunk)
        t1 = time.perf_counter()
        if batch is not None:
            pipeline.aggregator.apply(batch)
        parse_t.append(t1 - t0)
        fold_t.append(time.perf_counter() - t1)
    skip = len(chunks) // 4  # warm-up: first label admissions, classifier caches
    return statistics.median(parse_t[skip:]) * 1000, statistics.median(fold_t[skip:]) * 1000


def timed(fn, *args) -> float:  # type: ignore[no-untyped-def]
    t0 = time.perf_counter()
    fn(*args)
    return time.perf_counter() - t0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--records", type=int, default=400_000)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--poll-lines", type=int, nargs="*", default=[100, 1000],
                    help="also report the per-batch cost of batches this size (the daemon's polls)")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        directory = Path(tmp)
        n = make_corpus(directory, args.records)
        size = sum(p.stat().st_size for p in directory.glob("acct-*.csv"))
        base, ours = [], []
        for _ in range(args.repeat):  # interleaved so drift hits both equally
            base.append(timed(bare_csv, directory))
            ours.append(timed(watchtower_path, directory))
        b, o = statistics.median(base), statistics.median(ours)
        out = io.StringIO()
        out.write(f"corpus: {n:,} records, {size / 1e6:.1f} MB in 4 files\n")
        out.write(f"bare csv.reader:        {n / b:12,.0f} records/s (median of {args.repeat})\n")
        out.write(f"watchtower metrics path:{n / o:12,.0f} records/s (median of {args.repeat})\n")
        out.write(f"ratio (watchtower / csv.reader): {b / o:.2f}   target >= 0.50\n")
        for lines in args.poll_lines:
            costs = [poll_cost(directory, lines) for _ in range(args.repeat)]
            p = statistics.median(c[0] for c in costs)
            f = statistics.median(c[1] for c in costs)
            out.write(f"per poll of {lines:>5} lines: parse {p:6.2f} ms, fold {f:6.2f} ms (median)\n")
        print(out.getvalue(), end="")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
