"""Lines stored under a file id that no checkpoint names: the same file, read again under a new id.

The tailer gives a newly found file a random id, and the commit queue stores that file's rows
(slice transactions) before the checkpoint that records the id. A kill -9 in between leaves rows
under an id no later process knows: the next start finds the same file again, gives it a new id,
reads it from its start, and every line would be stored twice (issue #8: nothing double-counted).

So when a file key is new, an *orphan* at the same path (a `corr_files` key that is neither in
`wt_checkpoints` nor used by this process) whose stored events match the incoming rows line for
line is adopted: it takes the new key, and its stored lines are skipped as replays. A different
file at that path (rotation while down) does not match and is stored as its own file.
"""

from __future__ import annotations

import sqlite3

from correlator import store
from exporter.timeparse import parse_pmta_time

SAMPLE = 64
"""Incoming rows compared with the orphan's stored events (all of them must match, at least one)."""


def adopt(
    conn: sqlite3.Connection, num: int, key: str, path: str, pairs: list[tuple[int, tuple]], own: set[str]
) -> tuple[int, int] | None:
    """(number, max_line) of the orphan now keyed `key`, or None. `num` is the row just created for `key`."""
    has_checkpoints = conn.execute(
        "SELECT 1 FROM sqlite_master WHERE type='table' AND name='wt_checkpoints'").fetchone()
    if not has_checkpoints or not pairs:
        return None
    candidates = conn.execute(
        "SELECT num, key, max_line FROM corr_files WHERE path=? AND num != ?"
        " AND key NOT IN (SELECT file_id FROM wt_checkpoints) ORDER BY num DESC", (path, num)).fetchall()
    for onum, okey, max_line in candidates:
        if okey in own or not _same_lines(conn, onum, max_line, pairs):
            continue
        conn.execute("DELETE FROM corr_files WHERE num=?", (num,))
        conn.execute("UPDATE corr_files SET key=? WHERE num=?", (key, onum))
        return onum, max_line
    return None


def _same_lines(conn: sqlite3.Connection, num: int, max_line: int, pairs: list[tuple[int, tuple]]) -> bool:
    """The orphan's stored events agree with the incoming rows (type, time, vmta, status) where both exist."""
    sample = [(line, f) for line, f in pairs if line <= max_line][:SAMPLE]
    if not sample:
        return False
    ids = [store.event_id(num, line) for line, _ in sample]
    marks = ",".join("?" * len(ids))
    stored = {r[0]: r[1:] for r in conn.execute(
        f"SELECT id, type, t, vmta, status FROM corr_events WHERE id IN ({marks})", ids)}
    matched = 0
    for (_line, f), eid in zip(sample, ids, strict=True):
        got = stored.get(eid)
        if got is None:
            continue  # a tq row or a type the correlator does not store: nothing to compare
        code, t, vmta, status = got
        want_t = parse_pmta_time(f[1])
        ty = f[0].strip().lower()
        if code != store.TYPE_CODES.get(store.ALIASES.get(ty, ty)) or (vmta or "") != f[11] \
                or (status or "") != f[6] or (want_t is not None and want_t != t):
            return False
        matched += 1
    return matched > 0
