"""SQLite schema of the correlator, its migrations, read connections and bounded pruning.

Tables live in the daemon's state DB next to the tailer checkpoints (prefix `corr_`), so one
transaction covers both. Shape, chosen for the write path first:

* `corr_timelines`: one row per recipient of one message, with a summary (outcome, vmta, isp,
  first/last time) so search and attribution never scan events. Link keys are 64-bit hashes
  (see keys.py); the indexes serve Message-Id, (jobId, rcpt), rcpt+time and time lookups.
  Hash keys are random, and random inserts into big indexes are what makes a store slow as it
  grows (every insert dirties another page, and the pages no longer fit the cache). So the key
  indexes lead with `qday`, a *slice*: the UTC day of the timeQueued of the record that created
  the timeline and the timeline's generation (its id >> GEN_BITS), packed in one integer
  (`slice_of`). Inserts land in the newest generation of their day, a part of each index that
  stays in cache however big the store or the day. Timelines created by a record without
  timeQueued fill undated slices of their own, GEN_BITS each (`undated_slice`), so there are few.
  Every record of one delivery carries the same timeQueued, which is the `scope` of the timeline
  it creates: linking probes only the slices where timelines queued in the same SCOPE_BUCKET were
  created (`corr_scopes`) and the undated ones, a few however big the store; a lookup without a
  scope probes every slice listed in `corr_days`, one index seek each. Stores written before
  generations hold plain days (generation 0); slices listed before scopes (schema 1) are `legacy`:
  their timelines have no scope and join any record of their day, so they are probed for all.
  Search by vmta or outcome alone reads `corr_tl_vmta` / `corr_tl_outcome` ((vmta|outcome, t0),
  rowid implied), newest first from the cursor's (t0, id) without scanning other timelines.
* `corr_events`: one row per d/b/t/r/f/rb/rs record. Its rowid is `file_num << 32 | line`, which
  makes a replayed line a no-op without an extra UNIQUE index.
* `corr_queue_events`: tq records (queue-level, no rcpt), shown at query time in the timelines of
  recipients of that queue during their lifetime, so ingestion never fans them out; retention keeps
  them while a stored timeline shows them.
* `corr_flows`: per 5-minute bucket (sender domain, vmta, isp) counters for /api/v1/flows.
* `corr_scopes`: (10 s bucket of timeQueued, slice) where a timeline of that scope was created.
* `corr_gen_filters`: a Bloom filter of the Message-Id and recipient hashes of each finished generation
  (genfilter.py), so a lookup without a scope seeks only the generations that may hold its key.
* `corr_files`: file identity -> small number and highest line stored.
* `corr_meta`: schema version, recipient-hash fingerprint, the Message-Id and jobId key scheme
  (LINK_KEYS), a write sequence number that lets the ingestor notice a rolled-back transaction and
  drop its caches, and the retention time last trusted (RETENTION_TIME), where the next start's
  retention clock begins.
"""

from __future__ import annotations

import logging
import math
import queue
import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import NamedTuple, NoReturn

from exporter.writelock import begin_immediate

log = logging.getLogger(__name__)

SCHEMA_VERSION = 4
LINE_BITS = 32
FLOW_BUCKET = 300  # seconds per corr_flows bucket

# Record type codes stored in corr_events.type and the flag bit each sets on its timeline.
TYPE_CODES: dict[str, int] = {"r": 1, "t": 2, "d": 3, "b": 4, "rs": 5, "rb": 6, "f": 7, "tq": 8}
TYPE_NAMES: dict[int, str] = {v: k for k, v in TYPE_CODES.items()}
ALIASES = {
    "receipt": "r", "transient": "t", "delivery": "d", "bounce": "b", "remote-status": "rs",
    "remote-bounce": "rb", "feedback-loop": "f", "transient-queue": "tq",
}
FLAG = {code: 1 << code for code in TYPE_CODES.values()}


def type_code(ty: str) -> int | None:
    """The code of a record type as a file writes it: a TYPE_CODES key, or an alias, in any case and padding."""
    code = TYPE_CODES.get(ty)
    if code is None:
        low = ty.strip().lower()
        code = TYPE_CODES.get(ALIASES.get(low, low))
    return code
OUTCOMES: tuple[str, ...] = ("pending", "deferred", "delivered", "bounced", "complained")
_F, _B, _RB, _D, _T = FLAG[7], FLAG[4], FLAG[6], FLAG[3], FLAG[2]
OUTCOME_SQL = (
    f"CASE WHEN flags & {_F} THEN 4 WHEN flags & {_B | _RB} THEN 3 WHEN flags & {_D} THEN 2 "
    f"WHEN flags & {_T} THEN 1 ELSE 0 END"
)

