"""The simulator's accounting files: names, headers, rotation (size, midnight), quoting, newline/time forms."""

from __future__ import annotations

import csv
import io
import re
from pathlib import Path

from hypothesis import given
from hypothesis import strategies as st

from simulator import FileSpec, SimConfig, Simulator
from simulator.clock import tz_of
from simulator.fields import DEFAULT_DB, csv_line, resolve_fields
from simulator.writer import AcctFile

NAME = re.compile(r"^(acct|diag|fbl|bounce)-(\d{4}-\d{2}-\d{2})-(\d{4})\.csv$")


def read_rows(path: Path) -> list[list[str]]:
    with path.open(newline="", encoding="ascii") as f:
        return list(csv.reader(f))


def test_default_headers_follow_pmta_defaults(tmp_path: Path) -> None:
    truth = Simulator("baseline", tmp_path, seed=3).generate(3)
    acct = sorted(tmp_path.glob("acct-*.csv"))
    diag = sorted(tmp_path.glob("diag-*.csv"))
    assert [p.name for p in acct] == ["acct-2024-06-12-0000.csv"]
    assert [p.name for p in diag] == ["diag-2024-06-12-0000.csv"]
    expected = [*DEFAULT_DB, "header_Message-Id"]
    assert read_rows(acct[0])[0] == expected
    assert read_rows(diag[0])[0] == expected
    rows = read_rows(acct[0])[1:]
    assert len(rows) == truth.count(type=("d", "b"))
    assert {r[0] for r in rows} == {"d", "b"}
    assert all(len(r) == len(expected) for r in rows)


def test_record_fields_syntax() -> None:
    # `jobId,dsnDiag,*,!timeImprinted,!dlvEsmtpAvailable,!rcpt` (a public config, pmta-formats.md §1.3)
    fields = resolve_fields(["jobId", "dsnDiag", "*", "!dlvEsmtpAvailable", "!rcpt", "header_X-job"], ["d"])
    assert fields[:3] == ("type", "jobId", "dsnDiag")
    assert "rcpt" not in fields and "dlvEsmtpAvailable" not in fields
    assert fields[-1] == "header_X-job"
    assert fields.count("dsnDiag") == 1
    assert resolve_fields(["rcpt", "timeLogged"], ["b"]) == ("type", "rcpt", "timeLogged")
    assert resolve_fields(["*"], ["d", "f"])[: len(DEFAULT_DB)] == DEFAULT_DB


def test_rotation_by_size_numbers_files_and_repeats_header(tmp_path: Path) -> None:
    limit = 64 * 1024
    cfg = SimConfig(files=[FileSpec(name="acct", records=["d", "b"], max_size=limit)])
    truth = Simulator("baseline", tmp_path, config=cfg, seed=5).generate(4)
    files = sorted(tmp_path.glob("acct-*.csv"))
    assert len(files) >= 5
    assert [p.name for p in files] == [f"acct-2024-06-12-{i:04d}.csv" for i in range(len(files))]
    header = files[0].read_bytes().split(b"\n", 1)[0]
    total = 0
    for p in files:
        data = p.read_bytes()
        assert data.split(b"\n", 1)[0] == header
        assert len(data) <= limit
        assert data.endswith(b"\n")
        total += len(read_rows(p)) - 1
    assert total == truth.count(type=("d", "b"))
    assert truth.files == [str(p) for p in files]


