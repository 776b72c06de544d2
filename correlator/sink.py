"""CorrelatorSink: the RecordSink the daemon drives (see exporter/sinks.py for the call contract).

Threads: `observe` and `lookup_vmta` run on the event loop, `setup`/`write`/`maintain` on the
state writer thread, API queries in FastAPI's threadpool. They share only the in-memory attribution
index (locked) and the read pool; the writer's caches are touched by the writer thread alone.
"""

from __future__ import annotations

import logging
import sqlite3
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from correlator import store
from correlator.attribution import Attributor, RecentDeliveries
from correlator.ingest import Ingestor, IspOf
from correlator.keys import RcptHasher, domain_of, load_or_create_key
from correlator.timeline import ClassOf
from correlator.wallclock import SteadyWallClock
from exporter.config import CorrelatorConfig
from exporter.records import Columns, RecordBatch
from exporter.sinks import Delivery

log = logging.getLogger(__name__)

WRITER_CACHE_BYTES = 16 * 1024**2
"""Page cache the writer connection gets at least: the link indexes take random-key inserts."""


def default_isp_of() -> IspOf:
    """exporter.classify's ISP classifier, imported on first use (rcpt domain if unavailable)."""
    fn: list[IspOf] = []

    def isp_of(rcpt: str, dsn_mta: str) -> str:
        if not fn:
            try:
                from exporter.classify import IspClassifier

                fn.append(IspClassifier.load().classify_rcpt)
            except Exception as exc:  # noqa: BLE001 - degrade to the domain, say so once
                log.warning("ISP classifier unavailable (%s): timelines use the recipient domain", exc)
                fn.append(lambda r, _m: domain_of(r) or "unknown")
        return fn[0](rcpt, dsn_mta)

    return isp_of


def default_class_of() -> ClassOf:
    """exporter.classify's reply classifier, imported on first use ('' if unavailable)."""
    fn: list[ClassOf] = []

    def class_of(isp: str, status: str, diag: str, bounce_cat: str) -> str:
        if not fn:
            try:
                from exporter.classify import ReplyClassifier

                fn.append(ReplyClassifier.load().classify)
            except Exception as exc:  # noqa: BLE001
                log.warning("reply classifier unavailable (%s): events carry no response_class", exc)
                fn.append(lambda *_a: "")
        return fn[0](isp, status, diag, bounce_cat)

    return class_of


def _mib(nbytes: int) -> str:
    return f"{nbytes / 1024**2:.1f} MiB"