_V1 = [
    "CREATE TABLE IF NOT EXISTS corr_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL) WITHOUT ROWID",
    "CREATE TABLE IF NOT EXISTS corr_days (day INTEGER PRIMARY KEY) WITHOUT ROWID",
    """CREATE TABLE IF NOT EXISTS corr_files (
        num INTEGER PRIMARY KEY, key TEXT NOT NULL UNIQUE, path TEXT NOT NULL,
        max_line INTEGER NOT NULL DEFAULT 0)""",
    f"""CREATE TABLE IF NOT EXISTS corr_timelines (
        id INTEGER PRIMARY KEY, qday INTEGER NOT NULL,
        mid_h INTEGER, message_id TEXT,
        job_h INTEGER, job_id TEXT,
        rcpt_h INTEGER, rcpt TEXT, rcpt_domain TEXT,
        orig TEXT, sender TEXT,
        vmta TEXT, vmta_pool TEXT, queue TEXT, isp TEXT,
        t0 REAL NOT NULL, t_last REAL NOT NULL, t_queued REAL, t_done REAL,
        flags INTEGER NOT NULL, attempts INTEGER NOT NULL,
        outcome INTEGER GENERATED ALWAYS AS ({OUTCOME_SQL}) VIRTUAL)""",
    "CREATE INDEX IF NOT EXISTS corr_tl_mid ON corr_timelines (qday, mid_h, rcpt_h) WHERE mid_h IS NOT NULL",
    "CREATE INDEX IF NOT EXISTS corr_tl_job ON corr_timelines (qday, job_h, rcpt_h) WHERE job_h IS NOT NULL",
    "CREATE INDEX IF NOT EXISTS corr_tl_rcpt ON corr_timelines (qday, rcpt_h, t0)",
    "CREATE INDEX IF NOT EXISTS corr_tl_t0 ON corr_timelines (t0)",
    """CREATE TABLE IF NOT EXISTS corr_events (
        id INTEGER PRIMARY KEY, tl INTEGER NOT NULL, type INTEGER NOT NULL, t REAL NOT NULL,
        action TEXT, status TEXT, diag TEXT, mta TEXT, bcat TEXT,
        vmta TEXT, pool TEXT, src_ip TEXT, extra TEXT)""",
    "CREATE INDEX IF NOT EXISTS corr_ev_tl ON corr_events (tl)",
    """CREATE TABLE IF NOT EXISTS corr_queue_events (
        id INTEGER PRIMARY KEY, t REAL NOT NULL, queue TEXT NOT NULL, vmta TEXT, pool TEXT,
        action TEXT, status TEXT, diag TEXT, mta TEXT, bcat TEXT, src_ip TEXT)""",
    "CREATE INDEX IF NOT EXISTS corr_qe_queue ON corr_queue_events (queue, t)",
    "CREATE INDEX IF NOT EXISTS corr_qe_t ON corr_queue_events (t)",
    """CREATE TABLE IF NOT EXISTS corr_flows (
        bucket INTEGER NOT NULL, sender TEXT NOT NULL, vmta TEXT NOT NULL, isp TEXT NOT NULL,
        delivered INTEGER NOT NULL DEFAULT 0, bounced INTEGER NOT NULL DEFAULT 0,
        deferred INTEGER NOT NULL DEFAULT 0, complained INTEGER NOT NULL DEFAULT 0,
        remote_bounced INTEGER NOT NULL DEFAULT 0,
        PRIMARY KEY (bucket, sender, vmta, isp)) WITHOUT ROWID""",
]
_V2 = [
    # the timeQueued of the record that created a dated timeline (NULL: undated, or written before scopes)
    "ALTER TABLE corr_timelines ADD COLUMN scope REAL",
    # slices listed before scopes hold unscoped dated timelines: probed for every key of their day
    "ALTER TABLE corr_days ADD COLUMN legacy INTEGER NOT NULL DEFAULT 1",
    """CREATE TABLE IF NOT EXISTS corr_scopes (
        bucket INTEGER NOT NULL, slice INTEGER NOT NULL, PRIMARY KEY (bucket, slice)) WITHOUT ROWID""",
]
_V3 = [
    # the time of the timeline's latest delivery attempt (t/d/b): its vmta, pool, queue and ISP are that attempt's,
    # whatever order the diag and acct files are read in (NULL: no attempt yet, or written before this column)
    "ALTER TABLE corr_timelines ADD COLUMN t_attempt REAL",
]
_V4: list[str] = []
"""No table changes: the Message-Id and jobId keys (mid_h, job_h) of a store created with hash_recipients are keyed from
here on (corr_meta LINK_KEYS). The version keeps an earlier build, which hashes them unkeyed, from adding its keys to
such a store (its lookups would find nothing, and two schemes would be mixed in one index)."""
MIGRATIONS: dict[int, list[str]] = {1: _V1, 2: _V2, 3: _V3, 4: _V4}
REPLY_EVENTS = f"type IN ({TYPE_CODES['t']}, {TYPE_CODES['b']})"
"""The events /api/v1/replies reads (t and b), spelled as its index's WHERE: a query must repeat it to use the index."""
ENSURE = [
    # search by vmta / outcome alone, newest first with the (t0, id) keyset: one index range each.
    # Run at every start (IF NOT EXISTS): a store created before they existed gets them too.
    "CREATE INDEX IF NOT EXISTS corr_tl_vmta ON corr_timelines (vmta, t0)",
    "CREATE INDEX IF NOT EXISTS corr_tl_outcome ON corr_timelines (outcome, t0)",
    # search by job_id: a job's timelines in (t0, id) order, so a page of a million-recipient job reads its rows,
    # not the whole job sorted (corr_tl_job leads with the day slice and the recipient: seconds, then a 503)
    "CREATE INDEX IF NOT EXISTS corr_tl_job_t0 ON corr_timelines (job_h, t0) WHERE job_h IS NOT NULL",
    # /api/v1/replies: the deferrals and bounces logged in a window, newest first, whenever their message was queued
    # (a partial index: only t and b events pay for it; a store written before it gets it at its next start)
    f"CREATE INDEX IF NOT EXISTS corr_ev_reply_t ON corr_events (t) WHERE {REPLY_EVENTS}",
    # a Bloom filter per finished generation (genfilter.py); a store written before them gets them as it is written
    "CREATE TABLE IF NOT EXISTS corr_gen_filters"
    " (gen INTEGER PRIMARY KEY, version INTEGER NOT NULL, bits BLOB NOT NULL)",
]
"""Statements that keep the version-1 schema current without a version step (idempotent)."""
DAY = 86400
SCOPE_BUCKET = 10
"""Seconds of timeQueued per `corr_scopes` bucket: a probe for a dated key seeks the slices where timelines queued in
its bucket were created: 1.0-1.3 slices per bucket measured at 20k records/s (bench/README.md, eighth round); a store
of a week at a low rate holds ~60k rows."""
NO_DAY = -1
"""Day of timelines created by a record without timeQueued."""
GEN_BITS = 16
"""Timelines per generation: 2**16. The key indexes lead with (day, generation) slices, so random-key inserts
land in the newest generation's part of each index (~2 MB per index), which stays in the page cache whatever the
store's size. Measured with SQLite alone, 1M timelines in one day: ~110k falling to ~40k inserts/s in one slice;
~120k flat with these generations (2**18: ~100k with dips). Smaller generations mean more slices to seek in a
lookup without a day (one index seek each)."""
DAY_BITS = 24
_DAY_FIELD = (1 << DAY_BITS) - 1
"""The day field of a slice; its all-ones value stands for NO_DAY."""
DAYS = "qday IN (SELECT day FROM corr_days)"
"""SQL condition that lets a lookup without a known day use the qday-led indexes (one seek per slice)."""
SLICE_DAY_SQL = f"CASE WHEN day < {1 << DAY_BITS} THEN day WHEN day & {_DAY_FIELD} = {_DAY_FIELD} THEN {NO_DAY}" \
    f" ELSE day & {_DAY_FIELD} END"
