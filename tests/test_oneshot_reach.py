"""oneshot with the correlator stores only the rows a report can reach (correlator/reach.py) and prints exactly
what a store of every row prints; a file that changes under it makes it read everything again."""

from __future__ import annotations

import logging
from pathlib import Path

import polars as pl
import pytest
from hypothesis import given
from hypothesis import strategies as st

from bench.corpus import make_corpus
from correlator import reach
from correlator.keys import norm_rcpt
from exporter import daemon
from exporter.config import config_from_dict

ACCT = "type,timeLogged,timeQueued,orig,rcpt,dsnAction,dsnStatus,dsnDiag,dsnMta,vmta,jobId,vmtaPool,header_Message-Id"
DIAG = "type,timeLogged,timeQueued,orig,rcpt,dsnAction,dsnStatus,dsnDiag,dsnMta,vmta,jobId,vmtaPool"
FBL = "type,timeLogged,orig,rcpt,feedbackType,userAgent,reportingMta,header_Message-Id"
DAY = "2026-11-30"
UNREACHED = 40


def _d(t: str, rcpt: str, vmta: str, job: str, mid: str, ty: str = "d") -> str:
    return (f"{ty},{DAY} 00:00:{t}+0000,{DAY} 00:00:00+0000,news@sender.example,{rcpt},relayed,2.0.0 (success),"
            f"smtp;250 ok,mx.example.net (192.0.2.1),{vmta},{job},pool-1,{mid}")


def _t(t: str, rcpt: str, vmta: str, job: str) -> str:
    return (f"t,{DAY} 00:00:{t}+0000,{DAY} 00:00:00+0000,news@sender.example,{rcpt},delayed,4.4.1 (no answer),"
            f"smtp;421 try later,mx.example.net (192.0.2.1),{vmta},{job},pool-2")


def _f(t: str, rcpt: str, mid: str) -> str:
    return f"f,{DAY} 00:01:{t}+0000,news@sender.example,{rcpt},abuse,FBL/1.0,fbl.example,{mid}"


def _write(logs: Path) -> None:
    """Four reports, each found another way; UNREACHED deliveries (and their transients) no report names."""
    logs.mkdir()
    acct = [ACCT,
            _d("10", "u1@gmail.com", "vmta-a", "job-1", "<m1@s.example>"),     # report 1: Message-Id + rcpt
            _d("11", " U2@Yahoo.com ", "vmta-b", "job-2", "<m2@s.example>"),   # report 2: rcpt + orig
            _d("12", "u3@aol.com", "vmta-c", "job-3", "<m3@s.example>"),       # report 3: Message-Id alone
            _d("13", "u5@hotmail.com", "vmta-e", "job-5", "<m5@s.example>"),   # report 4: an rb in acct
            _d("14", "u5@hotmail.com", "", "", "<m5@s.example>", ty="rb")]
    acct += [_d("20", f"x{i}@other.example", f"vmta-{i % 7}", f"job-x{i}", f"<x{i}@s.example>")
             for i in range(UNREACHED)]
    (logs / "acct-1.csv").write_text("\n".join(acct) + "\n")
    diag = [DIAG, _t("05", "u3@aol.com", "vmta-z", "job-3")]  # u3's timeline: kept whole though it has no Message-Id
    diag += [_t("06", f"x{i}@other.example", "vmta-q", f"job-x{i}") for i in range(UNREACHED)]
    (logs / "diag-1.csv").write_text("\n".join(diag) + "\n")
    fbl = [FBL, _f("01", "u1@gmail.com", "<m1@s.example>"), _f("02", "u2@yahoo.com", ""),
           _f("03", "", "<m3@s.example>"), _f("04", "nobody@gmail.com", "")]
    (logs / "fbl-1.csv").write_text("\n".join(fbl) + "\n")


def _config(logs: Path, state: Path) -> dict:
    return {
        "sources": [
            {"name": "acct", "paths": [str(logs / "acct-*.csv")], "records": ["d", "b", "rb"]},
            {"name": "diag", "paths": [str(logs / "diag-*.csv")], "records": ["t", "tq"]},
            {"name": "fbl", "paths": [str(logs / "fbl-*.csv")], "records": ["f"]},
        ],
        "state_dir": str(state), "listen": "127.0.0.1:9", "correlator": {"enabled": True},
    }


def _stable(text: str) -> list[str]:
    return sorted(line for line in text.splitlines()
                  if line.startswith("pmta_") or line.startswith("watchtower_records_"))


