"""When to look in the sources' `moved_to` directories, and which files there are new to a look.

PMTA's move-to moves a finished file out of the directory the globs watch. Most files there were read before (followed,
then moved), are archives (their checkpoints forgotten after `tail.forget_after`) or copies; but a file PMTA creates,
fills and moves between two scans, or while the daemon is down, was never in the globs when one looked, and is read
whole from there (exporter.tailer `_moved_while_down`, which also tells copies and files read before apart).

A look lists a source's `moved_to` when one of its directories changed (a new entry changes its modification time),
or had changed so shortly before the last look that another change in the same clock tick would not show (a second
on some file systems): it is looked at once more. New to a look are the files not listed, in that version (inode,
size, modification time), at the source's previous look, and changed after the last look of this run that listed
their directory (that directory, by device and inode: one missing, or not mounted yet, at a look is not looked past)
started, less the clock's coarseness; in a directory no look of this run listed, after the start of the last look
before the stop (a restart) or after the start (a first run); and within `tail.forget_after` (or, while a restarted
run is younger than that, changed after the last run's looks: a downtime longer than it). A file read before and
moved there long ago, its checkpoint forgotten, is never new again. The times of looks are kept with the monotonic
clock's too: after the wall clock steps back, a look's time is taken as the clock reads now, and a restart's saved
time later than its start (the clock set back while the daemon was down) is not trusted (`tail.forget_after` back).
"""

from __future__ import annotations

import glob
import logging
import os
import stat
import time
from collections.abc import Iterable
from typing import Any

log = logging.getLogger("watchtower.tailer")

RACY_NS = 2_000_000_000
"""A directory changed this shortly before a look may have changed again after it within the same tick, unseen: the
next look lists it once more."""
COARSE_S = 2.0
"""Seconds taken off the start of a look (and a restart's `since`) before files' times are compared with it: a file's
time may be rounded down (a second on some file systems)."""
CLOCK_STEP_S = 1.0
"""A look's time this much later than the wall clock now says it was (by the monotonic clock): the clock stepped
back."""


def _directories(pattern: str) -> list[str]:
    """The directories a `moved_to` glob lists: its own directory, or each one its directory part matches."""
    directory = os.path.dirname(pattern) or "."
    if not glob.has_magic(directory):
        return [directory]
    return sorted(d for d in glob.glob(directory) if os.path.isdir(d))


def _version(st: os.stat_result) -> int:
    """A file as a look saw it: another file in its inode, or the file written to since, is another version."""
    return hash((st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns))


class _At:
    """A moment as the wall clock read it then, and as the monotonic clock did: `wall()` is it on the wall clock as it
    reads now (earlier, after the clock stepped back)."""

    __slots__ = ("_wall", "_mono")

    def __init__(self, wall: float, mono: float | None = None) -> None:
        self._wall = wall
        self._mono = time.monotonic() - max(0.0, time.time() - wall) if mono is None else mono

    def wall(self) -> float:
        now = time.time() - (time.monotonic() - self._mono)
        return now if now < self._wall - CLOCK_STEP_S else self._wall

    def earlier(self, wall: float) -> _At:
        return self if self.wall() <= wall else _At(wall)