"""The day of a corr_days slice (`day_of_slice` in SQL)."""


def slice_of(day: int, tl: int) -> int:
    """The `qday` value of timeline `tl` created by a record of `day`: the day and the timeline's generation.

    Generations start at 1, so a value below 2**DAY_BITS is a plain day: the one-slice-per-day layout of
    stores written before generations (and a day outside [0, 2**DAY_BITS - 1), kept unpartitioned).
    """
    if day == NO_DAY:
        field = _DAY_FIELD
    elif 0 <= day < _DAY_FIELD:
        field = day
    else:
        return day
    return (generation_of(tl) << DAY_BITS) | field


def dated_generation(value: int) -> int:
    """The generation of a dated `qday` slice; 0 for a plain day or an undated slice (numbered apart)."""
    return 0 if day_of_slice(value) == NO_DAY else generation_of_slice(value)


def generation_of(tl: int) -> int:
    """The generation of timeline id `tl` (numbered from 1, as `generation_of_slice` numbers dated slices)."""
    return (tl >> GEN_BITS) + 1


def undated_slice(generation: int) -> int:
    """The `qday` value of the undated slice of this generation (>= 1; undated slices are numbered apart)."""
    return (generation << DAY_BITS) | _DAY_FIELD


def generation_of_slice(value: int) -> int:
    """The generation a `qday` slice belongs to (0: a plain day, as stores before generations wrote)."""
    return value >> DAY_BITS if value > 0 else 0


def day_of_slice(value: int) -> int:
    """The day a `qday` slice belongs to (NO_DAY for the slices of undated timelines)."""
    if value < (1 << DAY_BITS):
        return value
    field = value & _DAY_FIELD
    return NO_DAY if field == _DAY_FIELD else field


SEARCH_SEQ = "search_seq"
"""corr_meta key bumped by each transaction that changes what a search without a scope goes through (the listed slices,
the generation filters): a reader keeps both until it changes (one row read per batch of reports)."""


def bump_search_seq(conn: sqlite3.Connection) -> None:
    conn.execute(f"UPDATE corr_meta SET value = CAST(value AS INTEGER) + 1 WHERE key = '{SEARCH_SEQ}'")


def search_seq(conn: sqlite3.Connection) -> str | None:
    """The store's SEARCH_SEQ (None: a store written before it, or not readable: read the lists again)."""
    try:
        row = conn.execute(f"SELECT value FROM corr_meta WHERE key = '{SEARCH_SEQ}'").fetchone()
    except sqlite3.OperationalError:
        return None
    return None if row is None else str(row[0])


RETENTION_TIME = "retention_time"
"""corr_meta key: the retention clock's reading (correlator/wallclock.py) at the writer's last commit and prune. A new
process starts its retention clock from it instead of trusting the system clock: a start under a clock stepped ahead
deleted every timeline within the step of its retention at once, for good, without a word (a review's
reproduction: a store of timelines 6 h old emptied within seconds of a start with the clock 3 days ahead)."""


def record_retention_time(conn: sqlite3.Connection, now: float) -> None:
    """Keep `now` as the store's RETENTION_TIME (in the caller's transaction: one row on a page it writes anyway)."""
    conn.execute("INSERT OR REPLACE INTO corr_meta VALUES (?, ?)", (RETENTION_TIME, repr(float(now))))


def retention_seed(conn: sqlite3.Connection, now: float) -> float | None:
    """Where a new retention clock starts: the stored RETENTION_TIME, but never before the newest activity the store
    holds (the latest timeline's first event, flow bucket or queue event, up to `now`: index seeks, never a scan).
    A time recorded while the clock was far behind (a start before NTP set it: 1970, a VM restored) would otherwise
    hold pruning back for as long, restart after restart; a store written before RETENTION_TIME starts from its
    newest activity. None for an empty store (the system clock then). The clock takes the system clock instead when
    it is behind."""
    row = conn.execute("SELECT value FROM corr_meta WHERE key = ?", (RETENTION_TIME,)).fetchone()
    recorded = math.nan
    if row is not None:
        try:
            recorded = float(row[0])
        except ValueError:
            pass
    newest = [min(float(r[0]), now) for r in conn.execute(
        "SELECT (SELECT max(t0) FROM corr_timelines) UNION ALL SELECT (SELECT max(bucket) FROM corr_flows)"
        " UNION ALL SELECT (SELECT max(t) FROM corr_queue_events)") if r[0] is not None]
    seeds = [*newest, *([recorded] if math.isfinite(recorded) else [])]
    return max(seeds) if seeds else None


