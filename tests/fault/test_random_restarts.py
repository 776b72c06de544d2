"""Randomized restarts and rotation: real daemons against a ledger, exactly.

A seeded script of operations over three sources (acct, diag, bounce, each with `moved_to`): records appended (the
last line sometimes left half written), files rotated, moved by "PMTA's move-to", deleted once read (kept aside in
an archive), copied in place while the daemon is down (`cp` + `mv`: a new inode, the same bytes; a freed inode goes
to the next file), SIGTERM, kill -9 and restarts. At the end, with every line finished, four counts must agree with
the ledger of lines written: the daemon's /metrics totals, a `watchtower oneshot` over every file (its samples equal
the daemon's), and the correlator's stored events. The seeds run by default are ones that found bugs (a copy in
`moved_to`, a freed inode met first by the scan, a checkpoint of a header-only file claiming another file, the
correlator process losing a re-keyed file); RANDOM_RESTART_SEEDS=1-40 runs more. Run alone with `pytest -m fault`.
"""

from __future__ import annotations

import os
import random
import shutil
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
import yaml

from tests.client import HTTP
from tests.conftest import RECORD_DAY, REPO, Watchtower, scrape, write_config

pytestmark = [pytest.mark.fault, pytest.mark.integration]

SOURCES = ("acct", "diag", "bounce")
FAMILIES = {"d": "pmta_delivered_total", "b": "pmta_bounced_total", "t": "pmta_deferred_total",
            "rb": "pmta_remote_bounced_total", "rs": "pmta_remote_status_total"}
EVENT_TYPES = {"d": 3, "b": 4, "t": 2, "rs": 5, "rb": 6}  # corr_events.type (correlator/store.py)


@pytest.fixture(scope="module")
def pool(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[str, list[str]]]:
    """Per source, (header line, record lines) of 20 simulated minutes (the simulator's own writer, yesterday)."""
    out = tmp_path_factory.mktemp("pool")
    subprocess.run([sys.executable, "-m", "simulator.cli", "generate", "--scenario", "yahoo-tss04-pool", "--seed",
                    "3", "--minutes", "20", "--start", f"{RECORD_DAY}T06:00:00+00:00", "--out", str(out)],
                   check=True, capture_output=True, cwd=REPO, timeout=120)
    lines = {}
    for source in SOURCES:
        (path,) = out.glob(f"{source}-*.csv")
        header, *records = path.read_text().splitlines(keepends=True)
        lines[source] = (header, records)
    assert all(lines[s][1] for s in SOURCES)
    return lines


def family_totals(samples: dict) -> dict[str, float]:
    return {t: sum(v for (n, _), v in samples.items() if n == name) for t, name in FAMILIES.items()}


def comparable(samples: dict) -> dict:
    """Record counters and histograms; remote bounces/status without vmta, pool and ISP (which of them a message's
    rb names depends on whether its d was read first: timing, not exactness)."""
    out: dict = {}
    for (name, labels), value in samples.items():
        if name.startswith("pmta_") and name.endswith(("_total", "_bucket", "_count", "_sum")):
            if name.startswith("pmta_remote_"):
                labels = tuple(kv for kv in labels if kv[0] not in ("vmta", "vmta_pool", "isp"))
            out[(name, labels)] = out.get((name, labels), 0) + value
    return {k: v for k, v in out.items() if v}


class SourceWriter:
    """PMTA writing one source: the current file in logs/, closed files where they went (logs, moved, deleted)."""

    def __init__(self, root: Path, name: str, header: str, records: list[str], start: int) -> None:
        self.root, self.name, self.header, self.records, self.i = root, name, header, records, start
        self.seq = 0
        self.partial = ""  # the rest of a half-written line
        self.partial_kind = ""  # its record type
        self.closed: list[str] = []
        self.where: dict[str, str] = {}
        self.current = self._new_file()

    def _new_file(self) -> Path:
        name = f"{self.name}-{RECORD_DAY}-{self.seq:04d}.csv"
        self.seq += 1
        self.where[name] = "logs"
        path = self.root / "logs" / name
        path.write_text(self.header)
        return path

    def path_of(self, name: str) -> Path:
        return self.root / self.where[name] / name

    def finish_line(self) -> None:
        with self.current.open("a") as f:
            f.write(self.partial)
        self.partial = ""

    def rotate(self) -> None:
        self.finish_line()
        self.closed.append(self.current.name)
        self.current = self._new_file()

    def append(self, n: int, cut: float | None, ledger: dict[str, int]) -> None:
        """n more records (the ledger counts each whole), the last one cut at `cut` of its length if given."""
        take = self.records[self.i:self.i + n]
        self.i += len(take)
        text = self.partial + "".join(take)
        self.partial = ""
        if take and cut is not None:
            at = len(text) - len(take[-1]) + max(1, int(len(take[-1]) * cut))
            text, self.partial = text[:at], text[at:]
            self.partial_kind = take[-1].split(",", 1)[0]
        for line in take:
            kind = line.split(",", 1)[0]
            ledger[kind] = ledger.get(kind, 0) + 1
        with self.current.open("a") as f:
            f.write(text)