def _run(cfg: dict, monkeypatch: pytest.MonkeyPatch, reachable_only: bool) -> tuple[str, list[reach.Reach | None]]:
    """The oneshot's output and the Reach objects its passes used."""
    scans: list[reach.Reach | None] = []
    real = reach.scan

    def recording(sources: object) -> reach.Reach | None:
        scans.append(real(sources))  # type: ignore[arg-type]
        return scans[-1]

    with monkeypatch.context() as m:
        m.setattr(reach, "scan", recording)
        m.setattr(daemon, "ONESHOT_REACHABLE_ONLY", reachable_only)
        return daemon.run_oneshot(config_from_dict(cfg)), scans


def _complaints(text: str) -> dict[str, float]:
    out: dict[str, float] = {}
    for line in _stable(text):
        if line.startswith("pmta_complaints_total{"):
            vmta = line.split('vmta="', 1)[1].split('"', 1)[0]
            out[vmta] = out.get(vmta, 0) + float(line.rsplit(" ", 1)[1])
    return out


def test_oneshot_stores_the_reachable_rows_only_and_prints_what_a_full_store_prints(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _write(tmp_path / "logs")
    cfg = _config(tmp_path / "logs", tmp_path / "state")
    full, none = _run(cfg, monkeypatch, reachable_only=False)
    assert none == []
    reached, scans = _run(cfg, monkeypatch, reachable_only=True)
    assert len(scans) == 1 and scans[0] is not None
    r = scans[0]
    assert r.report_rcpts == {"u1@gmail.com", "u2@yahoo.com", "u5@hotmail.com", "nobody@gmail.com"}
    assert r.mids == {"m1@s.example", "m3@s.example", "m5@s.example"}
    assert r.rcpts == r.report_rcpts | {"u3@aol.com"}  # the recipient of report 3's Message-Id
    # acct: u1, u2, u3, u5 and the rb; diag: u3's transient; fbl: the four reports. Nothing else.
    assert (r.kept, r.dropped, r.missed) == (5 + 1 + 4, 2 * UNREACHED, False)
    assert _stable(reached) == _stable(full)
    assert _complaints(reached) == {"vmta-a": 1, "vmta-b": 1, "vmta-c": 1, "unknown": 1}


def test_a_report_the_scan_did_not_see_makes_the_pass_run_again_in_full(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    """PMTA appends while the oneshot runs: a report written after the scan may name a delivery the pass dropped."""
    logs = tmp_path / "logs"
    _write(logs)
    cfg = _config(logs, tmp_path / "state")
    late = _f("09", "x3@other.example", "<x3@s.example>")
    real = reach.scan

    def scan_then_append(sources: object) -> reach.Reach | None:
        found = real(sources)  # type: ignore[arg-type]
        with (logs / "fbl-1.csv").open("a") as f:
            f.write(late + "\n")
        return found

    with monkeypatch.context() as m, caplog.at_level(logging.INFO, logger="watchtower.daemon"):
        m.setattr(reach, "scan", scan_then_append)
        again = daemon.run_oneshot(config_from_dict(cfg))
    assert "reading them again" in caplog.text
    full, _scans = _run(cfg, monkeypatch, reachable_only=False)  # the files as they are now, every row stored
    assert _stable(again) == _stable(full)
    assert _complaints(again)["vmta-3"] == 1  # x3's delivery went through vmta-3: found by the second pass


def test_without_the_message_id_closure_the_pass_notices_and_reads_again(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Were u3's rows (its Message-Id is report 3's) dropped, its transient would be missing from its timeline:
    the pass sees a row with a report's Message-Id outside the recipients it keeps, and stores everything."""
    _write(tmp_path / "logs")
    cfg = _config(tmp_path / "logs", tmp_path / "state")
    full, _none = _run(cfg, monkeypatch, reachable_only=False)
    monkeypatch.setattr(reach.Reach, "add_mid_rows", lambda self, frame: None)
    reached, scans = _run(cfg, monkeypatch, reachable_only=True)
    assert scans[0] is not None and scans[0].missed
    assert _stable(reached) == _stable(full)


def test_too_many_report_keys_store_every_row(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _write(tmp_path / "logs")
    cfg = _config(tmp_path / "logs", tmp_path / "state")
    monkeypatch.setattr(reach, "KEY_LIMIT", 7)  # 4 report rcpts + 3 Message-Ids, then u3@aol.com
    out, scans = _run(cfg, monkeypatch, reachable_only=True)
    assert scans == [None]
    monkeypatch.setattr(reach, "KEY_LIMIT", 8)
    out8, scans8 = _run(cfg, monkeypatch, reachable_only=True)
    assert scans8[0] is not None
    assert _stable(out) == _stable(out8)


def test_oneshot_on_the_benchmark_corpus_prints_the_same(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The bench corpus (a CRLF file, an invalid byte, thousands of deliveries, reports by Message-Id + rcpt)."""
    logs = tmp_path / "logs"
    make_corpus(logs, 4000)
    cfg = _config(logs, tmp_path / "state")
    cfg["tail"] = {"chunk_bytes": 16384}
    full, _none = _run(cfg, monkeypatch, reachable_only=False)
    reached, scans = _run(cfg, monkeypatch, reachable_only=True)
    r = scans[0]
    assert r is not None and not r.missed
    fbl_rows = sum(1 for _ in (logs / "fbl-0000.csv").open()) - 1 if (logs / "fbl-0000.csv").exists() else None
    assert r.kept < (r.kept + r.dropped) // 10
    assert len(r.report_rcpts) == fbl_rows or fbl_rows is None
    complaints = _complaints(reached)
    assert sum(v for k, v in complaints.items() if k != "unknown") >= 3
    assert _stable(reached) == _stable(full)


_BRACKETED = st.builds(lambda n, pad, v: pad + "<" * n + pad + v + pad + ">" * n + pad, st.integers(0, 3),
                       st.sampled_from(["", " ", "\t", "\u3000"]), st.text(max_size=12))


@given(st.lists(st.one_of(st.text(max_size=12), _BRACKETED), min_size=1, max_size=30))
def test_rcpts_are_normalised_as_python_normalises_them(values: list[str]) -> None:
    """Column-wise for ASCII, in Python otherwise: always what attribution, linking and the API compute
    (keys.norm_rcpt), and a normalised value is its own normal form (review 2026-12-07: `<<a@b>>` normalised once by
    /timeline and twice by /lookup, which found it where the other did not)."""
    got = reach.normalised_rcpts(pl.Series(values, dtype=pl.String)).to_list()
    assert got == [norm_rcpt(v) for v in values]
    assert [norm_rcpt(v) for v in got] == got


def test_a_badly_quoted_report_file_prints_what_a_full_store_prints(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """An unbalanced quote: the pass counts that line as bad_quoting and reads the report after it; polars' reader
    may take both lines for one. Whatever the scan saw, the output is a full store's."""
    logs = tmp_path / "logs"
    _write(logs)
    with (logs / "fbl-1.csv").open("a") as f:
        f.write('f,2026-11-30 00:02:00+0000,news@sender.example,"x1@other.example,abuse,FBL/1.0,fbl.example,\n')
        f.write(_f("07", "x2@other.example", "<x2@s.example>") + "\n")
    cfg = _config(logs, tmp_path / "state")
    full, _none = _run(cfg, monkeypatch, reachable_only=False)
    reached, scans = _run(cfg, monkeypatch, reachable_only=True)
    assert scans[0] is not None
    assert "x2@other.example" in scans[0].report_rcpts or scans[0].missed  # seen by the scan, or noticed by the pass
    assert _stable(reached) == _stable(full)
    assert _complaints(reached)["vmta-2"] == 1  # x2's delivery, found after the bad line
    assert 'reason="bad_quoting"' in "".join(line for line in reached.splitlines() if "parse_errors" in line)


def test_a_file_polars_refuses_is_scanned_with_the_pass_s_parser(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    logs = tmp_path / "logs"
    _write(logs)
    streamed = reach.scan(config_from_dict(_config(logs, tmp_path / "state")).sources)

    def refuse(path: str, wanted: object, limit: int) -> None:
        raise pl.exceptions.ComputeError("refused")

    monkeypatch.setattr(reach, "_streamed", refuse)
    parsed = reach.scan(config_from_dict(_config(logs, tmp_path / "state")).sources)
    assert streamed is not None and parsed is not None
    assert (parsed.report_rcpts, parsed.mids, parsed.rcpts) == (streamed.report_rcpts, streamed.mids, streamed.rcpts)
    assert "u3@aol.com" in parsed.rcpts


def test_a_file_over_stream_bytes_is_scanned_with_the_pass_s_parser_and_finds_the_same_keys(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """polars' streaming reader held about twice a file's size (four 104 MB files: the scan peaked at 293 MB); past
    STREAM_BYTES a file is read by the pass's parser, a chunk at a time, with the same keys found."""
    logs = tmp_path / "logs"
    _write(logs)
    streamed = reach.scan(config_from_dict(_config(logs, tmp_path / "state")).sources)
    read_by_polars: list[str] = []
    real = reach._streamed

    def counted(path: str, wanted: object, limit: int):  # type: ignore[no-untyped-def]
        read_by_polars.append(path)
        return real(path, wanted, limit)  # type: ignore[arg-type]

    monkeypatch.setattr(reach, "_streamed", counted)
    monkeypatch.setattr(reach, "STREAM_BYTES", 0)
    parsed = reach.scan(config_from_dict(_config(logs, tmp_path / "state")).sources)
    assert read_by_polars == []
    assert streamed is not None and parsed is not None
    assert (parsed.report_rcpts, parsed.mids, parsed.rcpts) == (streamed.report_rcpts, streamed.mids, streamed.rcpts)
    assert "u3@aol.com" in parsed.rcpts


def test_a_scan_that_fails_stores_every_row(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The filter is an optimisation: whatever stops the first read, the oneshot goes on as before it."""
    _write(tmp_path / "logs")
    cfg = _config(tmp_path / "logs", tmp_path / "state")
    full, _none = _run(cfg, monkeypatch, reachable_only=False)

    def broken(path: str) -> None:
        raise PermissionError(13, "Permission denied", path)

    monkeypatch.setattr(reach, "_streamed", lambda path, wanted, limit: broken(path))
    monkeypatch.setattr(reach, "_parsed", broken)
    out, scans = _run(cfg, monkeypatch, reachable_only=True)
    assert scans == [None]
    assert _stable(out) == _stable(full)


def _counting_rows(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Rows whose recipients the scan normalised (what it built keys of), per call."""
    seen: list[int] = []
    real = reach.normalised_rcpts

    def counted(rcpt: pl.Series) -> pl.Series:
        seen.append(len(rcpt))
        return real(rcpt)

    monkeypatch.setattr(reach, "normalised_rcpts", counted)
    return seen


def test_the_scan_stops_within_a_slice_of_the_key_limit(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Measured: a complaint about every delivery of 1M lines (456k reports) held 456k recipients and Message-Ids in
    sets before the scan compared them with KEY_LIMIT, and the oneshot peaked at 372 MB. Keys are now added SCAN_ROWS
    rows at a time, the limit looked at in between, and polars hands over at most STREAM_ROWS rows of a file."""
    logs = tmp_path / "logs"
    logs.mkdir()
    (logs / "acct-1.csv").write_text(ACCT + "\n" + _d("10", "u1@gmail.com", "vmta-a", "job-1", "<m1@s.example>") + "\n")
    (logs / "diag-1.csv").write_text(DIAG + "\n")
    reports = [_f("01", f"r{i}@gmail.com", f"<r{i}@s.example>") for i in range(500)]
    (logs / "fbl-1.csv").write_text("\n".join([FBL, *reports]) + "\n")
    sources = config_from_dict(_config(logs, tmp_path / "state")).sources
    monkeypatch.setattr(reach, "KEY_LIMIT", 50)  # two keys a report: past it at the 26th
    monkeypatch.setattr(reach, "SCAN_ROWS", 8)
    monkeypatch.setattr(reach, "STREAM_ROWS", 120)
    seen = _counting_rows(monkeypatch)
    assert reach.scan(sources) is None
    assert max(seen) <= 8 and sum(seen) == 32  # four slices: 32 reports, 64 keys; the 468 after them never keyed
    streamed: list[int] = []
    real = reach._streamed
    monkeypatch.setattr(reach, "_streamed", lambda path, wanted, limit: streamed.append(limit) or real(path, wanted, limit))
    seen.clear()
    assert reach.scan(sources) is None
    assert streamed == [120, 120]  # acct (it feeds rb) and fbl, each handed over 120 rows at most


def test_a_message_id_of_many_recipients_stops_the_scan_at_the_key_limit(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """One report, whose Message-Id a mailing gave to 500 recipients: their rows are added a slice at a time too."""
    logs = tmp_path / "logs"
    logs.mkdir()
    mailing = [_d("10", f"r{i}@gmail.com", "vmta-a", "job-1", "<m1@s.example>") for i in range(500)]
    (logs / "acct-1.csv").write_text("\n".join([ACCT, *mailing]) + "\n")
    (logs / "diag-1.csv").write_text(DIAG + "\n")
    (logs / "fbl-1.csv").write_text(FBL + "\n" + _f("01", "r0@gmail.com", "<m1@s.example>") + "\n")
    sources = config_from_dict(_config(logs, tmp_path / "state")).sources
    monkeypatch.setattr(reach, "KEY_LIMIT", 50)
    monkeypatch.setattr(reach, "SCAN_ROWS", 8)
    seen = _counting_rows(monkeypatch)
    assert reach.scan(sources) is None
    assert max(seen) <= 8 and sum(seen) == 1 + 56  # the report, then seven slices of recipients: 56 + 1 keys > 50


def test_a_file_of_more_rows_than_polars_hands_over_is_read_on_by_the_pass_s_parser(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Reports repeated (the same few keys): past STREAM_ROWS rows of a file the scan reads on with the pass's
    parser, and finds the keys after them."""
    logs = tmp_path / "logs"
    logs.mkdir()
    (logs / "acct-1.csv").write_text(ACCT + "\n")
    (logs / "diag-1.csv").write_text(DIAG + "\n")
    fbl = [_f("01", f"r{i % 5}@gmail.com", f"<r{i % 5}@s.example>") for i in range(300)]
    fbl.append(_f("02", "last@gmail.com", "<last@s.example>"))
    (logs / "fbl-1.csv").write_text("\n".join([FBL, *fbl]) + "\n")
    sources = config_from_dict(_config(logs, tmp_path / "state")).sources
    monkeypatch.setattr(reach, "STREAM_ROWS", 120)
    monkeypatch.setattr(reach, "SCAN_ROWS", 8)
    r = reach.scan(sources)
    assert r is not None
    assert r.report_rcpts == {*(f"r{i}@gmail.com" for i in range(5)), "last@gmail.com"}
    assert r.mids == {*(f"r{i}@s.example" for i in range(5)), "last@s.example"}


def test_the_oneshot_store_runs_with_small_page_caches(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A oneshot's store is a temporary file the OS caches anyway: its writer and read connections get
    ONESHOT_CACHE_BYTES of SQLite page cache each (the daemon's 16 MiB each filled as the store grew, ~23 MB more of
    the peak at 1M lines where every row is stored), and the output is the same."""
    import sqlite3

    from correlator import sink as sink_module
    from correlator import store

    _write(tmp_path / "logs")
    cfg = _config(tmp_path / "logs", tmp_path / "state")
    caches: list[tuple[str, int]] = []
    real_open, real_setup = store.ReadPool._open, sink_module.CorrelatorSink.setup

    def opened(pool: store.ReadPool) -> sqlite3.Connection:
        conn = real_open(pool)
        caches.append(("read", conn.execute("PRAGMA cache_size").fetchone()[0]))
        return conn

    def setup(self: sink_module.CorrelatorSink, conn: sqlite3.Connection) -> None:
        real_setup(self, conn)
        caches.append(("write", conn.execute("PRAGMA cache_size").fetchone()[0]))

    small, _scans = _run(cfg, monkeypatch, reachable_only=True)
    monkeypatch.setattr(store.ReadPool, "_open", opened)
    monkeypatch.setattr(sink_module.CorrelatorSink, "setup", setup)
    again, _scans = _run(cfg, monkeypatch, reachable_only=True)
    kib = daemon.ONESHOT_CACHE_BYTES // 1024
    assert ("write", -kib) in caches and ("read", -kib) in caches
    assert {size for _kind, size in caches} == {-kib}
    monkeypatch.setattr(daemon, "ONESHOT_CACHE_BYTES", 16 * 1024**2)
    big, _scans = _run(cfg, monkeypatch, reachable_only=True)
    assert ("write", -16384) in caches
    assert _stable(small) == _stable(again) == _stable(big)


@pytest.mark.parametrize("read_bytes", [40, 64, 97, 1 << 20])
def test_the_reach_scan_reads_a_quoted_line_break_as_one_record(tmp_path, monkeypatch, read_bytes):
    """The pre-scan reads a file as the pass does: a quoted field holding a line break (RFC 4180) split across its
    reads is one record with its keys, not a bad line and a garbage one."""
    from correlator import reach
    from exporter.parser import FileParser

    monkeypatch.setattr(reach, "READ_BYTES", read_bytes)
    path = tmp_path / "fbl.csv"
    path.write_text('type,rcpt,dsnDiag,header_Message-Id\n'
                    'f,u1@gmail.com,"first line\nsecond line",<m1@x>\n'
                    'f,u2@gmail.com,plain,<m2@x>\n')
    parser = FileParser("reach", str(path), reach._ALL_TYPES, error_log=reach._Quiet(), fields=reach._FIELDS)
    rcpts = [row[batch.columns.rcpt] for batch in reach._batches(parser, str(path)) for row in batch.rows]
    assert rcpts == ["u1@gmail.com", "u2@gmail.com"]
    assert parser.errors == {}