def send_rank(t_queued: float | None, tl: int) -> tuple[float, int]:
    """Which of two sends of a key is the later: by timeQueued (an undated timeline below any dated one), then by
    id. Linking names a key's latest send by it, and attribution answers a report with it: both must agree."""
    return (float("-inf") if t_queued is None else t_queued, tl)


def event_id(file_num: int, line: int) -> int:
    return (file_num << LINE_BITS) | line


def split_event_id(eid: int) -> tuple[int, int]:
    return eid >> LINE_BITS, eid & ((1 << LINE_BITS) - 1)


def database_file(conn: sqlite3.Connection) -> str:
    return conn.execute("PRAGMA database_list").fetchone()[2] or "the state database"


def stored_version(path: str, value: object) -> int:
    """The correlator schema the store at `path` holds; a StateRefused (one line naming the file and the way out, not
    an internal error) for one this build cannot read: written by a newer version, or not a version at all. Shared
    with check-config, which says it in the same words."""
    from exporter.state import StateRefused

    try:
        version = int(str(value))
    except ValueError:
        raise StateRefused(f"{path}: correlator schema_version {str(value)[:40]!r} is not a version; the store is "
                           "not this program's, or damaged: move it aside (timelines restart empty)") from None
    if version > SCHEMA_VERSION:
        raise StateRefused(f"{path}: correlator schema {version} is newer than this build's ({SCHEMA_VERSION}): "
                           "run the version that wrote it, or move the file aside (timelines and counters restart)")
    return version


def migrate(conn: sqlite3.Connection, rcpt_fingerprint: str, key_file: tuple[Path, bool] | None = None,
            owns_scheme: bool = True) -> str:
    """Bring the schema to SCHEMA_VERSION; in its own transaction unless the caller has one open. `key_file`: the HMAC
    key file recipients are keyed with now, and whether this start created it (`other_key`). Returns the scheme of the
    store's Message-Id and jobId keys (`link_scheme`): what every writer and reader of it must hash them with; only an
    owner (`owns_scheme`: the daemon, not its correlator process) may switch that of a store holding no timeline.

    The recipients' mark (`rcpt_mode`: `plain` or the key's fingerprint) changes from `plain` to a key (hashing
    turned on: a WARNING when timelines are stored), or on a store holding no timeline; a store marked with a key
    refuses another key or none (`other_key`) and, holding timelines, hashing off (`hashing_turned_off`), so the
    mark never forgets a key while timelines keyed with it may remain."""
    own = not conn.in_transaction
    if own:
        mode = conn.execute("PRAGMA journal_mode").fetchone()[0]
        if str(mode).lower() != "wal":
            conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("BEGIN IMMEDIATE")
    try:
        conn.execute(_V1[0])
        row = conn.execute("SELECT value FROM corr_meta WHERE key='schema_version'").fetchone()
        current = stored_version(database_file(conn), row[0]) if row else 0
        for version in range(current + 1, SCHEMA_VERSION + 1):
            for stmt in MIGRATIONS[version]:
                conn.execute(stmt)
        if current and conn.execute("SELECT 1 FROM sqlite_master WHERE name='corr_ev_reply_t'").fetchone() is None:
            log.info("building the index /api/v1/replies reads over the stored deferrals and bounces (once, after "
                     "an upgrade: a minute or more on a store of hundreds of millions of events)")
        for stmt in ENSURE:
            conn.execute(stmt)
        conn.execute("INSERT OR REPLACE INTO corr_meta VALUES ('schema_version', ?)", (str(SCHEMA_VERSION),))
        conn.execute("INSERT OR IGNORE INTO corr_meta VALUES ('write_seq', '0')")
        conn.execute(f"INSERT OR IGNORE INTO corr_meta VALUES ('{SEARCH_SEQ}', '0')")
        conn.execute("INSERT OR IGNORE INTO corr_days (day) VALUES (?)", (NO_DAY,))
        row = conn.execute("SELECT value FROM corr_meta WHERE key='rcpt_mode'").fetchone()
        if row is None:
            conn.execute("INSERT INTO corr_meta VALUES ('rcpt_mode', ?)", (rcpt_fingerprint,))
        elif row[0] != rcpt_fingerprint:
            stored_hmac = row[0].startswith("hmac:")
            if key_file is not None and stored_hmac:  # another key, or none (the file was missing)
                raise other_key(database_file(conn), row[0], *key_file)
            held = conn.execute("SELECT 1 FROM corr_timelines LIMIT 1").fetchone() is not None
            if held and stored_hmac:  # hashing turned off over hashed timelines
                raise hashing_turned_off(database_file(conn), row[0])
            if held:  # hashing turned on over plain timelines: documented (docs/security.md)
                log.warning("%s", now_keyed_warning(row[0], rcpt_fingerprint))
            conn.execute("UPDATE corr_meta SET value=? WHERE key='rcpt_mode'", (rcpt_fingerprint,))
        scheme = link_scheme(conn, current, rcpt_fingerprint, owns_scheme)
    except BaseException:
        if own:
            conn.execute("ROLLBACK")
        raise
    if own:
        conn.execute("COMMIT")
    return scheme