class MovedToWatch:
    """Per source with `moved_to`: whether its next scan lists it (`pending`), and which listed files are new."""

    def __init__(self, sources: Iterable[Any], since: float | dict[str, float] | None, started_at: float,
                 forget_after: float, last_gone: dict[str, float] | None = None) -> None:
        self._patterns = {s.label: list(s.moved_to) for s in sources if s.moved_to}
        self._forget_after = forget_after
        self.pending: set[str] = set(self._patterns) if since is not None else set()
        """Sources to list at the next scan: every one at a restart's first scan, then one whose directories changed
        (or changed recently), or whose listing failed."""
        saved = {label: since if isinstance(since, float | int) else since.get(label, started_at)
                 for label in self._patterns} if since is not None else {}
        if any(t > started_at for t in saved.values()):
            log.warning("the last run's looks in `moved_to` are later than the clock now (set back while the daemon "
                        "was down?): files there up to tail.forget_after old are looked at")
        self._since = {label: _At(started_at) if label not in saved else _At(
            saved[label] if saved[label] <= started_at else started_at - forget_after) for label in self._patterns}
        """Per source: files changed after this may be new to its next look (saved for a restart: `since`)."""
        self._first_floor = {label: _At(at.wall() - (COARSE_S if label in saved else 0.0))
                             for label, at in self._since.items()}
        """Per source: files in a directory no look of this run listed that changed after this may be new (the last
        run's looks, less the coarseness of file times, or this run's start)."""
        self._started = _At(started_at)
        gone = last_gone or {}
        self._down_from = {label: _At(max(t, gone.get(label, t))) for label, t in saved.items() if t <= started_at}
        """Per source, at a restart: the later of the last run's looks and the last time it saw a file leave (its
        checkpoints' `gone_since`): a file changed after both was not read by the last run (it would have left the
        globs later), so until this run is `tail.forget_after` old no checkpoint of one can have been forgotten:
        such files are new even when older than that (a downtime longer than `tail.forget_after`)."""
        self._dir_floors: dict[str, dict[tuple[int, int], _At]] = {label: {} for label in self._patterns}
        """Per source, per directory (device, inode): files there changed after this may be new (the start of the last
        look that listed it, less the coarseness of file times)."""
        self._listed: dict[str, dict[str, tuple[int, int] | None]] = {}
        """Per source: its directories at its last look, by path: (device, inode), None if missing or unlistable."""
        self._seen: dict[str, set[int]] = {}
        """Per source: the versions of the files its last look listed."""
        self._dir_times: dict[str, tuple[int, int]] = {}
        """Per directory: (its modification time, when it was read) at the last look."""
        self._looked = False

    @property
    def since(self) -> dict[str, float]:
        """For the next start, per source: files in its `moved_to` changed after this may be new to it (per source: a
        source whose directory never changes keeps an old time, which must not reopen another source's archives)."""
        return {label: at.wall() for label, at in self._since.items()}

    def look(self) -> None:
        """Note the sources whose directories changed since the last look, or changed within a tick of it (a change
        after it in the same tick would not show: looked at once more); a directory that appears (created, or a new
        one a wildcard matches) is a change."""
        now = time.time_ns()
        times: dict[str, tuple[int, int]] = {}
        for label, patterns in self._patterns.items():
            for directory in (d for p in patterns for d in _directories(p)):
                try:
                    changed = os.stat(directory).st_mtime_ns
                except OSError:
                    changed = -1  # missing for now: its creation is a change
                times[directory] = (changed, now)
                before = self._dir_times.get(directory)
                if before is None:
                    if self._looked:
                        self.pending.add(label)
                elif before[0] != changed or 0 <= before[1] - before[0] < RACY_NS:
                    self.pending.add(label)
        self._dir_times = times
        self._looked = True

    def new_files(self, label: str, listed: dict[tuple[int, int], str], scan_started: float
                  ) -> list[tuple[tuple[int, int], str, os.stat_result]]:
        """The regular files of this listing of `label`'s `moved_to` (identity -> path) new to its look, in name
        order: not listed in that version by its last look, and changed after the last look that listed their
        directory started (a file missing from one look, a directory renamed away or unreadable for a while, is not
        new again once back; a directory no look listed, missing or not mounted yet, is looked at from the first
        floor) and within `tail.forget_after` (an older file read before may have had its checkpoint forgotten; one
        never read is that old only after a look failing that long). The next look takes up from this scan's start,
        but for the files the caller could not read (`unread`)."""
        seen = self._seen.get(label, set())
        started = _At(scan_started)
        now = time.time()
        forget = now - self._forget_after
        down = self._down_from.get(label)
        if down is not None and down.wall() < forget < self._started.wall():  # a downtime longer than forget_after
            forget = down.wall()
        floors = self._dir_floors[label]
        first = max(self._first_floor[label].wall(), forget)
        directories = {d: _listable(d) for p in self._patterns[label] for d in _directories(p)}
        versions: set[int] = set()
        new = []
        for key, path in sorted(listed.items(), key=lambda kv: kv[1]):
            try:
                st = os.stat(path)
            except OSError:
                continue
            if not stat.S_ISREG(st.st_mode):
                continue
            version = _version(st)
            versions.add(version)
            if version in seen:
                continue
            directory = os.path.dirname(path) or "."
            where = directories[directory] if directory in directories else _identity(directory)
            at = floors.get(where) if where is not None else None
            if st.st_mtime <= (first if at is None else max(at.wall(), forget)):
                continue
            new.append((key, path, st))
        self._seen[label] = versions
        self._listed[label] = directories
        floor = _At(scan_started - COARSE_S)
        listed_now = {w for w in directories.values() if w is not None}
        for where in listed_now:
            floors[where] = floor
        for where in [w for w, at in floors.items() if at.wall() < forget]:  # as if never listed: the same floor
            del floors[where]
        # A restart takes up from the earliest floor this look did not reach: a directory listed before but missing
        # (or unlistable) now, and one missing since the run began, keep what was moved there for when it is back
        since = started
        for at in [at for w, at in floors.items() if w not in listed_now]:
            since = at if at.wall() < since.wall() else since
        if None in directories.values() and self._first_floor[label].wall() < since.wall():
            since = self._first_floor[label]
        self._since[label] = since
        self.pending.discard(label)
        return new

    def unread(self, label: str, path: str, st: os.stat_result) -> None:
        """A new file the caller could not read now: new again to the next look (which the next scan makes), and to a
        restart's first look."""
        self._seen.get(label, set()).discard(_version(st))
        self._since[label] = self._since[label].earlier(st.st_mtime)
        directory = os.path.dirname(path) or "."
        where = self._listed.get(label, {}).get(directory) or _identity(directory)  # as the look saw it
        floors = self._dir_floors[label]
        if where is not None and where in floors:
            floors[where] = floors[where].earlier(st.st_mtime - COARSE_S)
        else:
            self._first_floor[label] = self._first_floor[label].earlier(st.st_mtime - COARSE_S)
        self.pending.add(label)


def _listable(directory: str) -> tuple[int, int] | None:
    """`_identity` of a directory that can be listed, else None: glob() says nothing of a subdirectory it cannot list
    (a wildcard's), and the files there must not fall below a floor moved up by a look that could not see them."""
    try:
        with os.scandir(directory):
            pass
    except OSError:
        return None
    return _identity(directory)


def _identity(directory: str) -> tuple[int, int] | None:
    """A directory's (device, inode), None when it is missing or cannot be read: the look's floor for its files is
    its own, whatever its name (a mount point before and after the mount is two directories)."""
    try:
        st = os.stat(directory)
    except OSError:
        return None
    return st.st_dev, st.st_ino
