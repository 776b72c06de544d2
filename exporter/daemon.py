"""The daemon's lifecycle: startup -> main loop -> shutdown, and the one-shot mode.

startup: open the state database (refusing a damaged one), reload counters and checkpoints from the
last commit, persist a first run's start decision before reading anything, start the listener and
the PMTA API poller. main loop: one tailer pass (read -> parse -> aggregate); every
`tail.checkpoint_interval` the rows read and the offsets + counter values that cover them are queued
to the commit queue (exporter/writer.py), which writes them in order on the state writer thread.
The correlator writes its timelines in a child process of its own by default (`correlator.worker:
process`, exporter/follower.py): it reads the files again from its positions, so the daemon holds no
rows for it. With `worker: thread` the writer thread stores them too, and a slow correlator still
never holds the metrics back: once `tail.max_pending_rows` rows wait, later batches are counted and
kept only as spans of their files, which the writer reads again (exporter/spans.py), so memory stays
bounded; reading pauses only while commits fail (the database is unwritable).
shutdown (SIGTERM/SIGINT): stop reading, commit what was read within
`tail.shutdown_timeout`, close. A crash at any point loses nothing: the next start resumes from the
last checkpoint, counters and offsets alike, and the correlator skips lines it already holds.
"""

from __future__ import annotations

import asyncio
import dataclasses
import errno
import logging
import math
import os
import shutil
import signal
import socket
import sqlite3
import stat
import tempfile
import threading
import time
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry, ProcessCollector

from exporter import gcpolicy, maintenance, warmup
from exporter.aggregate import FIELDS, RecordAggregator
from exporter.classify import IspClassifier, ReplyClassifier, load_classifiers, table_problem
from exporter.config import Config, ConfigError, load_config
from exporter.exposition import rendering
from exporter.filestream import FileStream
from exporter.instancelock import InstanceLock, StateDirInUse, way_out
from exporter.metrics import SelfMetrics, named_self_metrics
from exporter.oneshot import Exposition
from exporter.reconciled import new_run_token
from exporter.records import RecordBatch, shown
from exporter.redact import redact_log_text
from exporter.sinks import RecordSink
from exporter.spans import Span, append_span, deliveries_first, span_at, span_of
from exporter.state import Commit, StateError, StateRefused, StateStore, file_replaced, private_dir
from exporter.tailer import Tailer
from exporter.writer import CommitQueue, describe
from exporter.yamllines import numbered

if TYPE_CHECKING:
    from correlator.reach import Reach

log = logging.getLogger("watchtower.daemon")

STATE_DB = "watchtower.db"
FOLLOWER_GAUGE_INTERVAL = 0.5
"""Seconds between two reads of the correlator process's backlog (watchtower_commit_backlog_bytes)."""
HEALTH_PATHS_SHOWN = 5
"""Paths a /healthz problem names (the count says how many more): its answer stays small."""
FOLLOWER_RESTART_WAIT = 2.0
"""Seconds before a correlator process that died (or could not start) is started again; doubled at each exit in a
row, up to FOLLOWER_MAX_WAIT."""
FOLLOWER_MAX_WAIT = 60.0
"""The longest wait between two starts of a correlator process that keeps exiting (a minute's log line at most)."""
FOLLOWER_STABLE = 60.0
"""A correlator process that ran this long was not crashing: its next exit waits FOLLOWER_RESTART_WAIT again."""
FOLLOWER_LOG_EVERY = 60.0
"""A correlator process that keeps exiting is logged at its first exit, then at most this often."""
FOLLOWER_UNHEALTHY_EXITS = 3
"""Exits (or failed starts) in a row after which /healthz is not ok while the correlator process is down."""
STATE_FILES_CHECK_INTERVAL = 5.0
"""Seconds between two looks at whether the state database and the lock file are still the files opened."""
PAUSED_WAIT = 0.05
"""How often a paused reader looks again at the commit backlog."""


def _correlator(config: Config, db_path: Path, isp: IspClassifier, replies: ReplyClassifier,
                history: bool = True) -> RecordSink | None:
    if not config.correlator.enabled:
        return None
    from correlator.sink import CorrelatorSink

    return CorrelatorSink(config.correlator, db_path, isp_of=isp.classify_rcpt,  # type: ignore[no-any-return]
                          class_of=replies.classify, history=history)


MAX_KEYS_SAID = 12
"""Most changed config keys one SIGHUP line names (the rest are counted)."""


def _read_once(path: Path) -> str | None:
    """What the config file is when SIGHUP must not read it again: a pipe or FIFO (`--config <(envsubst ...)`) or a
    character device (a terminal), read once at the start (a read now would wait on it). None for anything else: a
    regular file (a link to one too: /dev/stdin redirected from a file opens it anew), and one that cannot be looked
    at now (deleted, permissions), which the check reports as the error a restart would meet."""
    try:
        mode = os.stat(path).st_mode
    except OSError:
        return None
    if stat.S_ISFIFO(mode):
        return "a pipe or FIFO"
    return "a character device" if stat.S_ISCHR(mode) else None


def changed_keys(running: Config, edited: Config) -> list[str]:
    """The dotted keys (`tail.poll_interval`, `sources`) whose values differ between two configs, sorted."""
    out: list[str] = []

    def walk(a: Any, b: Any, prefix: str) -> None:
        if isinstance(a, dict) and isinstance(b, dict):
            for key in dict.fromkeys([*a, *b]):
                walk(a.get(key), b.get(key), f"{prefix}.{key}" if prefix else str(key))
        elif a != b:
            out.append(prefix)

    walk(running.model_dump(mode="json"), edited.model_dump(mode="json"), "")
    return sorted(out)


def _ignore_sighup(loop: asyncio.AbstractEventLoop) -> None:
    """After the stop, SIGHUP is ignored, not given back its default action (closing the loop would): a `systemctl
    reload` during the last moments of a stop ended the process with 129 instead of 0."""
    try:
        signal.signal(signal.SIGHUP, signal.SIG_IGN)
    except (ValueError, RuntimeError, OSError):  # not the main thread (tests): not ours
        return
    # Unregistered from the loop without its remove_signal_handler(), which sets the default action first (a
    # SIGHUP in between ended the process) and which closing the loop would call
    handlers = getattr(loop, "_signal_handlers", None)
    if isinstance(handlers, dict):
        handlers.pop(signal.SIGHUP, None)


def _say_moved_files_unread(config: Config, followed: set[str]) -> None:
    """A first run from the beginning reads the files `paths` match, not those PMTA's move-to already put away (a
    long-run review found a file archived 10 s before the first start never counted, nothing said): said, with
    what counts them."""
    import glob

    moved = {m for s in config.sources for pattern in s.moved_to for m in glob.glob(pattern)} - followed
    if moved:
        log.warning("first run: %d files already in `moved_to` (e.g. %s) are not read: tail.start_position applies "
                    "to the files `paths` match; `watchtower oneshot` counts them (a backfill)", len(moved),
                    shown(min(moved)))


async def _load_tables(config: Config) -> tuple[IspClassifier, ReplyClassifier]:
    """`load_classifiers` in a daemon thread of its own, awaited: a stop neither waits for a load in progress (the
    default executor's threads are joined when the loop closes) nor is held by it."""
    loop = asyncio.get_running_loop()
    done: asyncio.Future[tuple[IspClassifier, ReplyClassifier]] = loop.create_future()

    def settle(result: Any, exc: BaseException | None) -> None:
        if not done.done():
            done.set_exception(exc) if exc is not None else done.set_result(result)

    def work() -> None:
        try:
            result, exc = load_classifiers(config), None
        except BaseException as error:  # noqa: BLE001 - handed to the awaiting reload, which says it
            result, exc = None, error
        try:
            loop.call_soon_threadsafe(settle, result, exc)
        except RuntimeError:  # the loop has closed (a stop meanwhile): nobody waits for these tables
            pass

    threading.Thread(target=work, name="sighup-table-load", daemon=True).start()
    return await done


def _report_chore(task: asyncio.Task[None]) -> None:
    """A chore's failure is logged (it has no awaiter to raise to) and the next one is started as usual."""
    if not task.cancelled() and (exc := task.exception()) is not None:
        log.error("%s failed: %s; tried again at its next turn", task.get_name(), describe(exc))