LINK_KEYS = "link_keys"
"""corr_meta key: how the store's Message-Id, jobId and sender + timeQueued keys (mid_h, job_h) are hashed,
keys.LINKS_KEYED, keys.LINKS_UNKEYED or keys.LINKS_AS_WRITTEN. Never mixed in one store: stored keys cannot be
computed again (their texts lost the recipient's address, exporter/redact.py), so a store keeps the scheme it holds
timelines under."""


def link_scheme(conn: sqlite3.Connection, current: int, rcpt_fingerprint: str, owns_scheme: bool = True) -> str:
    """The store's LINK_KEYS, recorded (in the caller's transaction). A store without timelines takes the scheme of
    its recipients (keyed with an HMAC key: keyed; plain: unkeyed); one holding timelines keeps its own, and one
    written before LINK_KEYS (`current`, its schema version before this start, > 0) holds unkeyed keys of the
    Message-Ids as written (LINKS_AS_WRITTEN)."""
    from correlator.keys import LINK_SCHEMES, LINKS_AS_WRITTEN, LINKS_KEYED, LINKS_UNKEYED

    wanted = LINKS_KEYED if rcpt_fingerprint.startswith("hmac:") else LINKS_UNKEYED
    row = conn.execute("SELECT value FROM corr_meta WHERE key=?", (LINK_KEYS,)).fetchone()
    stored = row[0] if row is not None else LINKS_AS_WRITTEN if current else wanted
    if stored != wanted and owns_scheme and conn.execute("SELECT 1 FROM corr_timelines LIMIT 1").fetchone() is None:
        stored = wanted  # nothing keyed yet: nothing to mix. Not by the correlator process: restarted alone after
        # retention emptied the store, it switched while the daemon's API and attribution kept the old scheme
    if stored not in LINK_SCHEMES or (stored == LINKS_KEYED and wanted == LINKS_UNKEYED):
        from exporter.state import StateRefused  # (keyed with hashing off: rcpt_mode refuses it first)

        raise StateRefused(f"{database_file(conn)}: correlator {LINK_KEYS} {stored[:40]!r} cannot be read with "
                           f"hash_recipients {'on' if wanted == LINKS_KEYED else 'off'}: the store is not this "
                           "program's, or damaged: move it aside (timelines restart empty)")
    if row is None or row[0] != stored:
        conn.execute("INSERT OR REPLACE INTO corr_meta VALUES (?, ?)", (LINK_KEYS, stored))
    return stored


def now_keyed_warning(stored: str, keyed_as: str) -> str:
    """Said at a start with hash_recipients over a store holding timelines of plain recipients (check-config says it
    too): let in, the older timelines keep their addresses until pruned and are no longer found by recipient."""
    return (f"correlator recipients were stored as {stored} but are now keyed as {keyed_as}: older timelines will "
            "not be found by recipient")


def unkeyed_links_warning(db: str) -> str:
    """Said once at a start with hash_recipients over a store whose Message-Id and jobId keys are not keyed (written
    before they were, or before hashing was on): it keeps them, so that its timelines stay found."""
    return (f"the Message-Id and jobId keys of the correlator store {db} are not keyed (it was written before they "
            "were, or before hash_recipients was on): a copy of the store can be matched against guessed addresses "
            "(a Message-Id, jobId or sender holding the recipient's address is stored without it, its key is not), "
            "without the HMAC key; start a new store to key them: another state_dir, or the store moved aside or "
            "deleted (its timelines, counters and read positions with it)")


def other_key(db: str, stored: str, path: Path, created: bool) -> Exception:
    """The error of a start whose HMAC key is not the one the store's recipients were keyed with: one made now (the
    file was missing: a state directory restored or moved without it) or another. Going on lost every stored timeline
    to lookups by recipient, and marking the store with the new key lost the later ones once the old key was back.
    A key made now is removed again, so that putting the old one back is all it takes. check-config says it in the
    same words."""
    from exporter.state import StateRefused

    if created:
        path.unlink(missing_ok=True)
    what = "is missing" if created else "holds another key"
    return StateRefused(f"{path}: the HMAC key file {what}, and the recipients of the correlator store {db} were "
                        f"keyed with the key {stored}: put that key file back (from the host or the backup the store "
                        "came from), or move the store aside to start a new one with this key")


def hashing_turned_off(db: str, stored: str) -> Exception:
    """The error of a start with `hash_recipients` off over a store holding timelines keyed with an HMAC key. It
    stored recipients in clear beside them, and marked the store `plain`, which forgot the key: a start with another
    key was then let in too (review 4). check-config says it in the same words."""
    from exporter.state import StateRefused

    return StateRefused(f"correlator.hash_recipients: false, but the recipients of the correlator store {db} were "
                        f"keyed with the key {stored} (hash_recipients: true): a start without it would store "
                        "addresses in clear beside them; set hash_recipients: true again, with that key "
                        "(correlator.hmac_key_file), or start a new store to turn hashing off: another state_dir, "
                        "or the store moved aside or deleted (its timelines, counters and read positions with it)")


class StoreNotReady(Exception):
    """The DB or the correlator tables do not exist yet (daemon still starting)."""


class StoreDamaged(sqlite3.DatabaseError):
    """SQLite found the store's file damaged (malformed, or not a database): `PATH: SQLite's words`.

    No retry helps, so callers say so instead of "busy"; a sqlite3.DatabaseError, so code that already
    treats any sqlite3.Error as "store not readable" (attribution) goes on doing so."""


