"""`watchtower oneshot` with the correlator off (exporter/oneshot.py): the daemon's exact output, and
none of the web stack, the correlator, the state database or an event loop loaded to produce it."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import yaml

from bench.corpus import make_corpus
from exporter.config import load_config

ROOT = Path(__file__).resolve().parent.parent


def _config(tmp_path: Path) -> Path:
    make_corpus(tmp_path, 4000, files=2)  # acct (one CRLF file, one latin-1 byte) + diag + fbl
    (tmp_path / "state").mkdir()
    path = tmp_path / "c.yml"
    path.write_text(yaml.safe_dump({
        "sources": [{"name": "acct", "paths": [str(tmp_path / "acct-*.csv")], "records": ["d", "b"]},
                    {"name": "diag", "paths": [str(tmp_path / "diag-*.csv")], "records": ["t", "tq"]},
                    {"name": "fbl", "paths": [str(tmp_path / "fbl-*.csv")], "records": ["f"]}],
        "state_dir": str(tmp_path / "state"), "correlator": {"enabled": False},
        "tail": {"chunk_bytes": 65536}, "labels": {"max_vmtas": 50, "max_senders": 9},
    }))
    return path


def test_metrics_only_oneshot_writes_what_the_daemon_path_writes(tmp_path: Path, monkeypatch) -> None:
    from exporter import daemon, oneshot

    config = load_config(_config(tmp_path))
    reference = daemon.run_oneshot(config)  # tail.chunk_bytes reads, inline folding, generate_latest
    monkeypatch.setattr(oneshot, "BACKFILL_CHUNK_BYTES", 200_000)  # several chunks per file, folded behind
    fast = oneshot.run_oneshot(config)
    assert 'watchtower_records_repaired_total{reason="invalid_utf8",source="acct"} 1.0' in fast
    assert "pmta_deferral_age_seconds_bucket" in fast and 'label="vmta"' in fast
    assert fast == reference


def test_same_chunks_same_page_whatever_the_label_overflows(tmp_path: Path, monkeypatch) -> None:
    """Read in the same chunks, the pipelined oneshot and the daemon's inline path write the same page. The order of
    `watchtower_label_overflow_total`'s series no longer follows the chunks: here the 21st sender comes ~1.4 KB
    before the 21st vmta, and 10 kB chunks counted `sender` first, 64 KiB chunks `vmta` first, while the series
    were made at their first overflow; they are made at 0 from the start now, in one order."""
    from exporter import daemon, oneshot

    path = _config(tmp_path)
    pages = []
    for chunk in (10_000, 65_536):
        config = load_config(path)
        config = config.model_copy(update={
            "tail": config.tail.model_copy(update={"chunk_bytes": chunk}),
            "labels": config.labels.model_copy(update={"max_vmtas": 20, "max_pools": 200, "max_senders": 20})})
        monkeypatch.setattr(oneshot, "BACKFILL_CHUNK_BYTES", chunk)
        fast = oneshot.run_oneshot(config)
        assert fast == daemon.run_oneshot(config)
        pages.append([line for line in fast.splitlines() if line.startswith("watchtower_label_overflow_total")])
    assert pages[0] == pages[1]
    assert [line.split('"')[1] for line in pages[0]] == ["vmta", "vmta_pool", "sender"]
    assert [float(line.split()[-1]) > 0 for line in pages[0]] == [True, False, True]


def _oneshot_in_fresh_process(config: Path, modules: tuple[str, ...], marker: str) -> str:
    """Run `main(['oneshot', ...])` in a new interpreter: "<rc> <marker in the page> <which of `modules` got imported>"."""
    probe = ("import sys, io, contextlib\n"
             "from exporter.cli import main\n"
             "with contextlib.redirect_stdout(io.StringIO()) as out:\n"
             f"    rc = main(['oneshot', '--config', {str(config)!r}])\n"
             f"print(rc, {marker!r} in out.getvalue(), sorted(m for m in {modules!r} if m in sys.modules))\n")
    proc = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.split("\n")[0]


def test_oneshot_imports_no_web_stack_and_no_correlator(tmp_path: Path) -> None:
    heavy = ("fastapi", "uvicorn", "starlette", "httpx", "sqlite_utils", "correlator")
    assert _oneshot_in_fresh_process(_config(tmp_path), heavy, "# HELP") == "0 True []"


def test_oneshot_needs_no_event_loop_and_no_state_database(tmp_path: Path) -> None:
    """The Tailer is driven over blocking FileStreams (no asyncio, no aiofiles threads) and the aggregator
    is built without the daemon's Pipeline (no exporter.daemon, state, writer, sqlite3)."""
    unneeded = ("asyncio", "aiofiles", "exporter.daemon", "exporter.state", "exporter.writer", "sqlite3")
    assert _oneshot_in_fresh_process(_config(tmp_path), unneeded, "pmta_delivered_total") == "0 True []"


