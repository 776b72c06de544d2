"""The rotation matrix against a running `watchtower run`: totals in /metrics equal records written.

Each scenario runs twice: stepwise (the daemon catches up between steps) and `race` (all steps
back to back, so rotation, deletion or truncation happens while the daemon is mid-read).
"""

from __future__ import annotations

import os
import random
import sqlite3
import time
from contextlib import closing
from pathlib import Path

import pytest

from tests.conftest import ACCT_HEADER, AcctWriter, total, write_config

pytestmark = pytest.mark.integration


def delivered(samples, **labels) -> float:
    return total(samples, "pmta_delivered_total", **labels)


def caught_up(wt, writer: AcctWriter) -> None:
    wt.wait_for(lambda s: delivered(s) >= writer.total)


def assert_exact(wt, writer: AcctWriter) -> None:
    wt.wait_for(lambda s: delivered(s) >= writer.total)
    samples = wt.settle()
    for vmta, n in writer.written.items():
        assert delivered(samples, vmta=vmta) == n, vmta
    assert delivered(samples) == writer.total


@pytest.fixture(params=[False, True], ids=["stepwise", "race"])
def race(request) -> bool:
    return bool(request.param)


def _in_form(tmp_path: Path, form: str, **overrides) -> tuple[AcctWriter, Path]:
    """A writer of PMTA's CSV or JSON accounting form (one object per line, no header) and a config reading it."""
    writer = AcctWriter(tmp_path / "logs", form=form)
    sources = [{"name": "acct", "paths": [str(tmp_path / "logs" / f"acct-*.{form}")]}]
    return writer, write_config(tmp_path, sources, **overrides)


FORMS = pytest.mark.parametrize("form", ["csv", "json"])
"""The JSON form has no header: each new file, and a restart mid-file, must take the form from its records."""
RACE_AND_FORMS = pytest.mark.parametrize(("race", "form"), [(False, "csv"), (True, "csv"), (False, "json")],
                                         ids=["stepwise-csv", "race-csv", "stepwise-json"])
"""Both forms stepwise; the race, which exercises the tailer whatever the form, in CSV only."""


@RACE_AND_FORMS
def test_new_file_mid_stream(tmp_path: Path, watchtower_factory, race: bool, form: str):
    (tmp_path / "logs").mkdir()
    writer, config = _in_form(tmp_path, form)
    wt = watchtower_factory(config).start()
    writer.write(300, "vmta-1")
    if not race:
        caught_up(wt, writer)
    writer.rotate()  # PMTA starts acct-...-0001.csv with its own header
    writer.write(200, "vmta-2")
    writer.rotate()
    writer.write(100, "vmta-1")
    assert_exact(wt, writer)
    samples = wt.scrape()
    assert total(samples, "watchtower_files_followed", source="acct") == 3
    assert total(samples, "watchtower_parse_errors_total") == 0


@RACE_AND_FORMS
def test_partial_line_completed_later(tmp_path: Path, watchtower_factory, race: bool, form: str):
    (tmp_path / "logs").mkdir()
    writer, config = _in_form(tmp_path, form)
    wt = watchtower_factory(config).start()
    writer.write(10)
    line = writer.line(10_000, "vmta-3") + "\n"
    with open(writer.path, "a") as f:
        f.write(line[:37])
        f.flush()
    if not race:
        caught_up(wt, writer)
        samples = wt.settle()
        assert delivered(samples, vmta="vmta-3") == 0  # half a line is never counted
    with open(writer.path, "a") as f:
        f.write(line[37:])
    writer.written["vmta-3"] = 1
    writer.write(5)
    assert_exact(wt, writer)
    assert total(wt.scrape(), "watchtower_parse_errors_total") == 0


def test_file_deleted_after_rotation_is_drained(tmp_path: Path, watchtower_factory, race: bool):
    (tmp_path / "logs").mkdir()
    writer = AcctWriter(tmp_path / "logs")
    wt = watchtower_factory(write_config(tmp_path)).start()
    writer.write(100)
    caught_up(wt, writer)  # the daemon now holds the file open
    old = writer.path
    writer.write(250, "vmta-2")  # written just before PMTA's delete-after removes it
    if not race:
        caught_up(wt, writer)
    os.unlink(old)
    writer.rotate()
    writer.write(50, "vmta-4")
    assert_exact(wt, writer)
    samples = wt.settle()
    assert total(samples, "watchtower_rotations_total", source="acct") == 1
    assert total(samples, "watchtower_files_followed", source="acct") == 1