class Script:
    """One seeded run: operations chosen by the seed, applied to the files and the daemon."""

    def __init__(self, root: Path, seed: int, correlator: bool, pool: dict, watchtower_factory) -> None:
        self.root, self.rng, self.correlator = root, random.Random(seed), correlator
        for sub in ("logs", "moved", "archive"):
            (root / sub).mkdir(parents=True, exist_ok=True)
        sources = [{"name": s, "paths": [str(root / "logs" / f"{s}-*.csv")],
                    "moved_to": [str(root / "moved" / f"{s}-*.csv")]} for s in SOURCES]
        self.config = write_config(root, sources, correlator={"enabled": correlator})
        self.wt: Watchtower = watchtower_factory(self.config)
        self.ledger: dict[str, int] = {}
        self.confirmed: set[tuple[str, str]] = set()  # (source, file name) read to its end at a sync
        starts = random.Random(seed * 7 + 1)
        self.w = {s: SourceWriter(root, s, pool[s][0], pool[s][1], starts.randrange(max(1, len(pool[s][1]) // 3)))
                  for s in SOURCES}
        self.ops: list[tuple] = []

    # --- checks ----------------------------------------------------------------------------------
    def want(self, complete_only: bool) -> dict[str, float]:
        want = {t: float(self.ledger.get(t, 0)) for t in FAMILIES}
        want["t"] += self.ledger.get("tq", 0)
        if complete_only:
            for w in self.w.values():
                if w.partial:  # its record is in the ledger, but not yet a whole line
                    want["t" if w.partial_kind == "tq" else w.partial_kind] -= 1
        return want

    def caught_up(self, timeout: float) -> bool:
        """/metrics equals the ledger for every whole line written, and nothing waits to be committed."""
        want = self.want(complete_only=True)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                if family_totals(self.wt.scrape()) == want:
                    health = HTTP.get(self.wt.url + "/healthz", timeout=5).json()
                    if health.get("commit_backlog_rows") == 0 and health.get("commit_backlog_bytes") == 0:
                        return True
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        return False

    # --- operations ------------------------------------------------------------------------------
    def choose(self) -> tuple:
        rng, running = self.rng, self.wt.proc is not None
        source = rng.choice(SOURCES if rng.random() < 0.4 else ("acct",))
        weights = [("append", 40), ("rotate", 8), ("move", 6), ("sleep", 6), ("delete", 3)]
        weights += [("term", 5), ("kill", 5), ("sync", 2)] if running else [("start", 14), ("copy", 10)]
        kind = rng.choices([k for k, _ in weights], [w for _, w in weights])[0]
        w = self.w[source]
        if kind == "append":
            return ("append", source, rng.choice((1, 3, 10, 50, 200, 800)),
                    rng.uniform(0.05, 0.95) if rng.random() < 0.3 else None)
        if kind == "move":
            names = [n for n in w.closed if w.where[n] == "logs"]
            return ("move", source, rng.choice(names)) if names else ("sleep", 0.05)
        if kind == "copy":
            return ("copy", source, rng.choice([n for n in [*w.closed, w.current.name]
                                                if w.where[n] in ("logs", "moved")]))
        if kind == "sleep":
            return ("sleep", rng.choice((0.0, 0.02, 0.1, 0.3)))
        if kind in ("rotate", "delete"):
            return (kind, source, rng.random())
        return (kind,)

    def do(self, op: tuple) -> None:
        kind = op[0]
        self.ops.append(op)
        if kind == "append":
            self.w[op[1]].append(op[2], op[3], self.ledger)
        elif kind == "rotate":
            self.w[op[1]].rotate()
        elif kind == "move":
            w = self.w[op[1]]
            w.path_of(op[2]).rename(self.root / "moved" / op[2])
            w.where[op[2]] = "moved"
        elif kind == "copy":  # `cp` + `mv` while the daemon is down
            path = self.w[op[1]].path_of(op[2])
            tmp = path.with_name(path.name + ".tmp")
            shutil.copyfile(path, tmp)
            tmp.rename(path)
        elif kind == "delete":
            self.delete(op[1], op[2])
        elif kind == "sleep":
            time.sleep(op[1])
        elif kind == "sync":
            self.sync()
        elif kind == "start":
            self.wt.start()
        elif kind == "term":
            assert self.wt.stop() == 0, self.wt.log.read_text()[-3000:]
        elif kind == "kill":
            self.wt.kill9()

    def sync(self) -> bool:
        if not self.caught_up(45):
            return False
        self.confirmed |= {(s, n) for s, w in self.w.items() for n in w.closed}
        return True

    def delete(self, source: str, r: float) -> None:
        """A closed file read to its end (confirmed at a sync) is deleted, kept in archive/ for the oneshot."""
        if self.wt.proc is not None and not self.sync():
            return
        w = self.w[source]
        names = [n for n in w.closed if (source, n) in self.confirmed and w.where[n] in ("logs", "moved")]
        if names:
            name = names[int(r * len(names))]
            shutil.copy2(w.path_of(name), self.root / "archive" / name)
            w.path_of(name).unlink()
            w.where[name] = "deleted"

    # --- the run ---------------------------------------------------------------------------------
    def run(self, n_ops: int) -> None:
        self.wt.start()
        for _ in range(n_ops):
            self.do(self.choose())
        for w in self.w.values():
            w.finish_line()
        if self.wt.proc is None:
            self.wt.start()
        self.caught_up(120)

    def oneshot(self) -> dict:
        cfg = {"sources": [{"name": s, "paths": [str(self.root / d / f"{s}-*.csv") for d in ("logs", "moved",
                                                                                            "archive")]}
                           for s in SOURCES],
               "state_dir": str(self.root / "oneshot-state"), "listen": "127.0.0.1:0",
               "correlator": {"enabled": False}}
        path = self.root / "oneshot.yml"
        path.write_text(yaml.safe_dump(cfg))
        proc = subprocess.run([sys.executable, "-m", "exporter", "oneshot", "--config", str(path)],
                              capture_output=True, text=True, cwd=REPO, timeout=300)
        assert proc.returncode == 0, proc.stderr
        from prometheus_client.parser import text_string_to_metric_families
        return {(s.name, tuple(sorted(s.labels.items()))): s.value
                for fam in text_string_to_metric_families(proc.stdout) for s in fam.samples}

    def stored_events(self) -> dict[str, int]:
        with sqlite3.connect(f"file:{self.root / 'state' / 'watchtower.db'}?mode=ro", uri=True) as db:
            by_type = dict(db.execute("SELECT type, count(*) FROM corr_events GROUP BY type").fetchall())
            queued = db.execute("SELECT count(*) FROM corr_queue_events").fetchone()[0]
        return {**{t: by_type.get(code, 0) for t, code in EVENT_TYPES.items()}, "tq": queued}


def seeds() -> list[tuple[int, bool]]:
    """The seeds run: those that found bugs, or RANDOM_RESTART_SEEDS (e.g. `1-40`, correlator on) to look further."""
    wanted = os.environ.get("RANDOM_RESTART_SEEDS", "")
    if wanted:
        first, _, last = wanted.partition("-")
        return [(seed, True) for seed in range(int(first), int(last or first) + 1)]
    # 1, 6 and 11 failed before the fixes of 2026-12-05 (with 2 and 5); seed 6 with the correlator on also failed now
    # and then on a loaded machine (the correlator process took a span before the daemon's first scan had committed
    # the file's new identity, and dropped it: exporter/reconciled.py). 23: a header-only file of one source claimed
    # another source's new file in its freed inode.
    return [(1, True), (6, True), (11, False), (23, True)]


@pytest.mark.parametrize(("seed", "correlator"), seeds())
def test_randomized_restarts_rotations_moves_and_copies_count_every_record_once(
        tmp_path: Path, pool: dict, watchtower_factory, seed: int, correlator: bool) -> None:
    script = Script(tmp_path, seed, correlator, pool, watchtower_factory)
    script.run(80)
    ops = "\n".join(map(str, script.ops))
    daemon = scrape(script.wt.url + "/metrics")
    assert script.wt.stop() == 0
    want = script.want(complete_only=False)
    assert family_totals(daemon) == want, f"seed {seed}; operations:\n{ops}"
    oneshot = script.oneshot()
    assert family_totals(oneshot) == want
    assert comparable(daemon) == comparable(oneshot), f"seed {seed}; operations:\n{ops}"
    if correlator:
        assert script.stored_events() == {t: script.ledger.get(t, 0) for t in (*EVENT_TYPES, "tq")}, \
            f"seed {seed}; operations:\n{ops}"
    assert "Traceback" not in script.wt.log.read_text()
