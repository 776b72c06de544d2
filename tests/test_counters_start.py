"""watchtower_counters_start_timestamp_seconds: when the pmta_* counters began (the state database's creation). The
critical PmtaDeliveryStalled compares it with its value at PMTA's last queue report (rules/recording.yaml,
pmta-host.rules) to know whether what was finished since that report can be told: the value must stay the same
across restarts that keep the counters, and change when they begin again from zero."""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path

import pytest

from tests.conftest import AcctWriter, Watchtower, total, write_config

NAME = "watchtower_counters_start_timestamp_seconds"


def test_kept_across_restarts_and_new_when_the_state_database_is_moved_aside(tmp_path: Path) -> None:
    config = write_config(tmp_path)
    (tmp_path / "logs").mkdir(exist_ok=True)
    AcctWriter(tmp_path / "logs").write(3)
    before = time.time()
    wt = Watchtower(config).start()
    try:
        first = wt.wait_for(lambda s: total(s, "pmta_delivered_total") == 3)[(NAME, ())]
        wt.stop()
        created = sqlite3.connect(tmp_path / "state" / "watchtower.db").execute(
            "SELECT value FROM wt_meta WHERE key = 'created'").fetchone()[0]
        assert before - 1 < first < time.time() and first == float(created)
        wt.start()
        assert wt.wait_for(lambda s: total(s, "pmta_delivered_total") == 3)[(NAME, ())] == first
        wt.stop()
        (tmp_path / "state").rename(tmp_path / "state.aside")  # the runbook's "start the counters again"
        wt.start()
        again = wt.wait_for(lambda s: total(s, "pmta_delivered_total") == 3)[(NAME, ())]
        assert again > first
    finally:
        if wt.proc is not None:
            wt.stop()


def test_a_database_that_does_not_say_when_it_was_created_reads_0(tmp_path: Path) -> None:
    """0: the counters began before any report the rules hold (no restart is assumed where none can be told)."""
    config = write_config(tmp_path)
    wt = Watchtower(config).start()
    try:
        assert wt.scrape()[(NAME, ())] > 0
        wt.stop()
        with sqlite3.connect(tmp_path / "state" / "watchtower.db") as conn:
            conn.execute("UPDATE wt_meta SET value = 'not a time' WHERE key = 'created'")
        wt.start()
        assert wt.scrape()[(NAME, ())] == 0
    finally:
        if wt.proc is not None:
            wt.stop()


@pytest.mark.parametrize(("stored", "read"), [("1796662068.25", 1796662068.25), ("inf", 0.0), ("nan", 0.0),
                                              ("-5", 0.0), ("0", 0.0), ("", 0.0), (None, 0.0), ("1e400", 0.0)])
def test_a_stored_creation_time_is_a_time_or_0(stored: str | None, read: float) -> None:
    """Served as it is, `+Inf`, `NaN` or a negative time would make the rules' comparison of starts meaningless
    (NaN equals nothing: a restart flagged at every evaluation)."""
    from exporter.state import _created

    assert _created(stored) == read
