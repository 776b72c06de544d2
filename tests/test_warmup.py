"""exporter.warmup: the newest part of the correlator's backlog shown to the daemon's memory of deliveries."""

from __future__ import annotations

from pathlib import Path

from exporter.records import Columns, RecordBatch
from exporter.spans import span_at
from exporter.warmup import warm
from tests.conftest import ACCT_HEADER, d_line


class Recording:
    def __init__(self) -> None:
        self.observed: list[RecordBatch] = []
        self.released: list[RecordBatch] = []

    def observe(self, batch: RecordBatch) -> None:
        self.observed.append(batch)

    def release(self, batch: RecordBatch) -> None:
        self.released.append(batch)


def _file(tmp_path: Path, name: str, lines: list[str]) -> tuple[Path, int]:
    path = tmp_path / name
    head = ACCT_HEADER + "\n"
    path.write_text(head + "".join(line + "\n" for line in lines))
    return path, len(head.encode())


def _span(path: Path, start: int, allowed: frozenset[str] | None = None):  # type: ignore[no-untyped-def]
    st = path.stat()
    return span_at("f1", "acct", str(path), st.st_dev, st.st_ino, (start, 1, ACCT_HEADER), st.st_size, allowed)


def test_the_newest_whole_lines_within_the_budget_are_shown_and_released(tmp_path: Path) -> None:
    lines = [d_line(n) for n in range(1000)]
    path, start = _file(tmp_path, "acct-1.csv", lines)
    span = _span(path, start)
    budget = sum(len(line) + 1 for line in lines[-37:]) + 5  # 37 whole lines and part of the one before
    sink = Recording()
    assert warm([span], sink, budget) == 37
    rcpts = [row[batch.columns.rcpt] for batch in sink.observed for row in batch.rows]
    assert rcpts == [f"u{n}@gmail.com" for n in range(963, 1000)]
    assert [id(b) for b in sink.released] == [id(b) for b in sink.observed]
    assert (span.start, span.line_no) == (start, 1)  # the correlator's own span is not moved


def test_a_budget_is_shared_by_the_ranges_and_reports_are_not_read(tmp_path: Path) -> None:
    small, s_start = _file(tmp_path, "acct-1.csv", [d_line(n) for n in range(3)])
    big_lines = [d_line(n) for n in range(100, 1100)]
    big, b_start = _file(tmp_path, "acct-2.csv", big_lines)
    fbl, f_start = _file(tmp_path, "fbl-1.csv", [d_line(n) for n in range(5)])
    sink = Recording()
    small_bytes = small.stat().st_size - s_start
    budget = small_bytes + sum(len(line) + 1 for line in big_lines[-20:])
    shown = warm([_span(big, b_start), _span(fbl, f_start, frozenset({"f"})), _span(small, s_start)], sink, budget)
    assert shown == 3 + 20  # the small range whole, the rest of the budget to the big one's newest lines
    assert all(isinstance(b.columns, Columns) for b in sink.observed)


def test_a_file_gone_since_is_skipped_without_a_word(tmp_path: Path) -> None:
    path, start = _file(tmp_path, "acct-1.csv", [d_line(n) for n in range(10)])
    span = _span(path, start)
    path.unlink()
    assert warm([span], Recording()) == 0


def test_a_range_from_the_files_first_byte_cut_to_its_tail_takes_the_header_line(tmp_path: Path) -> None:
    """The correlator had stored nothing of the file (a rotation while it was behind): its range starts before the
    header line, with no columns. Cut to its newest lines, the piece was parsed without a header: no row at all
    (review of 2026-12-05)."""
    lines = [d_line(n) for n in range(1000)]
    path, _start = _file(tmp_path, "acct-1.csv", lines)
    st = path.stat()
    span = span_at("f1", "acct", str(path), st.st_dev, st.st_ino, (0, 0, ""), st.st_size, None)
    sink = Recording()
    budget = sum(len(line) + 1 for line in lines[-37:]) + 5
    assert warm([span], sink, budget) == 37
    assert [row[b.columns.vmta] for b in sink.observed for row in b.rows] == ["vmta-1"] * 37


def test_a_tail_after_a_header_line_written_mid_file_is_read_with_that_header(tmp_path: Path) -> None:
    """PMTA wrote a new header line (other fields, another order) inside the range: the tail was parsed with the
    header in force at the range's start, its columns shifted (vmta read from another field)."""
    path, start = _file(tmp_path, "acct-1.csv", [d_line(n) for n in range(100)])
    with path.open("a") as f:
        f.write("type,timeLogged,vmta,rcpt,vmtaPool\n")
        f.writelines(f"d,2026-11-25 12:00:00+0000,vmta-new,v{n}@gmail.com,pool-b\n" for n in range(100))
    sink = Recording()
    budget = 10 * len("d,2026-11-25 12:00:00+0000,vmta-new,v99@gmail.com,pool-b\n")
    assert warm([_span(path, start)], sink, budget) == 10
    assert {(row[b.columns.vmta], row[b.columns.vmtaPool]) for b in sink.observed for row in b.rows} == {
        ("vmta-new", "pool-b")}


def test_ranges_are_shown_in_the_order_they_were_read_not_by_size(tmp_path: Path) -> None:
    """The memory answers a key with the newest row it was shown: ranges shown smallest first (the order the budget
    is shared in) could show an older file's delivery after a newer one's (a review of this round's changes)."""
    old, o_start = _file(tmp_path, "acct-1.csv", [d_line(n, vmta="vmta-old") for n in range(50)])
    new, n_start = _file(tmp_path, "acct-2.csv", [d_line(n, vmta="vmta-new") for n in range(3)])
    sink = Recording()
    assert warm([_span(old, o_start), _span(new, n_start)], sink) == 53
    assert [row[b.columns.vmta] for b in sink.observed for row in b.rows][-1] == "vmta-new"