class PollerWatch:
    """Says when the PMTA API poller ends other than by the daemon's stop: nothing awaits its task until shutdown,
    so an end by a bug was silent (queue gauges frozen, /healthz ok) until the daemon restarted."""

    def __init__(self) -> None:
        self.problem: str | None = None

    def follow(self, task: asyncio.Task[None]) -> None:
        task.add_done_callback(self._ended)

    def _ended(self, task: asyncio.Task[None]) -> None:
        if task.cancelled() or (exc := task.exception()) is None:
            return
        self.problem = (f"the PMTA API poller stopped (a bug: {describe(exc)}); queue gauges are not refreshed "
                        "until the daemon restarts")
        log.error("%s", self.problem)
        log.debug("the PMTA API poller's traceback", exc_info=exc)


class StartupError(Exception):
    """The daemon cannot start as configured (e.g. the listen address is taken); the message says why."""


class StoppedBeforeStart(Exception):
    """A stop asked for before the daemon started (while it waited for its listen address): a clean exit, 0."""


class AddressNotHere(StartupError):
    """`listen` names an address this host does not have (yet): waited for at start (`_wait_for_listen_address`)."""


RENDER_YIELD = 0.25
"""Longest the reading waits for one /metrics render (a render of 50k series takes ~40 ms alone)."""
RENDER_YIELD_STEP = 0.005
LISTEN_ADDRESS_WAIT = 30.0
"""Seconds a start waits for its `listen` address to be assigned to this host."""
LISTEN_ADDRESS_RETRY = 0.5


class OneshotStoreError(StateError):
    """oneshot's temporary correlator store failed (a full TMPDIR, an I/O error); the message names it."""


class Pipeline:
    """Tailer output -> aggregator (+ sink), shared by the daemon and oneshot."""

    def __init__(self, config: Config, registry: CollectorRegistry, sink: RecordSink | None,
                 isp: IspClassifier, replies: ReplyClassifier) -> None:
        self.config = config
        self.registry = registry
        self.self_metrics = SelfMetrics(registry)
        self.sink = sink
        self.aggregator = RecordAggregator.for_config(
            config, isp.classify, replies.classify, self.self_metrics,
            lookup_vmta=sink.lookup_vmta if sink is not None else None)
        registry.register(self.aggregator)
        self.pending: list[RecordBatch] = []
        self.pending_rows = 0
        self.spans: list[Span] = []
        """Batches after `pending` that the sinks get by reading their files again (in read order)."""
        self.spill_check: Callable[[], bool] | None = None
        """Asked per batch (daemon): True when a sink is so far behind that rows must not wait in memory."""
        self.keep_rows = True
        """False when the sinks write in another process, which reads the files itself."""

    def on_batch(self, stream: FileStream, batch: RecordBatch) -> None:
        if self.sink is not None:
            self.sink.observe(batch)
            if not self.keep_rows:
                self.sink.release(batch)
                self.aggregator.apply(batch)
                return
            span = span_of(batch)
            if span is not None and (self.spans or (self.spill_check is not None and self.spill_check())):
                append_span(self.spans, span)  # once spilling, the rest of this commit spills too (order)
                self.sink.release(batch)
            else:
                self.pending.append(batch)
                self.pending_rows += len(batch)
        self.aggregator.apply(batch)

    def take_pending(self) -> list[RecordBatch]:
        batches, self.pending, self.pending_rows = self.pending, [], 0
        return batches

    def take_spans(self) -> list[Span]:
        spans, self.spans = self.spans, []
        return spans

    def reload_classifiers(self, isp: IspClassifier, replies: ReplyClassifier) -> None:
        """Swap the classification tables (SIGHUP) of the metrics and of the sink (its timelines' ISP, the
        API's reply classes); cached answers of the old tables are dropped."""
        self.aggregator.wait()  # the batch being folded finishes with the tables it started with
        self.aggregator.isp_of = isp.classify
        self.aggregator.class_of = replies.classify
        self.aggregator.reset_caches()
        reload_sink = getattr(self.sink, "reload_classifiers", None)  # a RecordSink may have no tables
        if reload_sink is not None:
            reload_sink(isp.classify_rcpt, replies.classify)


