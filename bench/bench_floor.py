"""Where a metrics-only `watchtower oneshot` cannot go below: its fixed start-up and a bare polars read.

bench_e2e.py compares the whole oneshot with a bare `csv.reader` loop (the ceiling, 1.0x). This
benchmark splits the oneshot's time into what every run pays before it reads a byte (interpreter,
the config stack, polars, the exposition of an empty run) and what the data costs, and puts both
next to the least a polars-based reader could spend on the same files: one projected `read_csv` per
file and one group-by, without validation, classification or labels. All are child processes on the
same corpus (bench/corpus.py), interleaved, median of `--repeat` runs.

    .venv/bin/python bench/bench_floor.py --dir /tmp/corpus250 --repeat 5

It prints the time budget the data has at 1.0x (ceiling minus the empty run), what the data costs
today (full run minus empty run) and what the bare polars read costs (its run minus `import polars`).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_e2e import BASELINE, ROOT, ensure_corpus, moved_config, run, write_config  # noqa: E402

BARE_POLARS = """
import sys
import polars as pl
fields = set(sys.argv[1].split(","))
n = 0
for path in sys.argv[2:]:
    with open(path, encoding="utf-8", errors="replace") as f:
        header = f.readline().strip().split(",")
    keep = [c for c in header if c in fields]
    frame = pl.read_csv(path, columns=keep, schema={c: pl.String for c in header}, encoding="utf8-lossy")
    frame.group_by([c for c in ("type", "vmta", "dsnStatus") if c in keep]).len()
    n += frame.height
print(n)
"""


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--lines", type=int, default=250_000, help="corpus size in lines (default 250k)")
    ap.add_argument("--dir", type=Path, default=None, help="reuse/keep the corpus here")
    ap.add_argument("--repeat", type=int, default=5)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="wt-floor-") as tmp:
        directory = args.dir or Path(tmp)
        files = ensure_corpus(directory, args.lines)
        config = write_config(directory, correlator=False)
        # bytecode compiled once into a cache of this run, as an installed package has it
        env = dict(os.environ, PYTHONPATH=str(ROOT), PYTHONPYCACHEPREFIX=str(Path(tmp) / "pycache"),
                   PYTHONDONTWRITEBYTECODE="")
        oneshot = [sys.executable, "-m", "exporter", "oneshot", "--config"]
        # asked of a child: importing polars here would count in every child's peak RSS (forked image)
        fields = subprocess.run([sys.executable, "-c", "from exporter.aggregate import FIELDS; print(*sorted(FIELDS), "
                                 "sep=',')"], env=env, cwd=ROOT, check=True, capture_output=True, text=True).stdout
        paths: dict[str, list[str]] = {
            "ceiling": [sys.executable, "-c", BASELINE, *files],
            "interpreter": [sys.executable, "-c", "pass"],
            "polars": [sys.executable, "-c", "import polars"],
            "config": [sys.executable, "-c", f"from exporter.config import load_config; load_config({str(config)!r})"],
            "empty": [*oneshot, str(moved_config(config, directory / "empty-sources", "metrics-empty.yml",
                                                 log_level="error"))],  # its "no file matches" warnings are expected
            "bare": [sys.executable, "-c", BARE_POLARS, fields.strip(), *files],
            "full": [*oneshot, str(config)],
        }
        labels = {
            "ceiling": "bare csv.reader (ceiling)",
            "interpreter": "python -c pass",
            "polars": "python -c 'import polars'",
            "config": "the config stack, file loaded",
            "empty": "watchtower oneshot, no files",
            "bare": "bare polars read + 1 group-by",
            "full": "watchtower oneshot, correlator off",
        }
        for cmd in paths.values():  # warm the page cache and the bytecode cache
            run(cmd, env=env, cwd=ROOT)
        times: dict[str, list[float]] = {name: [] for name in paths}
        rss: dict[str, float] = dict.fromkeys(paths, 0.0)
        for _ in range(args.repeat):
            for name, cmd in paths.items():
                wall, peak, _out, _cpu = run(cmd, env=env, cwd=ROOT)
                times[name].append(wall)
                rss[name] = max(rss[name], peak)
        med = {name: statistics.median(t) for name, t in times.items()}
        ceiling = med["ceiling"]
        size = sum(Path(p).stat().st_size for p in files) / 1e6
        print(f"corpus: {len(files)} files, {size:.1f} MB; median of {args.repeat} runs; load {os.getloadavg()[0]:.2f}")
        print(f"{'process':<36} {'seconds':>8} {'of ceiling':>11} {'peak RSS':>10}")
        for name, label in labels.items():
            print(f"{label:<36} {med[name]:8.3f} {med[name] / ceiling:10.0%} {rss[name]:8.0f} MB")
        budget = ceiling - med["empty"]
        data = med["full"] - med["empty"]
        bare = med["bare"] - med["polars"]
        print(f"data budget at 1.0x (ceiling - empty run):        {budget:6.3f} s")
        if budget > 0:
            print(f"data today (full run - empty run):                {data:6.3f} s = {data / budget:.2f}x the budget")
            print(f"bare polars data (its run - import polars):       {bare:6.3f} s = {bare / budget:.2f}x the budget")
        else:  # a small corpus: the ceiling reads it faster than a oneshot starts
            print(f"data today (full run - empty run):                {data:6.3f} s; no budget: the start-up alone "
                  "is slower than the ceiling")
            print(f"bare polars data (its run - import polars):       {bare:6.3f} s")
        print(f"best ratio if the data cost only the bare read:   {ceiling / (med['empty'] + bare):6.2f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