def test_file_moved_out_of_the_glob_is_drained(tmp_path: Path, watchtower_factory, race: bool):
    (tmp_path / "logs").mkdir()
    (tmp_path / "moved").mkdir()
    writer = AcctWriter(tmp_path / "logs")
    wt = watchtower_factory(write_config(tmp_path)).start()
    writer.write(100)
    caught_up(wt, writer)  # the daemon now holds the file open
    writer.write(80, "vmta-2")  # written just before PMTA's move-to takes it out of the glob
    if not race:
        caught_up(wt, writer)
    old = writer.path
    os.rename(old, tmp_path / "moved" / old.name)  # PMTA's move-to
    writer.rotate()
    writer.write(20)
    assert_exact(wt, writer)


def test_truncated_file_is_read_again_from_the_start(tmp_path: Path, watchtower_factory, race: bool):
    (tmp_path / "logs").mkdir()
    writer = AcctWriter(tmp_path / "logs")
    wt = watchtower_factory(write_config(tmp_path)).start()
    writer.write(400)
    caught_up(wt, writer)  # read before the truncation: what it cut would be lost to any reader
    with open(writer.path, "w") as f:  # truncate in place (copytruncate-style) and start over
        f.write(ACCT_HEADER + "\n")
    if not race:  # the daemon sees the file empty before it grows again
        wt.wait_for(lambda s: total(s, "watchtower_truncations_total", source="acct") >= 1)
    writer.write(30, "vmta-5")
    assert_exact(wt, writer)
    assert total(wt.scrape(), "watchtower_truncations_total", source="acct") == 1


@pytest.mark.parametrize(("worker", "header_again"), [("thread", True), ("process", True), ("thread", False),
                                                      ("process", False)],
                         ids=["thread", "process", "thread-no-header", "process-no-header"])
def test_a_file_truncated_in_place_reaches_the_timelines_under_a_new_id(tmp_path: Path, watchtower_factory,
                                                                       worker: str, header_again: bool):
    """The correlator names a record by (file id, line): the lines after a copytruncate are new records (a new file
    id), not lines 2..31 of the file it already stored. After logrotate's copytruncate PMTA goes on appending
    records without writing its header again (`no-header`): the correlator's own process read them with no header
    (each a missing_header error, no timeline) while the metrics counted them under the header the file had."""
    (tmp_path / "logs").mkdir()
    writer = AcctWriter(tmp_path / "logs")
    wt = watchtower_factory(write_config(tmp_path, correlator={"enabled": True, "worker": worker})).start()
    writer.write(40)
    caught_up(wt, writer)
    wt.committed()
    with open(writer.path, "w") as f:
        f.write(ACCT_HEADER + "\n" if header_again else "")
    wt.wait_for(lambda s: total(s, "watchtower_truncations_total", source="acct") >= 1)
    writer.write(30, "vmta-5")
    assert_exact(wt, writer)
    wt.committed()
    with closing(sqlite3.connect(tmp_path / "state" / "watchtower.db")) as db:
        assert db.execute("SELECT count(*) FROM corr_events").fetchone() == (70,)
        assert db.execute("SELECT count(*) FROM corr_timelines WHERE vmta = 'vmta-5'").fetchone() == (30,)
    assert total(wt.scrape(), "watchtower_truncations_total", source="acct") == 1


def test_records_appended_without_a_header_after_a_copytruncate_while_the_daemon_was_down_reach_the_timelines(
        tmp_path: Path, watchtower_factory):
    """The same copytruncate while the daemon is down: the correlator's own process reads the new file id with the
    header the file had (it read none there: 30 missing_header errors, 40 events)."""
    (tmp_path / "logs").mkdir()
    writer = AcctWriter(tmp_path / "logs")
    wt = watchtower_factory(write_config(tmp_path, correlator={"enabled": True, "worker": "process"})).start()
    writer.write(40)
    caught_up(wt, writer)
    wt.committed()
    wt.stop()
    with open(writer.path, "w"):
        pass
    writer.write(30, "vmta-5")
    wt.start()
    assert_exact(wt, writer)
    wt.committed()
    with closing(sqlite3.connect(tmp_path / "state" / "watchtower.db")) as db:
        assert db.execute("SELECT count(*) FROM corr_events").fetchone() == (70,)
        assert db.execute("SELECT count(*) FROM corr_timelines WHERE vmta = 'vmta-5'").fetchone() == (30,)
    assert total(wt.scrape(), "watchtower_parse_errors_total") == 0