def test_rotation_at_local_midnight_resets_the_sequence(tmp_path: Path) -> None:
    cfg = SimConfig(utc_offset_minutes=120, files=[FileSpec(name="acct", records=["d", "b"], max_size="40KiB")])
    # 23:57 local (+0200) -> crosses midnight after 3 simulated minutes
    sim = Simulator("baseline", tmp_path, config=cfg, start="2024-06-12 21:57:00+00:00")
    sim.generate(6)
    names = sorted(p.name for p in tmp_path.glob("acct-*.csv"))
    days = sorted({NAME.match(n).group(2) for n in names})  # type: ignore[union-attr]
    assert days == ["2024-06-12", "2024-06-13"]
    assert "acct-2024-06-13-0000.csv" in names and "acct-2024-06-12-0000.csv" in names
    for name in names:
        day = NAME.match(name).group(2)  # type: ignore[union-attr]
        rows = read_rows(tmp_path / name)
        assert rows[0][0] == "type"
        logged = {r[1] for r in rows[1:]}
        assert logged and all(t.startswith(day) and t.endswith("+0200") for t in logged), name


def test_existing_files_are_never_reused(tmp_path: Path) -> None:
    (tmp_path / "acct-2024-06-12-0000.csv").write_text("old\n")
    Simulator("baseline", tmp_path).generate(1)
    assert (tmp_path / "acct-2024-06-12-0000.csv").read_text() == "old\n"
    assert read_rows(tmp_path / "acct-2024-06-12-0001.csv")[0][0] == "type"


def test_crlf_and_epoch_times(tmp_path: Path) -> None:
    cfg = SimConfig(files=[FileSpec(name="acct", records=["d", "b", "t"], newline="crlf", iso_times=False,
                                    fields=["type", "timeLogged", "timeQueued", "rcpt", "dsnDiag"])])
    sim = Simulator("baseline", tmp_path, config=cfg)
    sim.generate(2)
    data = (tmp_path / "acct-2024-06-12-0000.csv").read_bytes()
    assert data.startswith(b"type,timeLogged,timeQueued,rcpt,dsnDiag\r\n")
    assert data.count(b"\n") == data.count(b"\r\n")
    rows = list(csv.reader(io.StringIO(data.decode(), newline="")))[1:]
    assert rows and all(r[1].isdigit() and r[2].isdigit() for r in rows)
    assert all(sim.start <= int(r[1]) < sim.start + 120 and int(r[2]) <= int(r[1]) for r in rows)


def test_split_writes_leave_a_partial_line_then_complete_it(tmp_path: Path) -> None:
    spec = FileSpec(name="acct", records=["d"], split_writes=True, fields=["type", "rcpt", "dsnDiag"])
    f = AcctFile(tmp_path, spec, tz_of(0))
    rows = [{"type": "d", "rcpt": f"u{i}@gmail.com", "dsnDiag": "smtp;250 2.0.0 OK, queued"} for i in range(3)]
    f.write(rows, 1718179200)
    path = tmp_path / "acct-2024-06-12-0000.csv"
    first = path.read_bytes()
    assert not first.endswith(b"\n")  # the last line is cut in two
    assert first.count(b"\n") == 3  # header + 2 complete records
    f.write([], 1718179201)  # the next tick completes it
    f.close()
    assert path.read_bytes() == b'type,rcpt,dsnDiag\n' + b"".join(
        f'd,u{i}@gmail.com,"smtp;250 2.0.0 OK, queued"\n'.encode() for i in range(3))


def test_split_and_plain_files_have_the_same_bytes(tmp_path: Path) -> None:
    for split in (False, True):
        cfg = SimConfig(files=[FileSpec(name="acct", records=["d", "b"], split_writes=split)])
        Simulator("noise", tmp_path / str(split), config=cfg, seed=9).generate(3)
    a = (tmp_path / "False" / "acct-2024-06-12-0000.csv").read_bytes()
    assert a == (tmp_path / "True" / "acct-2024-06-12-0000.csv").read_bytes()


_TEXT = st.text(alphabet=st.sampled_from('ab ,"\'xyz;:<>@.0-'), max_size=20)


@given(st.lists(_TEXT, min_size=1, max_size=8))
def test_quoting_round_trips_through_the_csv_module(values: list[str]) -> None:
    line = csv_line(values, "\n")
    assert next(csv.reader(io.StringIO(line))) == (values if values != [""] else [])
    buf = io.StringIO()
    csv.writer(buf, lineterminator="\n").writerow(values)
    if values != [""]:  # csv quotes a lone empty field; PMTA never writes a one-column row
        assert buf.getvalue() == line


