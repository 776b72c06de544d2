"""Whole-process benchmark: `watchtower oneshot` against a bare `csv.reader` loop, both as processes.

What a user sees is the whole process (interpreter start, imports, reading, parsing,
classification, aggregation, the correlator's SQLite writes, the exposition), on varied data.
So both paths run as subprocesses over the same corpus (bench/corpus.py: acct + diag + fbl,
varied dsnMta IPs, Gmail-style ids, one invalid byte, one CRLF file), interleaved, median of
`--repeat` runs; the ratio is baseline time / watchtower time (1.0 = as fast as the bare read)
and peak RSS comes from each child's own rusage (os.wait4).

    .venv/bin/python bench/bench_e2e.py                  # 250k lines (~108 MB), both paths
    .venv/bin/python bench/bench_e2e.py --lines 50000    # quick run
    .venv/bin/python bench/bench_e2e.py --only metrics   # one path
    .venv/bin/python bench/bench_e2e.py --only correlator --also base=../base   # and another checkout's

Targets (issue #10): metrics-only >= 1.0x; correlator on >= 0.25x with peak RSS <= 300 MB.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


BASELINE = """
import csv, sys
n = 0
for path in sys.argv[1:]:
    with open(path, newline="", encoding="utf-8", errors="replace") as f:
        for _row in csv.reader(f):
            n += 1
print(n)
"""


def run(cmd: list[str], env: dict[str, str] | None = None,
        cwd: Path | None = None) -> tuple[float, float, bytes, float]:
    """(wall seconds, peak RSS in MB, stdout, CPU seconds user+sys) of one child process."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, cwd=cwd)
    assert proc.stdout is not None and proc.stderr is not None
    out = proc.stdout.read()
    err = proc.stderr.read()
    _pid, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t0
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise SystemExit(f"{cmd[:3]} failed ({proc.returncode}): {err.decode(errors='replace')[-2000:]}")
    return wall, usage.ru_maxrss / 1024.0, out, usage.ru_utime + usage.ru_stime


def ensure_corpus(directory: Path, lines: int, *options: str) -> list[str]:
    """The corpus's files in `directory`, written by bench/corpus.py (`options` passed on) unless already there.

    Written by a child process: a child's peak RSS counts the parent image it was forked from, so building the
    corpus in the benchmark's own process would inflate every RSS measured after it by its size."""
    if not list(directory.glob("acct-*.csv")):
        subprocess.run([sys.executable, str(Path(__file__).with_name("corpus.py")), str(directory),
                        "--lines", str(lines), *options], check=True, stdout=subprocess.DEVNULL)
    return sorted(str(p) for p in directory.glob("*.csv"))


def write_config(directory: Path, correlator: bool) -> Path:
    state = directory / ("state-corr" if correlator else "state")
    state.mkdir(exist_ok=True)
    config = {
        "sources": [
            {"name": "acct", "paths": [str(directory / "acct-*.csv")], "records": ["d", "b"]},
            {"name": "diag", "paths": [str(directory / "diag-*.csv")], "records": ["t", "tq"]},
            {"name": "fbl", "paths": [str(directory / "fbl-*.csv")], "records": ["f"]},
        ],
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


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--lines", type=int, default=250_000, help="corpus size in lines (default 250k)")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--only", choices=["metrics", "correlator"], default=None)
    ap.add_argument("--dir", type=Path, default=None, help="reuse/keep the corpus here")
    ap.add_argument("--complaint-rate", type=float, default=0.004,
                    help="share of deliveries with a complaint in a new corpus (1.0: a report can reach every "
                         "delivery, so a oneshot stores every row)")
    ap.add_argument("--installed", action="store_true",
                    help="run watchtower from cached bytecode, as an installed package does (pip compiles it at "
                         "install); by default it inherits the environment, and PYTHONDONTWRITEBYTECODE=1 "
                         "makes every run compile the checkout's modules again (~60 ms)")
    ap.add_argument("--also", action="append", default=[], metavar="NAME=CHECKOUT",
                    help="also run another checkout's oneshot (e.g. base=../base) on the same paths, interleaved")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="wt-bench-") as tmp:
        directory = args.dir or Path(tmp)
        files = ensure_corpus(directory, args.lines, "--complaint-rate", str(args.complaint_rate))
        size = sum(Path(p).stat().st_size for p in files)
        watchtower = [sys.executable, "-m", "exporter", "oneshot", "--config"]
        paths = {"metrics": False, "correlator": True}
        if args.only:
            paths = {args.only: paths[args.only]}
        configs = {name: write_config(directory, corr) for name, corr in paths.items()}
        roots = {name: ROOT for name in paths}
        labels = {name: "watchtower oneshot, " + ("correlator on" if corr else "correlator off")
                  for name, corr in paths.items()}
        for item in args.also:
            other, _, checkout = item.partition("=")
            for name in paths:
                key = f"{name} ({other})"
                configs[key] = configs[name]
                roots[key] = Path(checkout).resolve()
                labels[key] = f"{labels[name].removeprefix('watchtower ')} ({other})"
        base: list[tuple[float, float, float]] = []
        ours: dict[str, list[tuple[float, float, float]]] = {name: [] for name in configs}
        extra_env: dict[str, str] = {}
        if args.installed:  # bytecode in a cache of this run (never written into a checkout), compiled once
            extra_env = {"PYTHONPYCACHEPREFIX": str(Path(tmp) / "pycache"), "PYTHONDONTWRITEBYTECODE": ""}
            for name in configs:
                env = dict(os.environ, PYTHONPATH=str(roots[name]), **extra_env)
                run([*watchtower, str(configs[name])], env=env, cwd=roots[name])
        for _ in range(args.repeat):  # interleaved so machine drift hits every path alike
            wall, rss, out, cpu = run([sys.executable, "-c", BASELINE, *files])
            base.append((wall, rss, cpu))
            rows = int(out)
            for name in configs:
                env = dict(os.environ, PYTHONPATH=str(roots[name]), **extra_env)
                # cwd too: `python -m` puts the working directory first on sys.path
                wall, rss, _out, cpu = run([*watchtower, str(configs[name])], env=env, cwd=roots[name])
                ours[name].append((wall, rss, cpu))
        b = statistics.median(w for w, _, _ in base)
        load = os.getloadavg()[0]
        print(f"corpus: {rows:,} rows in {len(files)} files, {size / 1e6:.1f} MB; median of {args.repeat} runs;"
              f" load {load:.2f}" + ("; bytecode cached (--installed)" if args.installed else ""))
        print(f"{'path':<40} {'seconds':>8} {'ratio':>7} {'peak RSS':>10} {'CPU s':>7} {'CPU ratio':>9}")
        bc = statistics.median(c for _, _, c in base)
        print(f"{'bare csv.reader (ceiling)':<40} {b:8.2f} {1.0:7.2f} {max(r for _, r, _ in base):8.0f} MB"
              f" {bc:7.2f} {1.0:9.2f}")
        for name, runs in ours.items():
            w = statistics.median(x for x, _, _ in runs)
            c = statistics.median(x for _, _, x in runs)
            rss = max(r for _, r, _ in runs)
            print(f"{labels[name]:<40} {w:8.2f} {b / w:7.2f} {rss:8.0f} MB {c:7.2f} {bc / c:9.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
