"""The state database's series values: the JSON text a checkpoint writes for each changed series."""

from __future__ import annotations

import json
import math

from hypothesis import given
from hypothesis import strategies as st

from exporter.state import series_json

numbers = st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.integers(-(2**70), 2**70))


@given(st.one_of(numbers, st.lists(numbers, max_size=14)))
def test_a_series_value_is_written_as_json_dumps_writes_it(value: float | int | list[float | int]) -> None:
    assert series_json(value) == json.dumps(value)


def test_histograms_and_counters_read_back_exactly() -> None:
    hist = [3.0, 0.0, 12.0, 1e-07, 5e+20, 0.1 + 0.2, 1764072000.123456]
    assert series_json(hist) == "[3.0, 0.0, 12.0, 1e-07, 5e+20, 0.30000000000000004, 1764072000.123456]"
    assert json.loads(series_json(hist)) == hist
    assert json.loads(series_json(7)) == 7 and json.loads(series_json(2.5)) == 2.5
    assert series_json(math.inf) == "Infinity" and series_json([1.0, math.nan]) == "[1.0, NaN]"


async def test_series_are_encoded_before_the_checkpoint_takes_the_write_lock(tmp_path, monkeypatch) -> None:
    """The correlator process shares the database's one write lock: a checkpoint of thousands of series must
    not hold it while Python builds their text (~30-50 ms a second at 20k records/s)."""
    import sqlite3

    from exporter import state
    from exporter.state import Commit, StateStore

    store = StateStore(tmp_path / "watchtower.db")
    await store.open()
    conn = store._conn  # noqa: SLF001 - the writer's own connection: is it inside a transaction?
    seen: list[bool] = []

    def spy(value: object) -> str:
        seen.append(conn.in_transaction)
        return json.dumps(value)

    monkeypatch.setattr(state, "series_json", spy)
    series = [("pmta_delivered_total", ("vmta-1", "pool-a", f"isp{i}"), float(i)) for i in range(50)]
    await store.write_checkpoint(Commit(series=series))
    await store.close()
    assert seen == [False] * 50
    stored = sqlite3.connect(tmp_path / "watchtower.db").execute("SELECT count(*) FROM wt_series").fetchone()[0]
    assert stored == 50


async def test_a_checkpoint_that_took_a_new_identity_is_saved_with_it(tmp_path) -> None:
    """The tailer re-keys a file restored under a new inode to its checkpoint: saved with the old (device, inode), the
    next start took it for a new identity again (a warning at every start)."""
    from exporter.filestream import Checkpoint
    from exporter.state import Commit, StateStore

    store = StateStore(tmp_path / "watchtower.db")
    await store.open()
    cp = Checkpoint("f1", "acct", "/l/acct.csv", 1, 100, b"fp", 10, 2, "type")
    await store.write_checkpoint(Commit(checkpoints=[cp]))
    await store.write_checkpoint(Commit(checkpoints=[Checkpoint("f1", "acct", "/l/acct.csv", 2, 200, b"fp", 20, 3,
                                                                "type")]))
    await store.close()
    again = StateStore(tmp_path / "watchtower.db")
    loaded = await again.open()
    await again.close()
    assert [(c.file_id, c.dev, c.ino, c.offset) for c in loaded.checkpoints] == [("f1", 2, 200, 20)]
