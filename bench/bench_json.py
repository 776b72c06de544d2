"""PMTA's JSON accounting form against the CSV form of the same records, whole process.

The bench corpus (bench/corpus.py: acct + diag + fbl, varied dsnMta IPs, Gmail-style ids, one invalid byte,
one CRLF file) is written again as JSON, one object per record and line with the header's field names, as PMTA's
JSON `<acct-file>` writes it (pmta-formats.md §4). Then `watchtower oneshot` runs over each form, metrics only
and with the correlator, interleaved, median of `--repeat` runs, next to the bare `csv.reader` loop of
bench_e2e.py (the ceiling, 1.0x) and a bare `json.loads` loop over the JSON files. The JSON form is parsed in
Python (exporter/jsonrecords.py); the CSV form through polars.

    .venv/bin/python bench/bench_json.py --dir /tmp/corpus250 --repeat 3
"""

from __future__ import annotations

import argparse
import csv
import json
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_e2e import BASELINE, ensure_corpus, moved_config, run, write_config  # noqa: E402

BARE_JSON = """
import json, sys
n = 0
for path in sys.argv[1:]:
    with open(path, encoding="utf-8", errors="replace") as f:
        for line in f:
            json.loads(line)
            n += 1
print(n)
"""


def as_json(files: list[str], out: Path) -> list[str]:
    """Each CSV file of the corpus as a JSON file of the same records (rows the header does not fit are kept as
    their fields under the header's names, as far as they go)."""
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for name in files:
        target = out / (Path(name).stem + ".json")
        if not target.exists():
            with open(name, newline="", encoding="utf-8", errors="surrogateescape") as f, \
                    open(target, "w", encoding="utf-8", errors="surrogateescape") as w:
                reader = csv.reader(f)
                header = next(reader)
                for row in reader:
                    w.write(json.dumps(dict(zip(header, row, strict=False)), ensure_ascii=False) + "\n")
        written.append(str(target))
    return written


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--lines", type=int, default=250_000, help="corpus size in lines (default 250k)")
    ap.add_argument("--dir", type=Path, default=None, help="reuse/keep the corpus here (JSON files in DIR/json)")
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    directory = args.dir or Path(tempfile.mkdtemp(prefix="wt-json-"))
    directory.mkdir(parents=True, exist_ok=True)
    files = ensure_corpus(directory, args.lines)
    json_files = as_json(files, directory / "json")
    oneshot = [sys.executable, "-m", "exporter", "oneshot", "--config"]
    cases: dict[str, list[str]] = {
        "bare csv.reader over the CSV (ceiling)": [sys.executable, "-c", BASELINE, *files],
        "bare json.loads over the JSON": [sys.executable, "-c", BARE_JSON, *json_files],
    }
    for correlator in (False, True):
        label = "correlator on" if correlator else "correlator off"
        csv_config = write_config(directory, correlator)
        cases[f"oneshot, CSV, {label}"] = [*oneshot, str(csv_config)]
        json_config = moved_config(csv_config, directory / "json", csv_config.name, ".json")
        cases[f"oneshot, JSON, {label}"] = [*oneshot, str(json_config)]
    times: dict[str, list[float]] = {name: [] for name in cases}
    rss: dict[str, float] = {}
    for _ in range(args.repeat):
        for name, cmd in cases.items():
            wall, peak, _out, _cpu = run(cmd)
            times[name].append(wall)
            rss[name] = max(rss.get(name, 0.0), peak)
    size = {form: sum(Path(p).stat().st_size for p in fs) / 1e6 for form, fs in (("CSV", files), ("JSON", json_files))}
    print(f"corpus: {len(files)} files, {size['CSV']:.1f} MB as CSV, {size['JSON']:.1f} MB as JSON; "
          f"median of {args.repeat} runs")
    ceiling = statistics.median(times["bare csv.reader over the CSV (ceiling)"])
    print(f"{'process':44s} {'seconds':>8s} {'ratio':>7s} {'peak RSS':>10s}")
    for name in cases:
        t = statistics.median(times[name])
        print(f"{name:44s} {t:8.2f} {ceiling / t:7.2f} {rss[name]:7.0f} MB")
    for label in ("correlator off", "correlator on"):
        json_time, csv_time = (statistics.median(times[f"oneshot, {form}, {label}"]) for form in ("JSON", "CSV"))
        slower = json_time / csv_time
        print(f"JSON / CSV, {label}: {slower:.2f}x the time")
    return 0


if __name__ == "__main__":
    sys.exit(main())