DAMAGE_CODES = frozenset({sqlite3.SQLITE_CORRUPT, sqlite3.SQLITE_NOTADB})


def as_damage(path: Path, exc: sqlite3.Error) -> StoreDamaged | None:
    """`exc` as a StoreDamaged naming `path` when SQLite says the file is damaged; else None.

    A bare DatabaseError (no subclass) is what the sqlite3 module raises for those codes. An extended code
    (SQLITE_CORRUPT_INDEX, ...) is read by its primary code, its low byte."""
    if isinstance(exc, StoreDamaged):
        return exc
    code = getattr(exc, "sqlite_errorcode", None)
    if (code is not None and code & 0xFF in DAMAGE_CODES) or (code is None and type(exc) is sqlite3.DatabaseError):
        return StoreDamaged(f"{path}: {exc}")
    return None


class ReadPool:
    """A few read-only connections shared by API worker threads (FastAPI runs sync routes in a pool).

    Each use runs in its own read transaction, so one response sees one consistent snapshot.
    """

    def __init__(self, path: Path, size: int = 4, cache_kib: int = 16384) -> None:
        self._path = path
        self.cache_kib = cache_kib
        """SQLite page cache of each connection opened from now on."""
        self._idle: queue.LifoQueue[sqlite3.Connection] = queue.LifoQueue()
        self._size = size
        self._opened = 0
        self._closed = False

    def _open(self) -> sqlite3.Connection:
        """A new read connection; closed again if its first statements fail (a damaged file fails here)."""
        if not self._path.exists():
            raise StoreNotReady(f"{self._path} does not exist yet")
        conn = sqlite3.connect(self._path, timeout=5.0, isolation_level=None, check_same_thread=False)
        try:
            conn.execute("PRAGMA query_only=1")
            conn.execute(f"PRAGMA cache_size=-{self.cache_kib}")
        except sqlite3.Error as exc:
            conn.close()
            self._raise(exc)
        return conn

    def _raise(self, exc: sqlite3.Error) -> NoReturn:
        """Raise what a caller should see for `exc`: StoreNotReady for missing tables, StoreDamaged naming the
        file for a damaged one, else `exc` itself."""
        if isinstance(exc, sqlite3.OperationalError) and "no such table" in str(exc):
            raise StoreNotReady(str(exc)) from exc
        damaged = as_damage(self._path, exc)
        if damaged is not None and damaged is not exc:
            raise damaged from exc
        raise exc

    @contextmanager
    def connection(self) -> Iterator[sqlite3.Connection]:
        try:
            conn = self._idle.get_nowait()
        except queue.Empty:
            conn = self._open()
            self._opened += 1
        ok = False
        try:
            conn.execute("BEGIN")
            yield conn
            ok = True
        except sqlite3.Error as exc:
            self._raise(exc)
        finally:
            try:
                conn.execute("ROLLBACK")
            except sqlite3.Error:
                ok = False
            if ok and not self._closed and self._idle.qsize() < self._size:
                self._idle.put(conn)
            else:
                conn.close()

    def close(self) -> None:
        self._closed = True
        while True:
            try:
                self._idle.get_nowait().close()
            except queue.Empty:
                return


SEARCH_INDEXES = ("corr_tl_t0", "corr_tl_vmta", "corr_tl_outcome", "corr_tl_job_t0", "corr_ev_reply_t")
"""Indexes only the API's searches, listings and retention read; linking and attribution never do."""


def drop_search_indexes(conn: sqlite3.Connection) -> None:
    """A store without history (oneshot's, deleted at exit) serves no API: every write to these indexes
    would be thrown away with it (~15% of its write time, bench/README.md eighteenth round)."""
    for name in SEARCH_INDEXES:
        conn.execute(f"DROP INDEX IF EXISTS {name}")


def raise_cache(conn: sqlite3.Connection, nbytes: int) -> None:
    """Grow the connection's page cache to at least `nbytes` (never shrink what the owner chose)."""
    current = conn.execute("PRAGMA cache_size").fetchone()[0]
    page_size = conn.execute("PRAGMA page_size").fetchone()[0]
    have = -current * 1024 if current < 0 else current * page_size
    if have < nbytes:
        conn.execute(f"PRAGMA cache_size=-{nbytes // 1024}")


def used_bytes(conn: sqlite3.Connection) -> int:
    """Bytes in use by the whole DB file (freed pages are reused, so they do not count)."""
    page_size = conn.execute("PRAGMA page_size").fetchone()[0]
    pages = conn.execute("PRAGMA page_count").fetchone()[0]
    free = conn.execute("PRAGMA freelist_count").fetchone()[0]
    return int((pages - free) * page_size)


class Pruned(NamedTuple):
    """What one prune call did: timelines deleted, and whether it stopped on its budget with more to delete."""

    deleted: int
    more: bool


PRUNE_BATCH = 20_000
"""Timelines deleted per transaction (~0.2 s). Each commit writes every page the batch touched, in the table and in
each of its indexes, and the next batch touches many of them again: lowest ids first, 1,000 per transaction deleted
~31k timelines/s, 5,000 ~65k, 20,000 ~90k (bench/README.md, ninth round)."""
PRUNE_PAUSE_S = 0.01
"""What the correlator process waits between two prune batches (CorrelatorSink.prune_pause), so the daemon's
checkpoint commit waiting for the lock gets it (metrics lag): five of its attempts (exporter/writelock.py; with
SQLite's busy handler, which sleeps up to 100 ms, it took 0.1 s: ~7% of the correlator's time at a 5 GB store)."""
PRUNE_BUDGET_S = 1.0
"""Seconds of deleting per prune call. The writer waits meanwhile; a call that stops with more to delete says so,
and its caller comes back after MAINTAIN_BUSY_INTERVAL instead of the usual interval."""


