"""Stage 0 of a write, fresh rows: which lines of a batch are not stored yet, and each one's event id.

A line is stored at most once: its event id is `file number << LINE_BITS | line`, and a batch that
starts at or below the highest line stored for its file (a restart replays the lines after the last
checkpoint; a rotation may show a file again) loses the lines the store already holds, found by one
id range over corr_events and corr_queue_events. A store that keeps no history (oneshot) has no events
to ask: every line up to the highest stored was seen.
"""

from __future__ import annotations

import sqlite3

import polars as pl

from correlator import store
from exporter.records import LINE


class FreshRows:
    """Mixin of Ingestor: stage 0 (owns the file numbers and their highest stored line)."""

    keep_history: bool
    _files: dict[str, list[int]]

    def _file(self, conn: sqlite3.Connection, key: str, path: str) -> list[int]:
        """[file number, highest line stored] of the file with this identity key (numbered at first sight)."""
        rec = self._files.get(key)
        if rec is None:
            row = conn.execute("SELECT num, max_line FROM corr_files WHERE key=?", (key,)).fetchone()
            if row is None:
                num = conn.execute("INSERT INTO corr_files (key, path) VALUES (?, ?)", (key, path)).lastrowid
                row = (num, 0)
            rec = self._files[key] = [row[0], row[1]]
        return rec

    def _fresh_rows(self, conn: sqlite3.Connection, rec: list[int], frame: pl.DataFrame) -> pl.DataFrame:
        """The frame minus lines already stored for this file, with each row's event id (`eid`)."""
        num, max_line = rec
        base = num << store.LINE_BITS
        if not frame.height:
            return frame
        lo_line, hi_line = frame.get_column(LINE).min(), frame.get_column(LINE).max()
        if lo_line <= max_line and not self.keep_history:  # no events to ask: every line up to max_line was seen
            frame = frame.filter(pl.col(LINE) > max_line)
        elif lo_line <= max_line:  # the lines stored as events or queue events
            lo, hi = store.event_id(num, lo_line), store.event_id(num, hi_line)
            seen = [r[0] - base for r in conn.execute(
                "SELECT id FROM corr_events WHERE id BETWEEN ?1 AND ?2"
                " UNION ALL SELECT id FROM corr_queue_events WHERE id BETWEEN ?1 AND ?2", (lo, hi))]
            if seen:
                frame = frame.filter(~pl.col(LINE).is_in(seen))
        rec[1] = max(max_line, hi_line)
        conn.execute("UPDATE corr_files SET max_line=? WHERE num=?", (rec[1], num))
        return frame.with_columns((pl.col(LINE) | base).alias("eid"))