def _read_then_restart_with(tmp_path: Path, watchtower_factory, edit) -> tuple[object, AcctWriter]:
    """A daemon that read 40 records, stopped; `edit(config)` changes its sources; 5 more records; started again."""
    import yaml

    (tmp_path / "logs").mkdir()
    writer = AcctWriter(tmp_path / "logs")
    config = write_config(tmp_path)
    wt = watchtower_factory(config).start()
    writer.write(40)
    caught_up(wt, writer)
    wt.stop()
    data = yaml.safe_load(config.read_text())
    edit(data)
    config.write_text(yaml.safe_dump(data))
    writer.write(5)
    wt.start()
    assert_exact(wt, writer)
    return wt, writer


def test_a_renamed_source_resumes_its_files_without_counting_them_again(tmp_path: Path, watchtower_factory):
    """The pmta_* counters carry no source label: a source renamed in the config (or whose derived name changed with
    its first glob) must not read its files again from byte 0 at the next start."""
    def rename(data: dict) -> None:
        data["sources"][0]["name"] = "main"

    wt, _ = _read_then_restart_with(tmp_path, watchtower_factory, rename)
    assert "source acct is no longer configured; resuming for source main at byte" in wt.log.read_text()
    wt.stop()
    with closing(sqlite3.connect(tmp_path / "state" / "watchtower.db")) as db:
        assert db.execute("SELECT source, count(*) FROM wt_checkpoints GROUP BY source").fetchall() == [("main", 1)]


def test_a_renamed_source_whose_old_name_a_new_source_takes_resumes_its_files(tmp_path: Path, watchtower_factory):
    """Review 2026-12-05: `acct` renamed `pmta-acct` and a new source named `acct` for the FBL files: every acct
    file was read again from the start (the old name's current types compared) and every delivery counted twice,
    said at INFO. The state database keeps the record types each file was read for."""
    def rename_and_reuse(data: dict) -> None:
        data["sources"][0]["name"] = "pmta-acct"
        data["sources"].append({"name": "acct", "paths": [str(tmp_path / "logs" / "fbl-*.csv")], "records": ["f"]})

    wt, _ = _read_then_restart_with(tmp_path, watchtower_factory, rename_and_reuse)
    text = wt.log.read_text()
    assert "now matched by source pmta-acct, not acct, which kept every record type pmta-acct keeps; resuming" in text
    assert "reading it from the start" not in text
    wt.stop()
    with closing(sqlite3.connect(tmp_path / "state" / "watchtower.db")) as db:
        assert db.execute("SELECT source, records, count(*) FROM wt_checkpoints GROUP BY source").fetchall() == [
            ("pmta-acct", "*", 1)]


def test_files_that_appear_while_the_daemon_is_down(tmp_path: Path, watchtower_factory):
    (tmp_path / "logs").mkdir()
    writer = AcctWriter(tmp_path / "logs")
    wt = watchtower_factory(write_config(tmp_path)).start()
    writer.write(120)
    caught_up(wt, writer)
    assert wt.stop() == 0
    writer.write(30)  # appended to the file it knew
    writer.rotate()
    writer.write(70, "vmta-2")  # a file it has never seen
    writer.rotate()
    writer.write(10, "vmta-3")
    wt.start()
    assert_exact(wt, writer)


def _stopped_mid_file(tmp_path: Path, watchtower_factory, **overrides) -> tuple[object, AcctWriter, Path]:
    """A daemon that read 100 records of a file, was stopped, and 80 more were appended to that file while it
    was down (then PMTA closes the file: what happens to it next is each test's case)."""
    (tmp_path / "logs").mkdir(exist_ok=True)
    writer = AcctWriter(tmp_path / "logs")
    wt = watchtower_factory(write_config(tmp_path, **overrides)).start()
    writer.write(100)
    caught_up(wt, writer)
    assert wt.stop() == 0
    writer.write(80, "vmta-2")
    return wt, writer, writer.path