def prune(
    conn: sqlite3.Connection, cutoff: float, max_bytes: int, batch: int | None = None,
    budget_s: float | None = None, pause_s: float = 0.0, now: float | None = None,
) -> Pruned:
    """Delete timelines (with their events) past retention, and the oldest data over the size cap, a batch at a time.

    Timelines go when their *latest* event is older than the cutoff, oldest first; flow buckets follow the cutoff,
    queue events too, but those a stored timeline shows stay with it (`_delete_queue_events`). Over the size cap the
    oldest data of every kind goes, whatever its age (`_shed_oldest`): queue events and flows by time, timelines
    earliest stored first (ids grow as timelines are stored, so a batch of the lowest ids empties whole pages of the
    table and of every slice-led index; deleting by t0 instead scattered each batch over the store: ~4x slower,
    measured), each kind only as far as the oldest batch of the others reaches, so no timeline goes while older
    queue events or flows are left (a store whose bulk was queue events lost every timeline and stayed over the
    cap: review 2026-12-06). Each batch is its own short transaction when the caller has none open, so the writer is
    never held for long and a crash loses no progress. Stops after `budget_s` of work; `batch` and `budget_s`
    default to PRUNE_BATCH and PRUNE_BUDGET_S. `more`: it stopped on its budget with more to delete; over the cap
    with nothing of the correlator's left to delete it is False (the caller can tell by `used_bytes`). `pause_s`: a
    wait after each batch of its own transaction, so another process's writer gets the lock (SQLite's busy handler
    retries every <= 100 ms). `now`: the retention time the cutoff was taken from, kept as RETENTION_TIME by the last
    transaction (no transaction of its own).
    """
    deadline = time.monotonic() + (PRUNE_BUDGET_S if budget_s is None else budget_s)
    own = not conn.in_transaction
    batch = batch or PRUNE_BATCH
    deleted = 0
    while True:
        with _txn(conn):
            ids = [r[0] for r in conn.execute(
                "SELECT id FROM corr_timelines WHERE t0 < ? AND t_last < ? ORDER BY t0 LIMIT ?",
                (cutoff, cutoff, batch),
            )]
            if ids:
                _delete_timelines(conn, ids)
                deleted += len(ids)
            _delete_before(conn, cutoff, batch)
            over = not ids and used_bytes(conn) > max_bytes
            shed = 0
            horizon = cutoff
            if over:
                timelines, shed = _shed_oldest(conn, batch)
                deleted += timelines
                row = conn.execute("SELECT min(t0) FROM corr_timelines").fetchone()
                horizon = max(cutoff, row[0] if row and row[0] is not None else cutoff)
        progress = bool(ids) or shed > 0
        if not progress or time.monotonic() >= deadline:
            with _txn(conn):
                _drop_empty_slices(conn, horizon)
                if now is not None:
                    record_retention_time(conn, now)
            more = progress and (not over or used_bytes(conn) > max_bytes)
            return Pruned(deleted, more)
        if own and pause_s > 0:
            time.sleep(pause_s)
            deadline += pause_s


QUEUE_EVENTS_PER_TIMELINE = 5
"""Queue events (or flow rows, over the size cap) deleted per timeline of a batch: each is one narrow row (a queue event
in two indexes too); a timeline, its events and its index entries are several times that."""


def _shed_oldest(conn: sqlite3.Connection, batch: int) -> tuple[int, int]:
    """Over the size cap: delete the oldest data, of every kind, up to a batch of each. Returns (timelines deleted,
    rows deleted).

    Each kind's oldest batch is read (timelines: the `batch` lowest ids, earliest stored; queue events and flow rows:
    the QUEUE_EVENTS_PER_TIMELINE * `batch` earliest, on corr_qe_t and on the flows' key), and every row up to the
    earliest of their ends goes: the batch of the kind that ends first whole, of the others what is as old (a
    timeline by its first event, a flow row by its bucket's start). A kind with less than a batch left ends nowhere
    (what of it is that old goes). Queue events a kept timeline shows stay (`_delete_queue_events`). Should that
    leave nothing to delete (the oldest queue events are all shown by timelines stored after the batch of ids), the
    timelines that show them go, those that began first first (by t0, up to the same end). Nothing deleted: the
    correlator's tables hold nothing more."""
    tls = conn.execute("SELECT id, t0 FROM corr_timelines ORDER BY id LIMIT ?", (batch,)).fetchall()
    most = batch * QUEUE_EVENTS_PER_TIMELINE
    ends = [max(t0 for _, t0 in tls)] if len(tls) == batch else []
    for sql, n in (("SELECT t FROM corr_queue_events ORDER BY t LIMIT 1 OFFSET ?", most),
                   ("SELECT bucket FROM corr_flows ORDER BY bucket LIMIT 1 OFFSET ?", most)):
        row = conn.execute(sql, (n - 1,)).fetchone()
        if row is not None:
            ends.append(row[0])
    horizon = min(ends, default=math.inf)
    ids = [tl for tl, t0 in tls if t0 <= horizon]
    if ids:
        _delete_timelines(conn, ids)
    rows = len(ids) + _delete_queue_events(conn, math.nextafter(horizon, math.inf), most)
    rows += conn.execute("DELETE FROM corr_flows WHERE bucket <= ?", (horizon,)).rowcount
    if not rows:
        ids = [r[0] for r in conn.execute("SELECT id FROM corr_timelines WHERE t0 <= ? ORDER BY t0 LIMIT ?",
                                          (horizon, batch))]
        _delete_timelines(conn, ids)
        rows = len(ids)
    return len(ids), rows