class Daemon:
    """`watchtower run`: follows the sources until told to stop."""

    def __init__(self, config: Config, registry: CollectorRegistry | None = None, owns_process: bool = False,
                 config_path: Path | None = None, interrupted: Callable[[], bool] | None = None,
                 web_config_path: Path | None = None) -> None:
        self.config = config
        self.interrupted = interrupted
        """Whether the command saw a ^C before `serve` took SIGINT over (exporter.cli.ctrl_c_seen): one that landed
        where it could not be raised (a weakref callback an import ran) stops the daemon as soon as it serves."""
        self.owns_process = owns_process
        """The process is this daemon's (`watchtower run`): once started, it sets the garbage collector's policy
        (exporter/gcpolicy.py). False for a caller that embeds it (tests): their process keeps its own."""
        self.config_path = config_path
        """The file `config` was loaded from: checked again on SIGHUP (`reload`) while it is a regular file (not
        `--config <(envsubst ...)`: a pipe, read once, nothing to read again); None when embedded."""
        self.web_config_path = web_config_path
        """`--web.config.file`, checked again with the config file on SIGHUP (a pipe, as a piped config, is not)."""
        self.registry = registry or CollectorRegistry()
        ProcessCollector(registry=self.registry)
        self.isp, self.replies = load_classifiers(config)
        self.db_path = Path(config.state_dir) / STATE_DB
        private_dir(self.db_path.parent)  # before the correlator writes its key there
        self.instance = InstanceLock(self.db_path.parent)
        """One daemon per state_dir, taken first thing at start (exporter/instancelock.py)."""
        sink = _correlator(config, self.db_path, self.isp, self.replies)
        self.pipeline = Pipeline(config, self.registry, sink, self.isp, self.replies)
        self.follows = sink is not None and config.correlator.worker == "process"
        """The correlator writes in a process of its own (exporter/follower.py); this one only reads and counts."""
        self.run_token = new_run_token()
        """This run, named to the correlator (its process too): a span whose file it does not find waits for the commit
        marked with it, made once the tailer has decided every checkpoint of the last stop (exporter/reconciled.py)."""
        self._reconciled_sent = False
        self._yield_renders = True
        """Reading stops between chunks while a /metrics page is formatted (`_yield_to_render`)."""
        self._start_pending_saved: list[tuple[str, str]] = []
        """The directories pending a start at `end` (exporter.tailer `start_pending`) as last saved."""
        self.store = StateStore(self.db_path, [sink] if sink is not None else [], sinks_elsewhere=self.follows,
                                run=self.run_token)
        metrics = self.pipeline.self_metrics
        self.queue = CommitQueue(self.store, on_committed=self._committed,
                                 on_error=metrics.checkpoint_errors.inc, on_progress=self._backlog_gauges)
        self.pipeline.spill_check = self._sinks_behind
        self.pipeline.keep_rows = not self.follows
        self.follower: Any = None
        self._follower_failures = self._follower_bytes_lost = 0
        self._follower_next_start = 0.0
        self._follower_exit: str | None = None
        self._follower_start_error: str | None = None
        """The error of the last failed attempt to start the correlator process (None once one succeeded)."""
        self._follower_in_a_row = 0
        """Exits and failed starts since the correlator process last ran FOLLOWER_STABLE seconds."""
        self._follower_started_at = 0.0
        self._follower_logged_at = -math.inf
        self._follower_signs: tuple[int, int] | None = None
        """The correlator process's progress and failed-write counts at the last look (`_watch_progress`)."""
        self._follower_quiet_since = 0.0
        """Since when it has neither stored anything nor failed a write while behind (monotonic)."""
        self._progress_looked_at = -math.inf
        self._follower_stalled = False
        """The progress watchdog tripped (correlator.stall_timeout): /healthz 503 until it goes on."""
        restarts, stalled = "watchtower_correlator_restarts_total", "watchtower_correlator_stalled"
        own = named_self_metrics(self.registry, (restarts, stalled)) if self.follows else {}
        self._follower_restarts = own.get(restarts)
        self._follower_stalled_gauge = own.get(stalled)
        if self.follows:  # its memory and CPU on /metrics too: process_* describe this process only
            ProcessCollector(namespace="watchtower_correlator", pid=self._follower_pid, registry=self.registry)
        self.tailer: Tailer | None = None
        self.should_exit = asyncio.Event()
        self._reload_due = False
        self._reloading: asyncio.Task[None] | None = None
        self._reload_again = False
        """A SIGHUP's load of the tables runs one at a time (`reload`): signals during it give one more after it."""
        self._config_check = threading.Lock()
        self._config_checking = self._config_check_again = False
        """A SIGHUP's check of the config file runs in a thread of its own (`check_config_file`), one at a time: a
        signal during it has the file checked again once it ends."""
        self.started = asyncio.Event()
        self.paused = False
        self._tasks: list[asyncio.Task[Any]] = []
        self._poller_watch = PollerWatch()
        self._chores: dict[str, asyncio.Task[None]] = {}
        """The state thread's jobs the reading loop started and does not wait for, by name (`_chore`)."""
        self._server: Any = None
        self._last_commit_ok = time.time()
        self._maintain_error: str | None = None
        self._bytes_lost_seen = 0
        self._skipped_seen = 0
        self.poller: Any = None

    # --- lifecycle -------------------------------------------------------------------------------
    async def serve(self) -> int:
        """Run until SIGTERM/SIGINT; 0 on a clean stop, 1 when the state database cannot be used."""
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            try:
                loop.add_signal_handler(sig, self.should_exit.set)
            except (NotImplementedError, RuntimeError):  # not the main thread (tests)
                pass
        if self.interrupted is not None and self.interrupted():  # a ^C from before, lost where it landed: as if it
            log.info("interrupted before the start: nothing read or written")  # had been raised (nothing started)
            return 130
        hup = False
        try:
            loop.add_signal_handler(signal.SIGHUP, self._sighup)
        except (NotImplementedError, RuntimeError, AttributeError):
            pass
        else:  # `watchtower run` blocked it from its start (cli.main): one sent since is taken now, as a reload
            signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGHUP})
            hup = True
        try:
            await self.startup()
            await self.main_loop()
        except StoppedBeforeStart as exc:
            log.info("%s", exc)
            return 0
        except StateRefused as exc:  # no restart mends it: exit 2, which systemd does not restart
            log.error("%s", exc)
            return 2
        except (StartupError, StateError) as exc:
            log.error("%s", exc)
            return 1
        except Exception as exc:  # noqa: BLE001 - one line for the operator, the traceback at debug level
            log.critical("stopped by an internal error: %s (log_level: debug shows the traceback)", describe(exc))
            log.debug("internal error", exc_info=exc)
            return 1
        finally:
            self.should_exit.set()  # a stop for an error too: a SIGHUP meanwhile reloads nothing
            try:
                await self.shutdown()
            finally:
                if hup:
                    _ignore_sighup(loop)
        return 0

    async def startup(self) -> None:
        try:
            self.instance.acquire()
        except StateDirInUse as exc:
            raise StartupError(str(exc)) from None
        except OSError as exc:
            fix = f": {way_out(self.instance.path)}" if exc.errno in (errno.EACCES, errno.EPERM) else ""
            raise StartupError(f"{self.instance.path}: cannot lock the state directory: "
                               f"{exc.strerror or describe(exc)}{fix}") from None
        # before anything is written: a first start that cannot listen must not commit its start positions (the
        # next start would resume at them, whatever `tail.start_position` says then)
        await self._wait_for_listen_address()
        loaded = await self.store.open()
        self.pipeline.self_metrics.counters_start_ts.set(loaded.counters_start)
        aggregator = self.pipeline.aggregator
        bounds = tuple(aggregator.bounds)
        before = await self.store.keep_buckets(frozenset(aggregator.histograms), bounds)
        if before is not None:
            log.warning("metrics.delay_buckets changed from %s to %s: the delay histograms start again from 0 (their "
                        "stored counts are per bucket of the old bounds)", before, [float(b) for b in bounds])
        for name, key, value in loaded.series:
            if before is None or name not in aggregator.histograms:
                aggregator.restore(name, key, value)
        metrics_only = self.pipeline.sink is None
        self.tailer = Tailer(self.config.sources, self.config.tail, self.pipeline.self_metrics,
                             loaded.checkpoints, first_run=loaded.first_run,
                             fields=FIELDS if metrics_only else None,
                             moved_since=loaded.moved_since_for([s.label for s in self.config.sources]),
                             start_pending=loaded.start_pending)
        self._start_pending_saved = sorted(loaded.start_pending)
        self.tailer.hold_drained = self.follows  # the correlator process reads a file renamed away through it
        if metrics_only:  # chunk N is folded on a worker thread while chunk N+1 is parsed
            self.pipeline.aggregator.run_in_background()
        else:
            self._resume_sinks(loaded.sink_positions)
        if self.follows:  # before the listener: /healthz and the backlog gauge are right from the first answer
            await self.store.read_sink_files()
        log.info("state %s: %s, %d checkpoints, %d series restored", self.db_path,
                 "first run" if loaded.first_run else "resuming", len(loaded.checkpoints), len(loaded.series))
        if loaded.correlator_off_since is not None:
            log.warning("the correlator was off from %s until this start: the records read meanwhile have no "
                        "timelines (the counters count them); timelines go on from what is read next",
                        time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(loaded.correlator_off_since)))
        if self.instance.unclean and not loaded.first_run:
            # What the stopped daemon showed was read, not all committed: shown now, the restored counters would
            # go backwards, and Prometheus counts a drop as a reset (rate() then adds the whole counter again).
            self.pipeline.aggregator.withheld = True
            log.warning("the previous daemon did not stop cleanly (killed, or its last commit failed): the record "
                        "counters stay off /metrics until the files are read to their current end")
        if loaded.first_run:
            await self._persist_start_decision()
        elif self.config.tail.start_position == "beginning" and loaded.checkpoints:
            log.info("tail.start_position: beginning applies to a first start only: files with a checkpoint resume "
                     "there (remove %s to read everything again)", self.db_path)
        self.queue.start()
        if self.follows:
            self._start_follower()
        await self._start_listener()
        if self.config.pmta.url:
            from exporter.queues import QueuePoller

            self.poller = QueuePoller(self.config.pmta, self.registry, self.isp.classify,
                                      vmta_cap=self.pipeline.aggregator.vmta_cap,
                                      deferring_vmtas=self.pipeline.aggregator.take_deferring_vmtas)
            self._tasks.append(task := asyncio.create_task(self.poller.run(), name="pmta-api"))
            self._poller_watch.follow(task)
        if self.owns_process:
            gcpolicy.settle()
        self.started.set()

    def _resume_sinks(self, positions: dict[str, tuple[int, int, str]]) -> None:
        """The sinks stopped behind some checkpoints: they read those files again from their own positions,
        through this process's writer, or, with the correlator in a process of its own, that process alone."""
        assert self.tailer is not None
        by_id = {cp.file_id: cp for cp in self.tailer.known.values()}
        spans = []
        for file_id, position in positions.items():
            cp = by_id.get(file_id)
            if cp is None or position[0] >= cp.offset:
                continue
            spans.append(span_at(file_id, cp.source, cp.path, cp.dev, cp.ino, position, cp.offset,
                                 self.tailer.allowed_records(cp.source), cp, cp.fingerprint))
        if spans:  # reports-only ranges after the others, as the correlator process stores them (exporter/spans.py)
            self.queue.add_backlog(deliveries_first(spans))  # taken only when the sinks write in this process
            log.info("correlator resumes %d files behind their checkpoints (%d bytes to read again)", len(spans),
                     sum(s.remaining for s in spans))
            if self.follows and self.pipeline.sink is not None:  # reports read next find those deliveries
                warmup.warm(spans, self.pipeline.sink)

    async def _persist_start_decision(self) -> None:
        """First run: where each existing file starts (its end, or 0) is committed before any read.

        Otherwise a stop before the first commit would make the next start a first run again and skip,
        to the new end, every record written in between.
        """
        assert self.tailer is not None
        self.tailer.scan()
        cps = [dataclasses.replace(cp) for cp in self.tailer.take_checkpoints()]
        self._start_pending_saved = sorted(self.tailer.start_pending)
        await self.store.write_checkpoint(Commit(checkpoints=cps, start_pending=self._start_pending_saved), start=True)
        log.info("first run: start positions of %d existing files committed (tail.start_position: %s)",
                 len(cps), self.config.tail.start_position)
        if self.config.tail.start_position == "beginning":
            _say_moved_files_unread(self.config, {cp.path for cp in cps})

    async def _start_listener(self) -> None:
        from exporter.http import build_app, make_server

        routes = self.pipeline.sink.asgi_routes() if self.pipeline.sink is not None else None
        app = build_app(self.registry, self.health, [routes] if routes is not None else [],
                        self.config.web.basic_auth_users, refresh=self._refresh_gauges)
        self._server = make_server(app, self.config)
        from exporter.http import exposure_warning

        if (warning := exposure_warning(self.config)) is not None:
            log.warning("%s", warning)
        self._probe_listen_address()
        task = asyncio.create_task(self._serve_listener(), name="http")
        self._tasks.insert(0, task)
        while not self._server.started:
            if task.done():
                exc = task.exception() if not task.cancelled() else None
                if isinstance(exc, StartupError):
                    raise exc
                raise StartupError(f"listener on {self.config.listen} could not start"
                                   + (f": {describe(exc)}" if exc else " (see the error above)"))
            await asyncio.sleep(0.01)
        log.info("listening on %s", self._bound_address())

    async def _wait_for_listen_address(self) -> None:
        """`_probe_listen_address`, waiting up to LISTEN_ADDRESS_WAIT for an address this host does not have yet: at
        boot an IPv6 address is still tentative (duplicate address detection) for a second or two, and a VIP comes
        when keepalived gives it. Exit 2 (a config error, which the shipped unit does not restart) left the daemon
        down for good; after the wait it is exit 1, restarted, and `check-config` still names a wrong address."""
        deadline = time.monotonic() + LISTEN_ADDRESS_WAIT
        said = False
        while True:
            try:
                self._probe_listen_address()
                return
            except AddressNotHere as exc:
                if time.monotonic() >= deadline:
                    raise StartupError(f"{exc} (waited {LISTEN_ADDRESS_WAIT:.0f} s for it)") from None
                if not said:
                    said = True
                    log.warning("%s: waiting up to %.0f s for it (an address still being assigned: IPv6 duplicate "
                                "address detection, a VIP)", exc, LISTEN_ADDRESS_WAIT)
            try:  # a stop (SIGTERM, ^C) ends the wait at once: systemd's TimeoutStopSec= would SIGKILL it
                await asyncio.wait_for(self.should_exit.wait(), LISTEN_ADDRESS_RETRY)
            except TimeoutError:
                continue
            raise StoppedBeforeStart("stopped while waiting for the listen address; nothing was read or written")

    def _probe_listen_address(self) -> None:
        """Bind `listen` once before uvicorn does: a taken or foreign address is then one line naming it, exit 1.
        uvicorn would log its own error and end the process with exit code 3 (not the documented 1)."""
        host, port = self.config.listen_host, self.config.listen_port
        try:
            infos = socket.getaddrinfo(host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
        except OSError as exc:  # socket.gaierror: a host name that does not resolve
            raise StartupError(f"listener could not bind {self.config.listen}: {exc.strerror or exc} "
                               f"(listen: {self.config.listen})") from None
        family, kind, proto, _, address = infos[0]
        try:
            with socket.socket(family, kind, proto) as probe:
                probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn binds: TIME_WAIT is no error
                probe.bind(address)
        except OSError as exc:
            why = (exc.strerror or str(exc)).lower()
            error = AddressNotHere if exc.errno == errno.EADDRNOTAVAIL else StartupError
            raise error(f"listener could not bind {self.config.listen}: {why} "
                        f"(listen: {self.config.listen})") from None

    async def _serve_listener(self) -> None:
        """uvicorn's serve(); its sys.exit() when it cannot bind (the address taken since the probe) becomes a
        StartupError: a SystemExit in a task would end the event loop and the process with uvicorn's code."""
        try:
            await self._server.serve()
        except SystemExit as exc:
            raise StartupError(f"listener could not bind {self.config.listen} (uvicorn exit code {exc.code}; see "
                               f"the error above)") from None

    def _bound_address(self) -> str:
        """host:port the listener is bound to: with port 0 in `listen`, the port the kernel chose."""
        for server in getattr(self._server, "servers", None) or ():
            for sock in getattr(server, "sockets", None) or ():
                name = sock.getsockname()
                if sock.family == socket.AF_INET6:
                    return f"[{name[0]}]:{name[1]}"
                if sock.family == socket.AF_INET:
                    return f"{name[0]}:{name[1]}"
        return self.config.listen

    async def main_loop(self) -> None:
        assert self.tailer is not None
        tail = self.config.tail
        last_commit = last_gauges = last_look = time.monotonic()
        maintain = maintenance.MaintainSchedule()
        while not self.should_exit.is_set():
            if time.monotonic() - last_look >= STATE_FILES_CHECK_INTERVAL:
                last_look = time.monotonic()
                self._check_state_files()
            if self._must_pause():
                self._set_paused(True)
                await self._wait(PAUSED_WAIT)
                self.tailer.look_while_paused()  # the lag gauges go on (sizes only, each poll_interval): not frozen
                now = time.monotonic()
                if now - last_commit >= tail.checkpoint_interval:
                    self._enqueue_checkpoint()
                    last_commit = now
                continue
            self._set_paused(False)
            self._yield_renders = await self._yield_to_render()
            more = await self.tailer.poll(self.pipeline.on_batch, should_stop=self._should_stop_reading)
            if not more and self.pipeline.aggregator.withheld:
                # every file read to its end, beyond where it was at start and so beyond the furthest the stopped
                # daemon can have read: the counters are at least what it showed (a /metrics page flushes first)
                self.pipeline.aggregator.withheld = False
                log.info("read up to where the previous daemon was: the record counters are on /metrics again")
            now = time.monotonic()
            if (now - last_commit >= tail.checkpoint_interval or self.pipeline.pending_rows >= tail.max_pending_rows
                    or self._reconciled_due()):
                self._enqueue_checkpoint()
                last_commit = now
            if self.follows:
                self._watch_follower()
                if now - last_gauges >= FOLLOWER_GAUGE_INTERVAL and self._chore_idle("backlog gauge"):
                    self._chore("backlog gauge", self._follower_gauges())
                    last_gauges = now
            elif maintain.due() and self.store.sinks and self.queue.error is None and self._chore_idle("pruning"):
                self._chore("pruning", self._maintain_then(maintain))
            if more:
                await asyncio.sleep(0)
                continue
            await self._wait(tail.poll_interval)

    # --- chores of the state thread ----------------------------------------------------------------
    def _chore_idle(self, name: str) -> bool:
        task = self._chores.get(name)
        return task is None or task.done()

    def _chore(self, name: str, work: Coroutine[Any, Any, None]) -> None:
        """Run `work` (a job of the state thread) as a task of its own, never awaited by the reading loop.

        The state thread runs one job at a time, and a checkpoint there may wait for the write lock for seconds
        (the correlator's process holds it for a slice; 14 s measured at 20k records/s and a 20 GB store): a job
        the loop awaited behind it stopped the reading, and the metrics, for as long."""
        task = self._chores[name] = asyncio.create_task(work, name=name)
        task.add_done_callback(_report_chore)

    async def _maintain_then(self, schedule: maintenance.MaintainSchedule) -> None:
        schedule.ran(await self._maintain())

    def _should_stop_reading(self) -> bool:
        """Asked between chunks: stop requested, commits fail with a full backlog, or a /metrics page is being
        formatted (unless the last wait for one ran out: reading goes on whatever the scrapes)."""
        return self.should_exit.is_set() or self._must_pause() or (self._yield_renders and rendering())

    async def _yield_to_render(self) -> bool:
        """Wait (at most RENDER_YIELD seconds) while a /metrics page is formatted in its worker thread, which shares
        the GIL with reading and folding: a scrape took 144 ms at 20k records/s instead of ~40. False when the wait
        ran out (scrapes back to back): the next chunks are then read whatever renders run, so reading never
        starves."""
        if not rendering():
            return True
        deadline = time.monotonic() + RENDER_YIELD
        while rendering() and not self.should_exit.is_set():
            if time.monotonic() >= deadline:
                return False
            await asyncio.sleep(RENDER_YIELD_STEP)
        return True

    def _sinks_behind(self) -> bool:
        """The sinks are `tail.max_pending_rows` behind, or still reading spans: keep new rows as spans."""
        q = self.queue
        return q.span_bytes > 0 or q.backlog_rows + self.pipeline.pending_rows >= self.config.tail.max_pending_rows

    def _must_pause(self) -> bool:
        """Commits are failing and the backlog is full: reading on would only widen what is re-read later."""
        q, p = self.queue, self.pipeline
        return q.error is not None and (
            q.backlog_rows + p.pending_rows >= self.config.tail.max_pending_rows or bool(p.spans) or q.span_bytes > 0)

    async def _wait(self, seconds: float) -> None:
        try:
            await asyncio.wait_for(self.should_exit.wait(), timeout=seconds)
        except TimeoutError:
            pass

    def _set_paused(self, paused: bool) -> None:
        if paused != self.paused:
            self.paused = paused
            if paused:
                log.info("reading paused: %d rows wait to be committed (tail.max_pending_rows %d)",
                         self.queue.backlog_rows + self.pipeline.pending_rows, self.config.tail.max_pending_rows)
            else:
                log.info("reading resumed")

    async def _maintain(self) -> bool:
        """Retention pruning; a failure (disk full, ...) is reported and retried later, never fatal. True: more
        to do."""
        try:
            more = await self.store.maintain()
        except Exception as exc:  # noqa: BLE001
            text = describe(exc)
            if text != self._maintain_error:
                log.error("correlator maintenance on %s failed: %s; retrying in %.0fs", self.db_path, text,
                          maintenance.MAINTAIN_INTERVAL)
            self._maintain_error = text
            self.pipeline.self_metrics.maintenance_errors.inc()
            return False
        self._maintain_error = None
        return more

    async def shutdown(self) -> None:
        log.info("shutting down")
        deadline = time.monotonic() + self.config.tail.shutdown_timeout
        # nothing read: as clean as the previous stop left it; once reading started, clean only when the drain below
        # says everything shown is committed (an exception before that leaves the pid: the next start holds)
        clean = not self.instance.unclean and not self.started.is_set()
        try:
            if self.tailer is not None and self.started.is_set():
                self._enqueue_checkpoint()
                complete = await self.queue.drain(max(0.0, deadline - time.monotonic()))
                # all shown is committed, and the previous daemon's showing was matched (not withheld any more)
                clean = complete and not self.pipeline.aggregator.withheld
                if not complete:
                    log.warning("stopped before committing everything read (%d rows wait, commit error: %s); "
                                "those records are read again at the next start", self.queue.backlog_rows,
                                self.queue.error or "none")
                elif self.queue.span_bytes:
                    log.info("the correlator resumes %d bytes behind at the next start (read again from the "
                             "files)", self.queue.span_bytes)
            if self.tailer is not None:
                await self.tailer.close()
        finally:
            for chore in self._chores.values():
                chore.cancel()  # a job already on the state thread runs to its end before the store closes
            await asyncio.gather(*self._chores.values(), return_exceptions=True)
            await self._stop_follower(deadline)
            self.pipeline.aggregator.close()
            if self._server is not None:
                self._server.should_exit = True
            for task in self._tasks[1:]:
                task.cancel()
            await asyncio.gather(*self._tasks, return_exceptions=True)
            try:
                await self.store.close()
            finally:
                self.instance.release(clean=clean)

    def _check_state_files(self) -> None:
        """Raise StateError (the daemon stops with 1) when the state database, its -wal or -shm, or the lock file was
        deleted under it: commits would go on into a file no one reads again, a second index of the log would corrupt
        the database, and a second daemon could take the directory."""
        looks = ((self.store.path, self.store.identity,
                  "what this daemon commits from now on is lost: its next start is a first run (counters restart "
                  "at 0, files are read according to tail.start_position)"),
                 (self.instance.path, self.instance.identity,
                  "it no longer keeps a second daemon out of the state directory; the next start takes a new one "
                  "and resumes where this one committed"))
        sides = tuple((side, identity, "a process that opens the database now (a correlator process restarted) "
                       "would make a second one beside the one this daemon holds, and their writes would corrupt the "
                       "database; the next start goes on from what was committed")
                      for side, identity in self.store.wal_identities.items())
        for path, identity, consequence in looks + sides:
            how = file_replaced(path, identity) if identity is not None else None
            if how is not None:
                raise StateError(f"{path}: {how}; stopping: {consequence}")

    # --- the correlator process (correlator.worker: process) --------------------------------------
    def _start_follower(self) -> None:
        """Start the correlator process. Spawning it can fail (no /dev/shm for its shared counters, the
        process limit, ENOMEM): that is reported and retried like an exit, and the metrics go on."""
        from exporter import follower

        try:
            handle = follower.start(self.config, self.run_token)
        except Exception as exc:  # noqa: BLE001 - the correlator's problem, never the daemon's end
            error = describe(exc)
            self._follower_exit = f"correlator process could not start: {error}"
            wait = self._follower_down()
            if error != self._follower_start_error:
                log.error("%s; retrying in %.0fs, then less and less often (nothing is lost: it resumes from its "
                          "positions)", self._follower_exit, wait)
            self._follower_start_error = error
            self.follower = None  # a dead predecessor's last write error is not current any more
            return
        self.follower = handle
        self._follower_started_at = time.monotonic()
        self._follower_failures = self._follower_bytes_lost = 0
        self._follower_signs = None  # a new process: the watchdog's clock starts again
        if self._follower_start_error is not None:
            log.warning("correlator process started after failed attempts (the last: %s)",
                        self._follower_start_error)
            self._follower_start_error = None
        log.info("correlator process started (pid %s)", handle.process.pid)

    def _watch_follower(self) -> None:
        """Report the correlator process's failed writes; restart it when dead or when it could not be
        started (at most every FOLLOWER_RESTART_WAIT seconds), saying why once."""
        if self._follower_start_error is not None:
            if time.monotonic() >= self._follower_next_start:
                self._follower_exit = None
                self._restart_follower()
            return
        handle = self.follower
        if handle is None:
            return
        failures = handle.failures.value
        if failures > self._follower_failures:
            self.pipeline.self_metrics.checkpoint_errors.inc(failures - self._follower_failures)
            self._follower_failures = failures
        lost = handle.bytes_lost.value
        if lost > self._follower_bytes_lost:
            self.pipeline.self_metrics.commit_backlog_bytes_lost.inc(lost - self._follower_bytes_lost)
            self._follower_bytes_lost = lost
        proc = handle.process
        now = time.monotonic()
        if proc.is_alive():
            if self._follower_in_a_row and now - self._follower_started_at >= FOLLOWER_STABLE:
                self._follower_in_a_row = 0  # it ran: not a crash loop
            if now - self._progress_looked_at >= FOLLOWER_GAUGE_INTERVAL:
                self._progress_looked_at = now
                self._watch_progress(handle, now)
            return
        self._unstalled(None)  # its exit is said next
        if self._follower_exit is None:
            self._follower_exit = f"correlator process exited with code {proc.exitcode}"
            wait = self._follower_down()
            if self._follower_in_a_row == 1 or now - self._follower_logged_at >= FOLLOWER_LOG_EVERY:
                self._follower_logged_at = now
                again = f" ({self._follower_in_a_row} times in a row)" if self._follower_in_a_row > 1 else ""
                log.error("%s%s; restarting it in %.0fs (nothing is lost: it resumes from its positions)",
                          self._follower_exit, again, wait)
        if now >= self._follower_next_start:
            self._follower_exit = None
            self._restart_follower()

    def _watch_progress(self, handle: Any, now: float) -> None:
        """The progress watchdog: a live correlator process that neither stores anything nor fails a write (failures
        are said on their own) for correlator.stall_timeout while it is behind is stalled (stopped, hung, waiting for
        a lock held elsewhere): one ERROR, /healthz 503, watchtower_correlator_stalled 1, until it goes on (INFO).
        Its progress count moves at every slice stored and every look that finds nothing to store, so a slow one
        that advances never trips it, nor an idle one (nothing behind here either)."""
        signs = (handle.progress.value, handle.failures.value)
        if signs != self._follower_signs or self._sink_process_behind() == 0:
            if self._follower_stalled:
                went_on = "it stores again" if signs != self._follower_signs else "nothing is left for it to store"
                self._unstalled(f"{went_on} after {now - self._follower_quiet_since:.0f}s without progress")
            self._follower_quiet_since = now
            self._follower_signs = signs
            return
        if not self._follower_stalled and now - self._follower_quiet_since >= self.config.correlator.stall_timeout:
            self._follower_stalled = True
            if self._follower_stalled_gauge is not None:
                self._follower_stalled_gauge.set(1)
            log.error("%s; it is not restarted (a stopped process goes on when continued, a lock held elsewhere is "
                      "taken once freed); /healthz is 503 until it stores again (docs/reliability.md)",
                      self._stall_problem(now))

    def _unstalled(self, why: str | None) -> None:
        """The watchdog clears: said (INFO) with `why`, silently for a process that exited (its exit is said)."""
        if not self._follower_stalled:
            return
        self._follower_stalled = False
        if self._follower_stalled_gauge is not None:
            self._follower_stalled_gauge.set(0)
        if why is not None:
            pid = self.follower.process.pid if self.follower is not None else None
            log.info("correlator process makes progress again (pid %s): %s", pid, why)

    def _stall_problem(self, now: float) -> str:
        """The stalled correlator process as /healthz and the log line name it (its lock's holder when it waits)."""
        from exporter.follower import LOCK_FILE, process_state

        handle = self.follower
        pid = handle.process.pid if handle is not None else None
        waiting = handle.lock_wait.value if handle is not None else 0
        if waiting:  # the holder is the one stopped or hung: named, with what it is doing
            holder = f"pid {waiting}" if waiting > 0 else "a process whose pid cannot be known here"
            seen = process_state(waiting) if waiting > 0 else None
            if seen is not None and seen[1] in ("T", "t"):
                holder += f", stopped: `kill -CONT {waiting}` lets it see its daemon gone and exit"
            why = f"waiting for {self.db_path.with_name(LOCK_FILE)}, held by {holder}"
        else:
            seen = process_state(pid) if pid is not None else None
            why = {"T": f"stopped by a signal (SIGSTOP, or a debugger): `kill -CONT {pid}` lets it go on",
                   "t": "stopped by a debugger",
                   "D": "blocked in uninterruptible I/O (a hung disk or network file system?)"}.get(
                       seen[1] if seen is not None else "", "hung, or blocked on a lock")
        return (f"correlator process stalled (pid {pid}): stored nothing for {now - self._follower_quiet_since:.0f}s "
                f"while {self._sink_process_behind()} bytes behind ({why}); timelines wait, the counters go on, "
                "nothing is lost")

    def _follower_down(self) -> float:
        """One more exit or failed start in a row: when to try again (doubling waits, capped)."""
        self._follower_in_a_row += 1
        doublings = min(self._follower_in_a_row - 1, 32)  # capped before the power: 2.0 * 2**1024 overflows
        wait = min(FOLLOWER_RESTART_WAIT * 2 ** doublings, FOLLOWER_MAX_WAIT)
        self._follower_next_start = time.monotonic() + wait
        return wait

    def _restart_follower(self) -> None:
        """Start the correlator process again, counted (watchtower_correlator_restarts_total: the crash-loop alert)."""
        if self._follower_restarts is not None:
            self._follower_restarts.inc()
        self._start_follower()

    async def _follower_gauges(self) -> None:
        try:
            await self.store.read_sink_files()
            if self.tailer is not None:
                self.tailer.release_held(self.store.sink_files)
        except sqlite3.Error as exc:  # busy for long: the next look will do
            log.debug("correlator backlog not read: %s", exc)
        self._backlog_gauges()

    def _sink_process_behind(self) -> int:
        """Bytes the correlator process has yet to store: from its positions to what this daemon has *read*.

        The database's offsets lag the reading by up to a checkpoint interval, and the process can only
        see committed ones; measured against them alone a backlog read since the last checkpoint looked
        caught up. The positions are refreshed every FOLLOWER_GAUGE_INTERVAL: an older one only makes the
        figure larger, never 0 too soon. A file read but not committed yet counts whole (the process
        starts it at byte 0)."""
        if not self.follows:  # the writer thread's backlog is its spans (queue.span_bytes)
            return 0
        read = {cp.file_id: cp.offset for cp in self.tailer.known.values()} if self.tailer is not None else {}
        behind = 0
        for file_id, (offset, sink) in self.store.sink_files.items():
            behind += max(0, max(offset, read.pop(file_id, 0)) - sink)
        return behind + sum(read.values())

    def _follower_pid(self) -> str:
        """For ProcessCollector: the correlator process's pid; a name with no /proc entry while there is
        none (it then reports nothing)."""
        handle = self.follower
        pid = handle.process.pid if handle is not None else None
        return str(pid) if pid is not None else "none"

    def _signal_follower(self, signum: int) -> None:
        handle = self.follower
        if handle is None or not handle.process.is_alive() or handle.process.pid is None:
            return
        try:
            os.kill(handle.process.pid, signum)
        except ProcessLookupError:  # exited meanwhile: its successor loads the tables at start
            pass

    async def _stop_follower(self, deadline: float) -> None:
        if self.follower is None:
            return
        proc = self.follower.process
        if proc.is_alive():
            proc.terminate()  # SIGTERM: it ends after the slice in flight; its positions are committed
        while proc.is_alive() and time.monotonic() < deadline + 1.0:
            await asyncio.sleep(0.05)
        if proc.is_alive():
            proc.kill()  # the slice in flight rolls back; nothing is lost
        proc.join(timeout=1.0)

    def _sighup(self) -> None:
        """SIGHUP's handler: one reload for the signals of a burst (each of a `kill -HUP` loop reloaded the tables on
        the event loop: a stop took minutes), none once stopping."""
        if self.should_exit.is_set() or self._reload_due:
            return
        self._reload_due = True
        asyncio.get_running_loop().call_soon(self._reload_when_due)

    def _reload_when_due(self) -> None:
        self._reload_due = False
        if self.should_exit.is_set():
            return
        if self._reloading is not None and not self._reloading.done():
            self._reload_again = True  # one more load once this one has ended (its table may be the older)
            return
        self._reloading = asyncio.get_running_loop().create_task(self.reload())

    async def reload(self) -> None:
        """SIGHUP: load the classification tables again; on error keep the current ones and say why. The config
        file is checked too (`check_config_file`): only the tables are reloaded, so what else changed is named.
        The load runs in a thread (`_load_tables`): an operator's table of a few MiB took ~14 s, and on the event
        loop /metrics, /healthz and tailing stood still for as long. The tables are swapped here, on the loop."""
        while True:
            self._reload_again = False
            self.check_config_file()
            try:
                isp, replies = await _load_tables(self.config)
            except Exception as exc:  # noqa: BLE001 - a bad table must not kill the daemon
                log.error("SIGHUP: classification tables not reloaded (%s); keeping the current ones",
                          table_problem(exc))
            else:
                if self.should_exit.is_set():
                    return  # stopping: nothing to swap
                self._swap_tables(isp, replies)
            if not self._reload_again or self.should_exit.is_set():
                return

    def _swap_tables(self, isp: IspClassifier, replies: ReplyClassifier) -> None:
        self.isp, self.replies = isp, replies
        self.pipeline.reload_classifiers(isp, replies)
        self._signal_follower(signal.SIGHUP)  # the correlator's own process loads them too
        if self.poller is not None:
            self.poller.reload_isp(isp.classify)
        log.info("SIGHUP: classification tables reloaded (isp: %s, replies: %s)",
                 self.config.classify.isp_file or "shipped", self.config.classify.replies_file or "shipped")

    def check_config_file(self) -> None:
        """SIGHUP said "reloaded" whatever the config file had become: an edit that broke it went unnoticed until
        the next crash or reboot, which then exited 2 (and the shipped unit gives up on 2). The file is checked as a
        start checks it (`_check_config_file`), in a thread: the machine checks resolve the `listen` host, which
        can take seconds, and the event loop serves scrapes meanwhile. One check at a time; a SIGHUP during one has
        the file checked again when it ends."""
        if self.config_path is None:
            return
        for path in (self.config_path, self.web_config_path):
            kind = _read_once(path) if path is not None else None
            if kind is not None:  # a read would wait on it; a file gone or unreadable is checked: the error a restart
                log.info("SIGHUP: %s is %s, not a regular file (read once, at the start): not checked at this signal "
                         "(only the classification tables are reloaded)", path, kind)  # meets
                return
        with self._config_check:
            if self._config_checking:
                self._config_check_again = True
                return
            self._config_checking = True
        threading.Thread(target=self._check_config_file_until_settled, args=(self.config_path,),
                         name="sighup-config-check", daemon=True).start()  # a stop does not wait for a resolver

    def _check_config_file_until_settled(self, path: Path) -> None:
        while True:
            try:
                self._check_config_file(path)
            finally:
                with self._config_check:
                    again, self._config_check_again = self._config_check_again, False
                    self._config_checking = again
            if not again:
                return

    def _check_config_file(self, path: Path) -> None:
        """A file that does not load, or that a start would refuse (`preflight.problems`, as `run` calls it), is one
        ERROR naming each problem: a restart would exit 2. What only this daemon holds is no problem: the checks
        bind the `listen` host with port 0, take no lock and read the store through SQLite only (a descriptor of
        the database opened and closed beside SQLite's would drop its locks: `open_db`). Otherwise settings that differ
        from the running ones are named (by key, never by value: some are secrets) as taking effect at the next
        restart."""
        from exporter import preflight

        try:
            edited = load_config(path, web_config_file=self.web_config_path)
        except ConfigError as exc:  # (exc.path: the config file, or --web.config.file)
            log.error("SIGHUP: %s is invalid now (%s): still running as started; a restart would fail until it is "
                      "fixed (`watchtower check-config` says the same)", exc.path, "; ".join(numbered(exc.problems,
                                                                                                       exc.lines)))
            return
        except OSError as exc:
            log.error("SIGHUP: %s cannot be read now (%s): still running as started; a restart would fail until it "
                      "can be", path, exc.strerror or exc)
            return
        except Exception as exc:  # noqa: BLE001 - a check must not end the daemon
            log.error("SIGHUP: %s could not be checked (%s); still running as started", path, describe(exc))
            return
        try:
            problems = preflight.problems(edited, waits_for_address=True, open_db=self.db_path)
        except OSError as exc:  # as `run` says it (cli._load)
            problems = [f"cannot check: {preflight.unreachable(exc)}"]
        except Exception as exc:  # noqa: BLE001 - a check must not end the daemon
            log.error("SIGHUP: %s could not be checked (%s); still running as started", path, describe(exc))
            return
        if problems:
            log.error("SIGHUP: %s would be refused by a start now (%s): still running as started; a restart would "
                      "exit 2 until it is fixed (`watchtower check-config` says the same)", path,
                      "; ".join(problems))
            return
        changed = changed_keys(self.config, edited)
        if changed:
            shown_keys = ", ".join(changed[:MAX_KEYS_SAID]) + (
                f" and {len(changed) - MAX_KEYS_SAID} more" if len(changed) > MAX_KEYS_SAID else "")
            files = f"{path} (with {self.web_config_path})" if self.web_config_path is not None else str(path)
            log.warning("SIGHUP: %s changed %s since the start: only the classification tables' contents are "
                        "reloaded; these settings take effect at the next restart", files, shown_keys)

    # --- commits ---------------------------------------------------------------------------------
    def _enqueue_checkpoint(self) -> None:
        assert self.tailer is not None
        p = self.pipeline
        commit = Commit(
            checkpoints=[dataclasses.replace(cp) for cp in self.tailer.take_checkpoints()],
            series=p.aggregator.take_dirty(),
            batches=p.take_pending(),
            forget_before=time.time() - self.config.tail.forget_after,
            spans=p.take_spans(),
            moved_since=self.tailer.moved_to.since,
        )
        commit.started_at_end, self.tailer.started_at_end = self.tailer.started_at_end, set()
        pending = sorted(self.tailer.start_pending)
        if pending != self._start_pending_saved:  # a directory listed at last: saved even with nothing else
            commit.start_pending = self._start_pending_saved = pending
        if self._reconciled_due():  # with the re-keyed checkpoints taken above
            commit.reconciled = self.run_token
            self._reconciled_sent = True
        if commit.checkpoints or commit.series or commit.batches or commit.spans or commit.reconciled \
                or commit.start_pending is not None:
            self.queue.put(commit)
        self._backlog_gauges()

    def _reconciled_due(self) -> bool:
        """The tailer has just decided every checkpoint of the last stop: commit now, not at the next tick. The
        correlator waits RECONCILE_WAIT at most for the mark, and a `tail.checkpoint_interval` as long made it late."""
        return not self._reconciled_sent and self.tailer is not None and self.tailer.reconciled

    def _backlog_gauges(self) -> None:
        m = self.pipeline.self_metrics
        m.commit_backlog_rows.set(self.queue.backlog_rows)
        m.commit_backlog_bytes.set(self.queue.span_bytes + self._sink_process_behind())
        lost = self.store.bytes_lost - self._bytes_lost_seen
        if lost > 0:
            m.commit_backlog_bytes_lost.inc(lost)
            self._bytes_lost_seen += lost
        attributor = getattr(self.pipeline.sink, "attributor", None)
        skipped = attributor.skipped - self._skipped_seen if attributor is not None else 0
        if skipped > 0:
            m.attribution_skipped.inc(skipped)
            self._skipped_seen += skipped

    def _committed(self, when: float) -> None:
        self._last_commit_ok = when
        self.pipeline.self_metrics.last_checkpoint_ts.set(when)

    # --- health ----------------------------------------------------------------------------------
    def _refresh_gauges(self) -> None:
        """Before each /metrics snapshot: the files followed and the bytes behind from the sizes seen now, as /healthz
        reports them (a read pass sets them only at its end: a scrape during a long pass showed 0 bytes behind)."""
        if self.tailer is not None:
            self.tailer.update_gauges()

    def health(self) -> dict[str, Any]:
        tailer = self.tailer
        files = len(tailer.streams) if tailer else 0
        behind = sum(s.behind for s in tailer.streams.values()) if tailer else 0
        stuck = self.queue.stuck_for > max(60.0, 10 * self.config.tail.checkpoint_interval)
        problems = []
        if self.queue.error is not None:
            problems.append(f"commits failing: {self.queue.error}")
        elif stuck:
            problems.append(f"commit backlog not written for {self.queue.stuck_for:.0f}s")
        if self._maintain_error is not None:
            problems.append(f"maintenance failing: {self._maintain_error}")
        if self.store.wal_problem is not None:
            problems.append(f"{self.db_path}: {self.store.wal_problem}")
        store_problem = getattr(self.pipeline.sink, "store_problem", None)  # (in the correlator process: its log)
        if store_problem is not None:
            problems.append(store_problem)
        crashing = self._follower_exit is not None and self._follower_in_a_row >= FOLLOWER_UNHEALTHY_EXITS
        if crashing:
            problems.append(f"correlator process keeps exiting: {self._follower_in_a_row} times in a row (the last: "
                            f"{self._follower_exit}); timelines wait, counters go on; see its log lines")
        elif self._follower_exit is not None:
            problems.append(self._follower_exit)
        follower_error = self.follower.failing if self.follower is not None else None
        if follower_error is not None:
            problems.append(f"correlator process: writes failing: {follower_error}")
        stalled = self._follower_stalled
        if stalled:
            problems.append(self._stall_problem(time.monotonic()))
        poller_dead = self._poller_watch.problem
        if poller_dead is not None:
            problems.append(poller_dead)
        unreadable = tailer.unreadable() if tailer else []
        if unreadable:  # not ok=false: the daemon runs and reads the rest (WatchtowerReadErrors says it too)
            shown_paths = ", ".join(shown(p) for p in unreadable[:HEALTH_PATHS_SHOWN])
            more = f" and {len(unreadable) - HEALTH_PATHS_SHOWN} more" if len(unreadable) > HEALTH_PATHS_SHOWN else ""
            problems.append(f"cannot read {len(unreadable)} path{'' if len(unreadable) == 1 else 's'}: {shown_paths}"
                            f"{more} (watchtower_read_errors_total counts the failures; the log says why)")
        return {
            "ok": self.started.is_set() and self.queue.error is None and not stuck and follower_error is None
            and not crashing and poller_dead is None and not stalled,
            "files_followed": files,
            "bytes_behind": behind,
            "last_commit": self._last_commit_ok,
            "commit_backlog_rows": self.queue.backlog_rows + self.pipeline.pending_rows,
            "commit_backlog_bytes": self.queue.span_bytes + sum(s.remaining for s in self.pipeline.spans)
            + self._sink_process_behind(),
            "reading_paused": self.paused,
            "counters_withheld": self.pipeline.aggregator.withheld,  # after an unclean stop, until read that far
            "sources_without_files": tailer.sources_without_files() if tailer else [],
            "problems": [redact_log_text(p) for p in problems] if self.config.correlator.hash_recipients else problems,
        }  # (an error's text, a path: with hashed recipients /healthz shows no local part, as the log lines do)


def run_oneshot(config: Config) -> Exposition:
    """Read every matching file from byte 0 to EOF and return the exposition text (no checkpoint), with the
    paths that could not be read."""
    return asyncio.run(_oneshot(config))


ONESHOT_SLICE_ROWS = 10_000
"""Rows per oneshot commit: two such slices (one read, one written) bound the correlator's memory."""
ONESHOT_LINK_CACHE = 50_000
"""Link-cache entries of a oneshot run (the daemon's: 150,000). A backfill reads each file whole, one after
another, so a transient's or report's timeline is rarely still cached: the 250k corpus runs as many probes
and as fast either way, and the peak RSS is ~25 MB lower (bench/README.md, seventeenth round)."""

ONESHOT_CACHE_BYTES = 4 * 1024 * 1024
"""SQLite page cache of each connection to a oneshot's store (the daemon's: 16 MiB each): a temporary file the OS
caches anyway. A complaint about every delivery of 1M lines, where every row is stored: peak RSS 285 -> 262 MB,
40.1 -> 41.6 s (bench/README.md, twentieth round); a store of the reachable rows alone never fills either."""

ONESHOT_KEEPS_HISTORY = False
"""A oneshot's store is deleted at exit and nothing but vmta attribution reads it, which reads timelines only:
it stores no events, queue events or flows and has no search indexes (correlator.store.SEARCH_INDEXES). The
250k corpus runs in 7.0 s instead of 9.5 s, the exposition is the same (bench/README.md, eighteenth round)."""

ONESHOT_REACHABLE_ONLY = True
"""The oneshot store holds only the rows a report can reach (correlator/reach.py): the files are read once more
before the pass for the reports' keys, and the pass stores ~1% of the rows. The exposition is the same
(bench/README.md, nineteenth round)."""


async def _oneshot(config: Config) -> Exposition:
    """Read everything once (correlator on; the metrics-only oneshot is exporter/oneshot.py), after a first read
    of three columns that says which rows a report can reach (correlator/reach.py). Reading stops every
    ONESHOT_SLICE_ROWS rows (or `tail.max_pending_rows`, if lower) and those rows are committed on the writer
    thread while the next ones are read, one commit in flight at a time: memory stays bounded by about two
    slices whatever the input size."""
    from exporter.exposition import render_sync

    reach = None
    if ONESHOT_REACHABLE_ONLY and config.correlator.enabled:
        from correlator.reach import scan

        reach = scan(config.sources)
    unreadable: list[str] = []
    registry = await _oneshot_store_pass(config, reach, unreadable)
    if reach is not None and reach.missed:  # a file changed under the scan: the pass again, storing every row
        log.info("oneshot: a report appeared that the first read of the files did not hold; reading them again")
        unreadable.clear()
        registry = await _oneshot_store_pass(config, None, unreadable)
    return Exposition.of(render_sync(registry).decode(), unreadable)


ONESHOT_PREFIX = "watchtower-oneshot-"
ONESHOT_MARKER = "watchtower-oneshot.pid"
"""In each oneshot's temporary store directory: the pid of the oneshot that made it. A oneshot killed by SIGKILL (or
a power cut) cannot remove its directory, which holds the store and the HMAC key of hashed recipients: the next
oneshot removes it (`remove_stale_oneshot_dirs`)."""


def _mark_oneshot_dir(path: Path) -> None:
    fd = os.open(path / ONESHOT_MARKER, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(str(os.getpid()))


def _marker_pid(path: str) -> int | None:
    """The pid in a directory's marker file, or None (no marker, a symlink, not a pid)."""
    try:
        fd = os.open(os.path.join(path, ONESHOT_MARKER), os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError:
        return None
    with os.fdopen(fd, "rb") as f:
        text = f.read(32)
    return int(text) if text.isdigit() and 0 < int(text) < 1 << 31 else None


def _running(pid: int) -> bool:
    """Whether `pid` is a process that has not ended (a zombie, killed and not yet reaped by its parent, has)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # EPERM: a process of another user has it
        return True
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read(4096)
    except OSError:
        return True
    return stat[stat.rfind(b")") + 2:][:1] not in (b"Z", b"X")


def remove_stale_oneshot_dirs(parent: Path | str | None = None) -> list[str]:
    """Remove the temporary store directories (`watchtower-oneshot-*` in TMPDIR) that a oneshot left behind when it
    was killed: only directories (never through a symlink) this user owns whose marker names a process that no
    longer runs. One without a marker (not provably watchtower's), or whose pid runs again (reused: kept, the safe
    way), stays. Never raises: the pass goes on whatever it cannot remove."""
    removed: list[str] = []
    try:
        root = os.fspath(parent) if parent is not None else tempfile.gettempdir()
        entries = list(os.scandir(root))
    except OSError:
        return removed
    uid, me = os.getuid(), os.getpid()
    for entry in entries:
        if not entry.name.startswith(ONESHOT_PREFIX):
            continue
        try:
            if not entry.is_dir(follow_symlinks=False) or entry.stat(follow_symlinks=False).st_uid != uid:
                continue
        except OSError:
            continue
        pid = _marker_pid(entry.path)
        if pid is None or pid == me or _running(pid):
            continue
        try:
            shutil.rmtree(entry.path)  # refuses a symlink; never follows one inside
        except OSError as exc:
            log.warning("oneshot: could not remove %s, left by a oneshot (pid %d) that no longer runs: %s",
                        entry.path, pid, exc)
            continue
        log.info("oneshot: removed %s, left by a oneshot (pid %d) that no longer runs", entry.path, pid)
        removed.append(entry.path)
    return removed


async def _oneshot_store_pass(config: Config, reach: Reach | None, unreadable: list[str]) -> CollectorRegistry:
    """One pass into a temporary store (fresh classifiers: the ISP table learns from what it reads); the paths
    it could not read are added to `unreadable`."""
    registry = CollectorRegistry()
    isp, replies = load_classifiers(config)
    remove_stale_oneshot_dirs()
    with tempfile.TemporaryDirectory(prefix=ONESHOT_PREFIX) as tmp:
        _mark_oneshot_dir(Path(tmp))
        try:
            await _oneshot_pass(config, registry, Path(tmp) / STATE_DB, isp, replies, reach, unreadable)
        except (sqlite3.Error, StateError) as exc:  # nothing is printed: a pass that stopped half-way would under-count
            raise OneshotStoreError(
                f"the temporary correlator store in {tmp} failed: {describe(exc)}; it needs up to ~0.3 KB per record"
                " read: free space there or point TMPDIR at a larger file system") from exc
    return registry


async def _oneshot_pass(config: Config, registry: CollectorRegistry, db_path: Path, isp: IspClassifier,
                        replies: ReplyClassifier, reach: Reach | None = None,
                        unreadable: list[str] | None = None) -> None:
    """The read-and-commit loop of `_oneshot`, into a store at `db_path` deleted by the caller; the paths it could
    not read are added to `unreadable`."""
    sink = _correlator(config, db_path, isp, replies, history=ONESHOT_KEEPS_HISTORY)
    attributor = getattr(sink, "attributor", None)
    if attributor is not None:  # every report looked up: the output must not depend on the commits' pace
        attributor.seek_budget = None
        sink.recent.limit = None  # type: ignore[union-attr]  # nor on evictions: the slices bound what is uncommitted
    ingestor = getattr(sink, "ingestor", None)
    if ingestor is not None:
        ingestor.cache_limit = ONESHOT_LINK_CACHE
        sink.use_page_cache(ONESHOT_CACHE_BYTES)  # type: ignore[union-attr]
        ingestor.reach = reach
    pipeline = Pipeline(config, registry, sink, isp, replies)
    store = StateStore(db_path, [sink] if sink is not None else [], throwaway=True)
    await store.open()  # (watchtower_counters_start_timestamp_seconds stays 0: a oneshot's page is the same each run)
    tailer = Tailer(config.sources, config.tail, pipeline.self_metrics, first_run=True, oneshot=True)
    limit = min(config.tail.max_pending_rows, ONESHOT_SLICE_ROWS)
    inflight: asyncio.Future[None] | None = None
    more = True
    first = True
    try:
        while more:
            more = await tailer.poll(pipeline.on_batch, force_scan=first,
                                     should_stop=lambda: pipeline.pending_rows >= limit)
            first = False
            if pipeline.pending_rows >= limit or (not more and pipeline.pending):
                if inflight is not None:
                    await inflight
                inflight = asyncio.ensure_future(store.commit(Commit(batches=pipeline.take_pending())))
        if inflight is not None:
            await inflight
        if unreadable is not None:
            unreadable.extend(tailer.unreadable())
    finally:
        if inflight is not None and not inflight.done():
            await asyncio.gather(inflight, return_exceptions=True)
        await tailer.close()
        await store.close()