@pytest.mark.parametrize("correlator", [False, True], ids=["metrics", "correlator"])
def test_a_file_moved_to_move_to_while_the_daemon_is_down_is_read_to_its_end(tmp_path: Path, watchtower_factory,
                                                                            correlator: bool):
    """PMTA's `move-to` (stock config: every 5m) moves the closed file out of the globs; a restart finds the file
    it was reading among the source's `moved_to` globs by its identity and reads the 80 records it had not, into the
    metrics and (correlator on, its own process) into the timelines."""
    (tmp_path / "archive").mkdir()
    sources = [{"name": "acct", "paths": [str(tmp_path / "logs" / "acct-*.csv")],
                "moved_to": [str(tmp_path / "archive" / "acct-*.csv")]}]
    wt, writer, old = _stopped_mid_file(tmp_path, watchtower_factory, sources=sources,
                                        correlator={"enabled": correlator, "worker": "process"})
    os.rename(old, tmp_path / "archive" / old.name)
    writer.rotate()
    writer.write(20, "vmta-3")
    older = tmp_path / "archive" / "acct-2026-11-24-0000.csv"
    older.write_text(ACCT_HEADER + "\n")  # an older file there (changed long before the stop): not read
    os.utime(older, (1_700_000_000, 1_700_000_000))
    wt.start()
    assert_exact(wt, writer)
    log = wt.log.read_text()
    assert f"moved to {tmp_path / 'archive' / old.name} while the daemon was down" in log
    assert "acct-2026-11-24-0000.csv" not in log
    if correlator:
        wt.committed()
        with closing(sqlite3.connect(tmp_path / "state" / "watchtower.db")) as db:
            assert db.execute("SELECT count(*) FROM corr_events").fetchone() == (200,)


def test_a_file_renamed_in_place_while_the_daemon_is_down_is_read_to_its_end(tmp_path: Path, watchtower_factory):
    """Without `moved_to`, the directory the file was read in is searched too (`mv acct-...csv acct-...csv.done`)."""
    wt, writer, old = _stopped_mid_file(tmp_path, watchtower_factory)
    os.rename(old, old.with_name(old.name + ".done"))
    writer.rotate()
    writer.write(20, "vmta-3")
    wt.start()
    assert_exact(wt, writer)


def test_a_file_gone_while_the_daemon_is_down_is_reported_once_with_the_line_reading_stopped_at(
        tmp_path: Path, watchtower_factory):
    wt, writer, old = _stopped_mid_file(tmp_path, watchtower_factory)
    os.unlink(old)
    writer.written["vmta-2"] -= 80  # gone with the file: what nobody can read any more
    writer.rotate()
    writer.write(20, "vmta-3")
    wt.start()
    assert_exact(wt, writer)
    wt.stop()
    lines = [line for line in wt.log.read_text().splitlines() if "while the daemon was down" in line]
    assert len(lines) == 1, lines
    assert f"{old.name}: gone while the daemon was down" in lines[0]
    assert "any records after line 101 (byte " in lines[0] and lines[0].endswith(") were not read")
    wt.start()  # reported once: the checkpoint is marked gone, not searched for again
    wt.stop()
    assert len([line for line in wt.log.read_text().splitlines() if "while the daemon was down" in line]) == 1


@FORMS
def test_kill_9_at_random_points_then_restart(tmp_path: Path, watchtower_factory, form: str):
    (tmp_path / "logs").mkdir()
    writer, config = _in_form(tmp_path, form, tail={"checkpoint_interval": 0.05})
    rng = random.Random(20261125)
    wt = watchtower_factory(config).start()
    for _round in range(12):
        for _ in range(rng.randint(1, 4)):
            writer.write(rng.randint(1, 400), rng.choice(["vmta-1", "vmta-2", "vmta-3"]))
            if rng.random() < 0.3:
                writer.rotate()
        # kill at a random moment: sometimes mid-read, sometimes after catching up
        if rng.random() < 0.5:
            time.sleep(rng.uniform(0.0, 0.3))
        else:
            caught_up(wt, writer)
        wt.kill9()
        if rng.random() < 0.5:  # more traffic while it is down
            writer.write(rng.randint(1, 200), "vmta-4")
        wt.start()
    assert_exact(wt, writer)
    assert total(wt.scrape(), "watchtower_parse_errors_total") == 0