class CorrelatorSink:
    """Per-message timelines in the state DB, vmta/pool/isp attribution for f/rb/rs, and the /api/v1 routes."""

    def __init__(
        self,
        config: CorrelatorConfig,
        db_path: Path,
        isp_of: IspOf | None = None,
        class_of: ClassOf | None = None,
        clock: Callable[[], float] = time.time,
        history: bool = True,
    ) -> None:
        """`history=False`: a store only attribution reads (oneshot's): see Ingestor.keep_history."""
        self.config = config
        self.db_path = Path(db_path)
        key = None
        self._key_file: tuple[Path, bool] | None = None
        """(the HMAC key file, whether this start created it): a store keyed with another key refuses it (setup)."""
        if config.hash_recipients:
            key_path = config.hmac_key_file or self.db_path.with_name("correlator-hmac.key")
            created = not key_path.exists()
            key = load_or_create_key(key_path)
            self._key_file = (key_path, created)
        self.hasher = RcptHasher(key)
        self.class_of = class_of or default_class_of()
        self.clock = clock
        self._steady = clock is time.time
        self._retention_clock = SteadyWallClock() if self._steady else clock  # tests pass their own time
        """Retention's now: started again from the store's last retention time in `setup` (correlator/wallclock.py)."""
        self.pool = store.ReadPool(self.db_path)
        self.recent = RecentDeliveries()
        isp_of = isp_of or default_isp_of()
        self.ingestor = Ingestor(self.hasher, isp_of, config.fallback_window, clock, keep_history=history)
        self.attributor = Attributor(self.recent, self.pool, self.hasher, config.fallback_window, clock, isp_of)
        self._writer_cache_bytes = WRITER_CACHE_BYTES
        self.rows_written = 0
        self.timelines_pruned = 0
        self.prune_pause = 0.0
        """Seconds between two prune batches. The correlator process sets it (store.PRUNE_PAUSE_S): the daemon's
        checkpoint commits go to the same database and would otherwise wait for a whole prune run."""
        self.store_problem: str | None = None
        """Why the store stays over `max_db_size` with nothing of the correlator's left to prune (None: it does not),
        for the daemon's /healthz problems; logged once (`maintain`)."""
        self._router: Any = None
        self._api: Any = None
        self.says_store_warnings = True
        """Warn at `setup` of what the store keeps as it is (keys not keyed), and decide its key scheme: the correlator
        process (exporter/follower.py) leaves both to the daemon, which sets the same store up first (one line per
        start; one scheme for the daemon's API and attribution and the process's writes, however often it restarts)."""

    # --- RecordSink ----------------------------------------------------------------------------

    def setup(self, conn: sqlite3.Connection) -> None:
        scheme = store.migrate(conn, self.hasher.fingerprint(), self._key_file, owns_scheme=self.says_store_warnings)
        self.hasher.use_links(scheme)  # shared by the writer, attribution and the API: read once, here
        if self.hasher.hashed and not self.hasher.links.keyed and self.says_store_warnings:
            log.warning("%s", store.unkeyed_links_warning(store.database_file(conn)))
        if not self.ingestor.keep_history:
            store.drop_search_indexes(conn)
        store.raise_cache(conn, self._writer_cache_bytes)
        if self._steady:  # a new process trusts the clock no more than a running one: it goes on from the store's time
            self._retention_clock = SteadyWallClock(start=store.retention_seed(conn, time.time()))

    def use_page_cache(self, nbytes: int) -> None:
        """SQLite page cache of the writer's connection and of each read connection (before `setup` and the first
        lookup; the daemon keeps WRITER_CACHE_BYTES and the ReadPool's default)."""
        self._writer_cache_bytes = nbytes
        self.pool.cache_kib = nbytes // 1024

    def observe(self, batch: RecordBatch) -> None:
        self.recent.observe(batch)

    def release(self, batch: RecordBatch) -> None:
        """A spilled batch (read again later from its file): attribution keeps only its narrow, bounded copy."""
        self.recent.release(batch)

    def lookup_vmta(self, columns: Columns, rows: list[list[str]],
                    resume: bool = False) -> list[Delivery | None]:
        """See exporter.sinks.RecordSink.lookup_vmta: (vmta, pool, isp) of the delivery each report refers to."""
        return self.attributor.lookup(columns, rows, resume)

    def reload_classifiers(self, isp_of: IspOf, class_of: ClassOf) -> None:
        """SIGHUP: timelines written from now on take their ISP from `isp_of`; reply classes shown by the
        API come from `class_of` (the metrics' aggregator gets the same tables)."""
        self.ingestor.reload_isp(isp_of)
        self.attributor.isp_of = isp_of  # the event loop's next lookup (the metrics' aggregator swaps at the same time)
        self.class_of = class_of
        if self._api is not None:
            self._api.class_of = class_of

    def write(self, conn: sqlite3.Connection, batches: list[RecordBatch]) -> None:
        self.recent.committed()  # the previous write's transaction has ended by now
        self.rows_written += self.ingestor.write(conn, batches)
        store.record_retention_time(conn, self._retention_clock())  # for the next start (`setup`); same transaction
        self.recent.written(batches)

    def maintain(self, conn: sqlite3.Connection) -> bool:
        """Bounded retention/size pruning, in short transactions of its own unless one is open.

        True when it stopped on its budget with more to delete (over the size cap at a high rate): the caller
        comes back soon instead of after its usual interval, or the store outgrows the cap. Over the cap with
        nothing of the correlator's left to delete: False, one WARNING, and `store_problem` says it until the store
        is under the cap again."""
        self.recent.committed()  # the last write's transaction has ended by now
        now = self._retention_clock()
        listed = store.search_seq(conn)
        try:
            deleted, more = store.prune(conn, now - self.config.retention, self.config.max_db_size,
                                        pause_s=self.prune_pause, now=now)
        except BaseException:  # batches before the failure are committed: cached links may name what they deleted
            self.ingestor.pruned(0)
            raise
        if deleted:
            self.timelines_pruned += deleted
        if deleted or store.search_seq(conn) != listed:
            # cached links may name deleted timelines, the key filter holds their keys; and a prune that deleted no
            # timeline may still have unlisted slices emptied before (their day passed the cutoff, their generation
            # was finished since): the writer's slice list must not keep them, or a timeline stored there later is
            # not listed again and a lookup without a scope misses it
            self.ingestor.pruned(deleted)
        self._check_cap(conn, more)
        return more

    def _check_cap(self, conn: sqlite3.Connection, more: bool) -> None:
        """Say once that the size cap cannot be reached: prune stopped with nothing more to delete, still over it."""
        used = 0 if more else store.used_bytes(conn)
        cap = self.config.max_db_size
        if used <= cap:
            if self.store_problem is not None:
                log.info("correlator store %s is under correlator.max_db_size again (%s of %s in use)",
                         store.database_file(conn), _mib(used), _mib(cap))
            self.store_problem = None
            return
        if self.store_problem is None:
            self.store_problem = (
                f"correlator store {store.database_file(conn)}: {_mib(used)} in use, over correlator.max_db_size"
                f" ({_mib(cap)}) with no timeline, queue event or flow left to prune: the rest is the daemon's own"
                " (checkpoints, counters); raise max_db_size")
            log.warning("%s", self.store_problem)

    def asgi_routes(self) -> Any:
        if self._router is None:
            from correlator.api import Api, build_router  # the web stack only when a listener mounts it

            api = self._api = Api(self.pool, self.hasher, self.class_of, self.config.max_flow_senders, self.clock)
            from correlator.replies import with_replies  # /api/v1/replies (issue 11), owned by grafana

            self._router = with_replies(build_router(api), api)
            from pages import with_pages  # the HTML pages under /ui (issue 12), owned by hub

            self._router = with_pages(self._router, self.config.grafana_url)
        return self._router

    def close(self) -> None:
        self.pool.close()
