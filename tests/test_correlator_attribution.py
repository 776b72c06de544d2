"""vmta/pool attribution of f and rb rows: Message-Id, then jobId + rcpt, then rcpt + orig in the window."""

from __future__ import annotations

from pathlib import Path

from correlator import CorrelatorSink
from exporter.config import CorrelatorConfig
from exporter.records import RecordBatch
from tests.test_correlator_support import (
    ACCT_0,
    ACCT_1,
    BOUNCE,
    DIAG_0,
    FBL,
    Harness,
    batch,
    class_of,
    isp_of,
)

# FBL rows: Message-Id only (alice), jobId + rcpt (bob), rcpt + orig (dave), nothing (eve)
EXPECTED_FBL = [("vmta1", "pool-a"), ("vmta1", "pool-a"), ("vmta3", ""), None]


def test_from_rows_observed_but_not_yet_written(tmp_path: Path) -> None:
    h = Harness(tmp_path)
    for b in (ACCT_0, ACCT_1, DIAG_0):
        h.sink.observe(b)
    assert h.sink.lookup_vmta(FBL.columns, FBL.rows) == EXPECTED_FBL
    assert h.sink.lookup_vmta(BOUNCE.columns, BOUNCE.rows) == [("vmta2", "pool-b"), ("vmta1", "pool-a")]
    h.close()


def test_from_the_store_after_commit_and_memory_is_released(tmp_path: Path) -> None:
    h = Harness(tmp_path)
    h.commit(ACCT_0, ACCT_1, DIAG_0)  # commit() ends with maintain(), i.e. after the COMMIT
    assert h.sink.lookup_vmta(FBL.columns, FBL.rows) == EXPECTED_FBL
    assert len(h.sink.recent) == 0
    assert h.sink.lookup_vmta(BOUNCE.columns, BOUNCE.rows) == [("vmta2", "pool-b"), ("vmta1", "pool-a")]
    h.close()


def test_rows_written_but_not_committed_are_still_found(tmp_path: Path) -> None:
    h = Harness(tmp_path)
    for b in (ACCT_0, ACCT_1):
        h.sink.observe(b)
    h.conn.execute("BEGIN IMMEDIATE")
    h.sink.write(h.conn, [ACCT_0, ACCT_1])
    # the read connection cannot see the open transaction; the in-memory index answers
    assert h.sink.lookup_vmta(FBL.columns, FBL.rows) == EXPECTED_FBL
    h.conn.execute("COMMIT")
    h.sink.maintain(h.conn)
    assert len(h.sink.recent) == 0
    assert h.sink.lookup_vmta(FBL.columns, FBL.rows) == EXPECTED_FBL
    h.close()


def test_each_level_separately(tmp_path: Path) -> None:
    h = Harness(tmp_path)
    h.commit(ACCT_0, ACCT_1)
    rows = batch("/l/fbl.csv", """
type,timeLogged,orig,rcpt,jobId,header_Message-Id
f,2024-05-02 08:00:00+0000,x@y.example,someone@else.example,,m3@shop.example
f,2024-05-02 08:00:00+0000,x@y.example,bob@yahoo.com,J1,
f,2024-05-02 08:00:00+0000,news@shop.example,Bob@Yahoo.com,,
f,2024-05-02 08:00:00+0000,other@shop.example,bob@yahoo.com,,
f,2024-05-02 08:00:00+0000,x@y.example,bob@yahoo.com,J9,<unknown@id>
""")
    assert h.sink.lookup_vmta(rows.columns, rows.rows) == [
        ("vmta2", "pool-b"),  # Message-Id wins over a wrong rcpt/orig
        ("vmta1", "pool-a"),  # jobId + rcpt
        ("vmta1", "pool-a"),  # rcpt + orig, case-insensitive
        None,  # rcpt matches but orig does not
        None,  # unknown ids, no rcpt + orig match
    ]
    h.close()


def test_fallback_window(tmp_path: Path) -> None:
    late = batch("/l/fbl.csv", """
type,timeLogged,orig,rcpt
f,2024-05-20 08:00:00+0000,promo@other.example,dave@gmail.com
""")
    h = Harness(tmp_path)
    h.commit(ACCT_1)
    assert h.sink.lookup_vmta(late.columns, late.rows) == [None]  # 19 days > the 7-day default
    h.close()
    (tmp_path / "wide").mkdir()
    h = Harness(tmp_path / "wide", CorrelatorConfig(fallback_window="30d"))
    h.commit(ACCT_1)
    assert h.sink.lookup_vmta(late.columns, late.rows) == [("vmta3", "")]
    h.commit(late)  # and the timeline links the same way
    assert h.conn.execute("SELECT count(*) FROM corr_timelines").fetchone()[0] == 2
    h.close()