def test_the_command_line_flushes_everything_before_it_ends(tmp_path: Path) -> None:
    """From the command line the process ends without interpreter teardown: the exposition on stdout and
    the warnings on stderr must be complete, and the same as main() returns in-process."""
    config = _config(tmp_path)
    with (tmp_path / "acct-2026-11-25-0000.csv").open("a") as f:
        f.write("zz,not,a,record\n")  # one unknown_type line: a warning on stderr
    from exporter.cli import main

    proc = subprocess.run([sys.executable, "-m", "exporter", "oneshot", "--config", str(config)], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "unknown_type" in proc.stderr
    assert 'watchtower_parse_errors_total{reason="unknown_type",source="acct"} 1.0' in proc.stdout
    import contextlib
    import io

    with contextlib.redirect_stdout(io.StringIO()) as out:
        assert main(["oneshot", "--config", str(config)]) == 0  # in-process: returns, prints the same
    assert proc.stdout == out.getvalue()


def test_a_header_without_time_queued_still_checks_and_tracks_time_logged(tmp_path: Path) -> None:
    """PMTA's guide's own acct example logs timeLogged without timeQueued. The time checks ran only with both
    columns: the newest record time (the stalled-tailer alert's input) was never set, and a timeLogged no PMTA time
    reads as was counted silently instead of as a bad_timestamp."""
    from exporter import daemon, oneshot

    logs = tmp_path / "logs"
    logs.mkdir()
    (logs / "acct-1.csv").write_text("type,timeLogged,orig,rcpt,dlvSourceIp,bounceCat\n"
                                     "d,1178807903,orig@port25.com,user1@domain.com,10.0.0.1,\n"
                                     "b,garbage,orig@port25.com,user3@domain.com,,policy-related\n")
    config_path = tmp_path / "c.yml"
    config_path.write_text(yaml.safe_dump({"sources": [{"name": "acct", "paths": [str(logs / "acct-*.csv")]}],
                                           "state_dir": str(tmp_path / "state"), "correlator": {"enabled": False}}))
    config = load_config(config_path)
    for page in (oneshot.run_oneshot(config), daemon.run_oneshot(config)):
        assert 'watchtower_last_record_timestamp_seconds{source="acct"} 1.178807903e+09' in page, page
        assert 'watchtower_parse_errors_total{reason="bad_timestamp",source="acct"} 1.0' in page
        assert 'pmta_bounced_total{' in page and 'pmta_delivered_total{' in page  # both still counted


def test_skipped_records_and_label_overflows_are_zero_series_from_the_start(tmp_path: Path):
    """Both were created at their first increment: the first burst of skipped records (a source fed a type it does
    not take) or of overflowed labels was invisible to rate() and increase()."""
    from tests.test_bad_timestamps import HEADER, _oneshot

    (tmp_path / "logs").mkdir()
    (tmp_path / "logs" / "a.csv").write_text(f"{HEADER}\nd,2024-06-12 08:00:00+0000,2024-06-12 07:59:00+0000,"
                                             "a@gmail.com,v1\n")
    proc = _oneshot(tmp_path, records=["d", "b"])
    assert proc.returncode == 0, proc.stderr
    skipped = sorted(re.findall(r'^watchtower_records_skipped_total\{source="acct",type="(\w+)"\} 0\.0$', proc.stdout,
                                re.M))
    overflow = re.findall(r'^watchtower_label_overflow_total\{label="(\w+)"\} 0\.0$', proc.stdout, re.M)
    assert (skipped, overflow) == (["f", "r", "rb", "rs", "t", "tq"], ["vmta", "vmta_pool", "sender"])