def test_quoting_only_when_needed() -> None:
    assert csv_line(["d", "plain value", "a,b", 'say "hi"', ""], "\r\n") == 'd,plain value,"a,b","say ""hi""",\r\n'


def test_simulated_values_round_trip(tmp_path: Path) -> None:
    Simulator("gmail-throttle", tmp_path).generate(25)
    rows = read_rows(next(tmp_path.glob("diag-*.csv")))
    header, body = rows[0], rows[1:]
    diag = header.index("dsnDiag")
    esmtp = header.index("dlvEsmtpAvailable")
    throttled = [r for r in body if "4.7.28" in r[diag]]
    assert throttled, "the 421 4.7.28 deferrals are in the diag file"
    assert all("," in r[diag] for r in throttled)  # quoted on disk, whole after parsing
    assert all(r[diag].endswith(" - gsmtp") for r in throttled)
    assert {r[esmtp] for r in throttled} == {"SIZE,8BITMIME,STARTTLS,ENHANCEDSTATUSCODES,PIPELINING,CHUNKING,SMTPUTF8"}


def test_delete_after_removes_closed_files_whose_last_write_is_older(tmp_path: Path) -> None:
    """PMTA's `delete-after` (pmta-formats.md §2): closed files older than it are deleted; the current file and
    the recent closed ones stay. The demo sets it so a demo left running does not fill its disk (a tmpfs in the
    compose file)."""
    limit = 64 * 1024
    cfg = SimConfig(files=[FileSpec(name="acct", records=["d", "b"], max_size=limit, delete_after="2m")])
    sim = Simulator("baseline", tmp_path, config=cfg, seed=5)
    sim.generate(8, close=False)
    written = sim.files.files[0].paths
    kept = sorted(tmp_path.glob("acct-*.csv"))
    assert len(written) >= 8 and 2 <= len(kept) < len(written)
    assert kept == written[len(written) - len(kept):]  # the newest, the current one among them
    assert sim.files.files[0].current == kept[-1]
    sim.close()


def test_files_are_kept_without_delete_after(tmp_path: Path) -> None:
    cfg = SimConfig(files=[FileSpec(name="acct", records=["d", "b"], max_size=64 * 1024)])
    sim = Simulator("baseline", tmp_path, config=cfg, seed=5)
    sim.generate(8)
    assert sorted(tmp_path.glob("acct-*.csv")) == sim.files.files[0].paths


def test_move_to_moves_each_closed_file_and_closes_one_every_move_interval(tmp_path: Path) -> None:
    """PMTA's `move-to DIR` (pmta-formats.md §1.5): every `move-interval` the current file is closed and moved to
    DIR, the next one started in place with the next NNNN; `delete-after` applies only without move-to. The
    simulator had no move-to, so nothing exercised the exporter's `moved_to` but its own tests."""
    cfg = SimConfig(files=[FileSpec(name="acct", records=["d", "b"], move_to="archive", move_interval="5m",
                                    delete_after="1m")])
    sim = Simulator("baseline", tmp_path, config=cfg, seed=5)
    truth = sim.generate(17, close=False)
    acct = sim.files.files[0]
    moved = sorted((tmp_path / "archive").glob("acct-*.csv"))
    live = sorted(tmp_path.glob("acct-*.csv"))
    assert [p.name for p in moved] == [f"acct-2024-06-12-{n:04d}.csv" for n in range(3)]  # closed at 5, 10, 15m
    assert live == [acct.current] and acct.current.name == "acct-2024-06-12-0003.csv"
    assert acct.paths == [*moved, *live]  # the ground truth names each file where it is
    rows = [r for p in acct.paths for r in read_rows(p)[1:]]
    assert len(rows) == truth.count(type=("d", "b"))
    sim.close()