def test_before_the_store_exists(tmp_path: Path) -> None:
    sink = CorrelatorSink(CorrelatorConfig(), tmp_path / "missing" / "state.db", isp_of=isp_of, class_of=class_of)
    assert sink.lookup_vmta(FBL.columns, FBL.rows) == [None, None, None, None]
    sink.observe(ACCT_0)
    assert sink.lookup_vmta(FBL.columns, FBL.rows[:1]) == [("vmta1", "pool-a")]
    sink.close()


def test_batches_written_in_slices_are_released_after_their_last_slice(tmp_path: Path) -> None:
    """The daemon commits big batches in time-sized slices: memory must follow the slices, not leak."""
    from exporter.records import RecordBatch

    h = Harness(tmp_path)
    big = RecordBatch(ACCT_0.source, ACCT_0.path, ACCT_0.columns, frame=ACCT_0.frame, file_id="f-acct")
    assert big.origin is None and len(big) >= 2
    h.sink.observe(big)
    parts = [big.slice(0, 1), big.slice(1, len(big))]
    for i, part in enumerate(parts):
        h.conn.execute("BEGIN IMMEDIATE")
        h.sink.write(h.conn, [part])
        h.conn.execute("COMMIT")
        h.sink.maintain(h.conn)
        assert len(h.sink.recent._seq_of) == (1 if i == 0 else 0)  # the batch is held until its last slice
    assert h.sink.lookup_vmta(FBL.columns, FBL.rows[:1]) == EXPECTED_FBL[:1]
    with h.reader() as r:
        assert r.conn.execute("SELECT count(*) FROM corr_events").fetchone()[0] == len(big)
    h.close()


def test_released_batches_stay_found_until_the_store_has_them(tmp_path: Path) -> None:
    """A slow correlator: batches are let go (their rows are read again from the files later), yet an
    FBL arriving meanwhile still finds its delivery's vmta in memory, across later writes."""
    h = Harness(tmp_path)
    for b in (ACCT_0, ACCT_1, DIAG_0):
        h.sink.observe(b)
        h.sink.release(b)
    h.commit()  # other writes commit meanwhile; the store still lacks these rows
    assert h.sink.lookup_vmta(FBL.columns, FBL.rows) == EXPECTED_FBL
    h.close()


def test_released_batches_are_bounded(tmp_path: Path) -> None:
    from correlator.attribution import RecentDeliveries

    recent = RecentDeliveries(limit=1000, max_batches=3)
    for _ in range(10):
        for b in (ACCT_0, ACCT_1, DIAG_0):
            recent.observe(b)
            recent.release(b)
    assert len(recent._queued) <= 3 and not recent._seq_of  # noqa: SLF001 - the bound is the point


def test_the_index_normalises_fields_as_the_lookup_does(tmp_path: Path) -> None:
    """Unicode spaces around fields, upper case, <> around Message-Ids: the in-memory index (fields
    normalised column-wise) finds what a report's fields (normalised in Python) name, for frame batches
    and row batches alike, each level on its own."""
    deliveries = (
        "type,timeLogged,timeQueued,orig,rcpt,vmta,vmtaPool,jobId,header_Message-Id\n"
        "d,2024-05-01 10:00:00+0000,2024-05-01 09:59:00+0000,News@Shop.example,"
        "\u3000\xa0Ünïcode@Example.COM\x1c,vmta7,pool-u,\x85J9\u2009,\xa0<Mixed.ID@Shop.example>\x1f\n"
        "d,2024-05-01 10:00:00+0000,2024-05-01 09:59:00+0000,\u2003Other@Shop.example,ΣΟΦΟΣ@example.gr,vmta8,,,\n"
    )
    reports = batch("/l/fbl.csv",
                    "type,timeLogged,orig,rcpt,jobId,header_Message-Id\n"
                    "f,2024-05-01 11:00:00+0000,,,,<Mixed.ID@Shop.example>\n"  # Message-Id alone
                    "f,2024-05-01 11:00:00+0000,,ünïcode@example.com,J9,\n"  # jobId + rcpt
                    "f,2024-05-01 11:00:00+0000,other@shop.example,σοφος@EXAMPLE.GR,,\n"  # rcpt + orig
                    "f,2024-05-01 11:00:00+0000,other@shop.example,σοφοσ@example.gr,,\n")  # not the same address
    expected = [("vmta7", "pool-u"), ("vmta7", "pool-u"), ("vmta8", ""), None]
    for name, as_rows in (("frame", False), ("rows", True)):
        (tmp_path / name).mkdir()
        h = Harness(tmp_path / name)
        b = batch("/l/acct.csv", deliveries)  # a row batch (the parser's exact fallback path)
        if not as_rows:
            b = RecordBatch(b.source, b.path, b.columns, frame=b.frame)  # the columnar form, as the parser builds it
            assert b._rows is None
        h.sink.observe(b)
        assert h.sink.lookup_vmta(reports.columns, reports.rows) == expected, name
        h.close()