@contextmanager
def _txn(conn: sqlite3.Connection) -> Iterator[None]:
    """A transaction of our own unless the caller already has one open (then theirs is used)."""
    if conn.in_transaction:
        yield
        return
    begin_immediate(conn)
    try:
        yield
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")


def _delete_timelines(conn: sqlite3.Connection, ids: list[int]) -> None:
    for i in range(0, len(ids), 500):
        chunk = ids[i : i + 500]
        marks = ",".join("?" * len(chunk))
        conn.execute(f"DELETE FROM corr_events WHERE tl IN ({marks})", chunk)
        conn.execute(f"DELETE FROM corr_timelines WHERE id IN ({marks})", chunk)


def _delete_before(conn: sqlite3.Connection, cutoff: float, batch: int) -> None:
    _delete_queue_events(conn, cutoff, batch * QUEUE_EVENTS_PER_TIMELINE)
    conn.execute("DELETE FROM corr_flows WHERE bucket < ?", (int(cutoff // FLOW_BUCKET) * FLOW_BUCKET,))


QUEUE_HOLDERS = 1_000
"""Stored timelines that began before the cutoff read per prune batch, oldest first (one range of corr_tl_t0): the
queue events they show stay. Queue events from the next one's first event on wait for a later prune."""
_QUEUE_EVENTS_BEFORE = "DELETE FROM corr_queue_events WHERE id IN (SELECT id FROM corr_queue_events WHERE {} LIMIT ?)"


def _delete_queue_events(conn: sqlite3.Connection, cutoff: float, most: int) -> int:
    """Delete up to `most` queue events older than `cutoff` that no stored timeline shows; returns how many. A timeline
    shows those of its queue logged from its first event (t0) to its final d/b (t_done; on while pending), both
    included (timeline.py): one that began before the cutoff is kept while its latest event is within retention, and
    its queue events with it.
    Cost: QUEUE_HOLDERS rows, one corr_qe_queue range per queue and window they show, the deletes, and a pass over the
    shown queue events of the oldest stored timelines' queues (on corr_qe_t)."""
    holders = conn.execute("SELECT t0, t_done, queue FROM corr_timelines WHERE t0 < ? ORDER BY t0 LIMIT ?",
                           (cutoff, QUEUE_HOLDERS + 1)).fetchall()
    bound = holders.pop()[0] if len(holders) > QUEUE_HOLDERS else cutoff  # a later timeline may show what is after
    shown: dict[str, list[list[float]]] = {}
    for t0, t_done, name in holders:  # in t0 order: overlapping windows of one queue merge
        if not name:  # no attempt yet: it shows no queue event
            continue
        windows = shown.setdefault(name, [])
        hi = math.inf if t_done is None else t_done
        if windows and t0 <= windows[-1][1]:
            windows[-1][1] = max(windows[-1][1], hi)
        else:
            windows.append([t0, hi])
    marks = ",".join("?" * len(shown))
    left = most - conn.execute(_QUEUE_EVENTS_BEFORE.format(f"t < ? AND queue NOT IN ({marks})"),
                               (bound, *shown, most)).rowcount
    for name, windows in shown.items():
        after = -math.inf
        for lo, hi in (*windows, (bound, bound)):
            if left <= 0:
                return most - left
            if after < min(lo, bound):
                left -= conn.execute(_QUEUE_EVENTS_BEFORE.format("queue = ? AND t > ? AND t < ?"),
                                     (name, after, min(lo, bound), left)).rowcount
            after = hi
            if after >= bound:
                break
    return most - left


def _drop_empty_slices(conn: sqlite3.Connection, cutoff: float) -> None:
    """Unlist the slices pruning emptied, and their scopes: every report and lookup without a scope seeks each
    listed slice. An empty slice goes when its day is past the cutoff, or when its generation is finished
    (older than the newest of its kind, dated or undated: no timeline is created there again), whatever its
    day: under the size cap today's oldest generations empty long before today passes the cutoff. The newest
    generations stay (the writer may still fill them), and so does -1, the legacy undated slice. Once per
    prune, one index seek per listed slice."""
    field = _DAY_FIELD
    generation = f"(day >> {DAY_BITS})"
    undated = f"(day & {field}) = {field}"
    tops = conn.execute(
        f"SELECT max(CASE WHEN {undated} THEN NULL ELSE {generation} END),"
        f" max(CASE WHEN {undated} THEN {generation} END) FROM corr_days WHERE day >= {1 << DAY_BITS}").fetchone()
    gone = conn.execute(
        f"DELETE FROM corr_days WHERE day != {NO_DAY} AND (({SLICE_DAY_SQL}) < ?1"
        f" OR (day >= {1 << DAY_BITS} AND {generation} < CASE WHEN {undated} THEN ?3 ELSE ?2 END))"
        " AND NOT EXISTS (SELECT 1 FROM corr_timelines WHERE qday = corr_days.day)",
        (cutoff // DAY, tops[0] if tops[0] is not None else 0, tops[1] if tops[1] is not None else 0)).rowcount
    if gone:
        conn.execute("DELETE FROM corr_scopes WHERE slice NOT IN (SELECT day FROM corr_days)")
        conn.execute(f"DELETE FROM corr_gen_filters WHERE gen NOT IN (SELECT {generation} FROM corr_days"
                     f" WHERE day >= {1 << DAY_BITS} AND NOT {undated})")
        bump_search_seq(conn)
