"""Accounting files written the way PMTA writes them: `<name>-YYYY-MM-DD-NNNN.csv`, header first.

In the JSON form (`FileSpec.format`) each record is one object on its own line, spaced as the one real
sample is (`{ "type": "t", "timeLogged": ... }`, pmta-formats.md §4), with no header; files end in `.json`.

A new file starts at local midnight (new date, NNNN from 0000) and before a record that would take
the current file past `max_size` (NNNN + 1); an existing name is never reused, so a restart
continues with the next free NNNN. Every write() hands the OS complete lines, except in
`split_writes` mode, which holds back half of the last line until the next flush so readers see a
partial line in between.
"""

from __future__ import annotations

import csv
import io
import json
import os
from collections import deque
from datetime import timezone
from pathlib import Path
from typing import Any

from simulator.clock import format_acct_time, local_date
from simulator.config import FileSpec
from simulator.fields import csv_line, resolve_fields

TIME_FIELDS = frozenset({"timeLogged", "timeQueued", "arrivalDate"})


class AcctFile:
    """One `<acct-file>`: the current file of a family plus everything it has written."""

    def __init__(self, directory: Path, spec: FileSpec, tz: timezone) -> None:
        self.directory = directory
        self.spec = spec
        self.moved_to = directory / spec.move_to if spec.move_to is not None else None
        """PMTA's move-to directory (a closed file goes there), or None."""
        self._opened = 0
        self.tz = tz
        self.fields = resolve_fields(spec.fields, list(spec.records))
        self.newline = "\r\n" if spec.newline == "crlf" else "\n"
        self.json = spec.format == "json"
        self.suffix = "json" if self.json else "csv"
        self.header = b"" if self.json else csv_line(list(self.fields), self.newline).encode()
        self.paths: list[Path] = []
        """Every file this writer has made, in order (deleted ones too: the ground truth names them)."""
        self._closed: deque[tuple[int, Path]] = deque()
        """(simulated time of its last write, path) of the closed files not deleted yet, oldest first."""
        self._now = 0
        self.records_written = 0
        self._fd: int | None = None
        self._date = ""
        self._seq = -1
        self._size = 0
        self._has_records = False
        self._tail = b""
        self._time_pos = [i for i, f in enumerate(self.fields) if f in TIME_FIELDS]
        self._time_cache: dict[int, str] = {}
        self._buf = io.StringIO(newline="")
        self._csv = csv.writer(self._buf, lineterminator=self.newline, quoting=csv.QUOTE_MINIMAL)

    def _time(self, ts: int) -> str:
        """Records carry epoch ints in time fields; rendered per `iso_times`, cached (many share a second)."""
        s = self._time_cache.get(ts)
        if s is None:
            if len(self._time_cache) > 100_000:
                self._time_cache.clear()
            s = self._time_cache[ts] = format_acct_time(ts, self.tz) if self.spec.iso_times else str(ts)
        return s

    @property
    def current(self) -> Path | None:
        return self.paths[-1] if self._fd is not None else None

    def write(self, rows: list[dict[str, Any]], now: int) -> None:
        """Append `rows` (field -> value) as of simulated time `now`, rotating as PMTA would."""
        self._now = now
        if self._closed and self.spec.delete_after is not None:
            self._delete_old(now - self.spec.delete_after)
        date = local_date(now, self.tz)
        if self._fd is not None and date != self._date:
            self._rotate(date, new_day=True)
        elif self._fd is not None and self.moved_to is not None and now - self._opened >= self.spec.move_interval:
            self._rotate(date, new_day=False)  # move-interval: closed (and moved), the next one in place
        if not rows:
            if self._tail:
                self._flush(b"")
            return
        if self._fd is None:
            self._rotate(date, new_day=True)
        fields, limit, times, fmt = self.fields, self.spec.max_size, self._time_pos, self._time
        buf, writer = self._buf, self._csv
        buf.seek(0)
        buf.truncate()
        line_start = 0
        for row in rows:
            values = [row.get(f, "") for f in fields]
            for i in times:
                if values[i] != "":
                    values[i] = fmt(values[i])
            if self.json:
                buf.write("{ " + json.dumps(dict(zip(fields, values, strict=True)))[1:-1] + " }" + self.newline)
            else:
                writer.writerow(values)
            end = buf.tell()
            # Values are ASCII (json.dumps escapes any other), so characters == bytes here.
            if self._has_records and self._size + end > limit:
                text = buf.getvalue()
                self._flush(text[:line_start].encode(), hold=False)
                self._rotate(date, new_day=False)
                buf.seek(0)
                buf.truncate()
                buf.write(text[line_start:end])
                end = buf.tell()
            line_start = end
            self._has_records = True
        self.records_written += len(rows)
        self._flush(buf.getvalue().encode())

    def close(self) -> None:
        if self._fd is not None:
            self._flush(b"", hold=False)
            os.close(self._fd)
            self._fd = None

    # ------------------------------------------------------------------------------------------
    def _flush(self, data: bytes, hold: bool = True) -> None:
        assert self._fd is not None
        data = self._tail + data
        self._tail = b""
        if hold and self.spec.split_writes and data:
            start = data.rstrip(b"\r\n").rfind(b"\n") + 1  # first byte of the last line
            cut = start + max(1, (len(data) - start) // 2)
            data, self._tail = data[:cut], data[cut:]
        if data:
            _write_all(self._fd, data)
            self._size += len(data)

    def _delete_old(self, before: float) -> None:
        """PMTA's delete-after: closed files last written before `before` go (a reader that has one open keeps
        reading it; the name is gone)."""
        while self._closed and self._closed[0][0] < before:
            _t, path = self._closed.popleft()
            path.unlink(missing_ok=True)

    def _move_closed(self, moved_to: Path) -> None:
        """PMTA's move-to: the file just closed is renamed into DIR (the same volume); the ground truth follows it."""
        moved_to.mkdir(parents=True, exist_ok=True)
        target = moved_to / self.paths[-1].name
        os.replace(self.paths[-1], target)
        self.paths[-1] = target

    def _rotate(self, date: str, new_day: bool) -> None:
        if self._fd is not None:
            self._flush(b"", hold=False)
            os.close(self._fd)
            if self.moved_to is not None:
                self._move_closed(self.moved_to)
            else:  # delete-after applies without move-to only
                self._closed.append((self._now, self.paths[-1]))
        seq = 0 if new_day else self._seq + 1
        while (path := self.directory / f"{self.spec.name}-{date}-{seq:04d}.{self.suffix}").exists() or (
                self.moved_to is not None and (self.moved_to / path.name).exists()):  # nor a name moved away
            seq += 1
        self._fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        self._date, self._seq, self._size, self._has_records = date, seq, 0, False
        self._opened = self._now
        self.paths.append(path)
        if self.header:
            _write_all(self._fd, self.header)
        self._size = len(self.header)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        n = os.write(fd, view)
        view = view[n:]


class FileSet:
    """All configured files; routes each record to the file that takes its type."""

    def __init__(self, directory: Path, specs: list[FileSpec], tz: timezone) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        self.files = [AcctFile(directory, spec, tz) for spec in specs]
        self.route = {t: f for f in self.files for t in f.spec.records}
        self._batch: dict[AcctFile, list[dict[str, Any]]] = {f: [] for f in self.files}

    def add(self, row: dict[str, Any]) -> bool:
        f = self.route.get(row["type"])
        if f is None:
            return False
        self._batch[f].append(row)
        return True

    def flush(self, now: int) -> None:
        for f, rows in self._batch.items():
            f.write(rows, now)
            rows.clear()

    def close(self) -> None:
        for f in self.files:
            f.close()

    @property
    def paths(self) -> list[Path]:
        return [p for f in self.files for p in f.paths]


__all__ = ["AcctFile", "FileSet"]
