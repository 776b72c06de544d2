"""The daemon's lifecycle: startup -> main loop -> shutdown, and the one-shot mode.

startup: open the state database, reload counters and checkpoints from the last commit, start the
listener and the PMTA API poller. main loop: one tailer pass (read -> parse -> aggregate), a
commit every `tail.checkpoint_interval` on the writer thread, then wait for the next poll.
shutdown (SIGTERM/SIGINT): stop reading, commit what was read, close. A crash between commits
loses nothing: the next start resumes from the last commit, counters and offsets alike.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import signal
import tempfile
import time
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry
from prometheus_client.exposition import generate_latest

from exporter.aggregate import RecordAggregator
from exporter.classify import IspClassifier, ReplyClassifier
from exporter.config import Config
from exporter.filestream import FileStream
from exporter.http import build_app, make_server
from exporter.metrics import SelfMetrics
from exporter.records import RecordBatch
from exporter.sinks import RecordSink
from exporter.state import Commit, StateStore
from exporter.tailer import Tailer

log = logging.getLogger("watchtower.daemon")

STATE_DB = "watchtower.db"
MAX_PENDING_ROWS = 200_000
"""Rows read but not yet committed; past this the reader waits for the writer (backpressure)."""
MAINTAIN_INTERVAL = 30.0


def _classifiers(config: Config) -> tuple[IspClassifier, ReplyClassifier]:
    return IspClassifier.load(config.classify.isp_file), ReplyClassifier.load(config.classify.replies_file)


def _correlator(config: Config, db_path: Path, isp: IspClassifier, replies: ReplyClassifier) -> RecordSink | None:
    if not config.correlator.enabled:
        return None
    from correlator.sink import CorrelatorSink

    return CorrelatorSink(config.correlator, db_path, isp_of=isp.classify_rcpt,  # type: ignore[no-any-return]
                          class_of=replies.classify)


class Pipeline:
    """Tailer output -> aggregator (+ sink), shared by the daemon and oneshot."""

    def __init__(self, config: Config, registry: CollectorRegistry, sink: RecordSink | None,
                 isp: IspClassifier, replies: ReplyClassifier) -> None:
        self.config = config
        self.registry = registry
        self.self_metrics = SelfMetrics(registry)
        self.sink = sink
        self.aggregator = RecordAggregator(
            isp_of=isp.classify,
            class_of=replies.classify,
            buckets=config.metrics.delay_buckets,
            max_vmtas=config.labels.max_vmtas,
            max_pools=config.labels.max_pools,
            senders=config.labels.senders,
            max_senders=config.labels.max_senders,
            self_metrics=self.self_metrics,
            lookup_vmta=sink.lookup_vmta if sink is not None else None,
        )
        registry.register(self.aggregator)
        self.pending: list[RecordBatch] = []
        self.pending_rows = 0

    def on_batch(self, stream: FileStream, batch: RecordBatch) -> None:
        if self.sink is not None:
            self.sink.observe(batch)
            self.pending.append(batch)
            self.pending_rows += len(batch.rows)
        self.aggregator.apply(batch)


class Daemon:
    """`watchtower run`: follows the sources until told to stop."""

    def __init__(self, config: Config, registry: CollectorRegistry | None = None) -> None:
        self.config = config
        self.registry = registry or CollectorRegistry()
        self.isp, self.replies = _classifiers(config)
        self.db_path = Path(config.state_dir) / STATE_DB
        sink = _correlator(config, self.db_path, self.isp, self.replies)
        self.pipeline = Pipeline(config, self.registry, sink, self.isp, self.replies)
        self.store = StateStore(self.db_path, [sink] if sink is not None else [])
        self.tailer: Tailer | None = None
        self.should_exit = asyncio.Event()
        self.started = asyncio.Event()
        self._commit_task: asyncio.Task[None] | None = None
        self._tasks: list[asyncio.Task[Any]] = []
        self._server: Any = None
        self._last_commit_ok = time.time()

    # --- lifecycle -------------------------------------------------------------------------------
    async def serve(self) -> int:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            try:
                loop.add_signal_handler(sig, self.should_exit.set)
            except (NotImplementedError, RuntimeError):  # not the main thread (tests)
                pass
        try:
            await self.startup()
            await self.main_loop()
        finally:
            await self.shutdown()
        return 0

    async def startup(self) -> None:
        loaded = await self.store.open()
        for name, key, value in loaded.series:
            self.pipeline.aggregator.restore(name, key, value)
        self.tailer = Tailer(self.config.sources, self.config.tail, self.pipeline.self_metrics,
                             loaded.checkpoints, first_run=loaded.first_run)
        log.info("state %s: %s, %d checkpoints, %d series restored", self.db_path,
                 "first run" if loaded.first_run else "resuming", len(loaded.checkpoints), len(loaded.series))
        routes = self.pipeline.sink.asgi_routes() if self.pipeline.sink is not None else None
        app = build_app(self.registry, self.health, [routes] if routes is not None else [],
                        self.config.web.basic_auth_users)
        self._server = make_server(app, self.config)
        self._tasks.append(asyncio.create_task(self._server.serve(), name="http"))
        if self.config.pmta.url:
            from exporter.queues import QueuePoller

            poller = QueuePoller(self.config.pmta, self.registry, self.isp.classify)
            self._tasks.append(asyncio.create_task(poller.run(), name="pmta-api"))
        while not self._server.started:
            if self._tasks[0].done():
                self._tasks[0].result()  # raises the bind error
                raise RuntimeError(f"listener on {self.config.listen} stopped during startup")
            await asyncio.sleep(0.01)
        log.info("listening on %s", self.config.listen)
        self.started.set()

    async def main_loop(self) -> None:
        assert self.tailer is not None
        tail = self.config.tail
        last_commit = last_maintain = time.monotonic()
        while not self.should_exit.is_set():
            more = await self.tailer.poll(self.pipeline.on_batch)
            now = time.monotonic()
            if now - last_commit >= tail.checkpoint_interval or self.pipeline.pending_rows >= MAX_PENDING_ROWS:
                await self._checkpoint(wait=self.pipeline.pending_rows >= MAX_PENDING_ROWS)
                last_commit = now
            if now - last_maintain >= MAINTAIN_INTERVAL and self.store.sinks:
                await self.store.maintain()
                last_maintain = now
            if more:
                await asyncio.sleep(0)
                continue
            try:
                await asyncio.wait_for(self.should_exit.wait(), timeout=tail.poll_interval)
            except TimeoutError:
                pass

    async def shutdown(self) -> None:
        log.info("shutting down")
        try:
            if self.tailer is not None:
                await self._checkpoint(wait=True)
                if self._commit_task is not None:
                    await self._commit_task
                await self.tailer.close()
        finally:
            if self._server is not None:
                self._server.should_exit = True
            for task in self._tasks[1:]:
                task.cancel()
            await asyncio.gather(*self._tasks, return_exceptions=True)
            await self.store.close()

    # --- commits ---------------------------------------------------------------------------------
    async def _checkpoint(self, wait: bool) -> None:
        if self._commit_task is not None and not self._commit_task.done():
            if not wait:
                return  # the writer is busy; keep reading and commit more next time
            await self._commit_task
        assert self.tailer is not None
        p = self.pipeline
        commit = Commit(
            checkpoints=[dataclasses.replace(cp) for cp in self.tailer.take_checkpoints()],
            series=p.aggregator.take_dirty(),
            batches=p.pending,
            forget_before=time.time() - self.config.tail.forget_after,
        )
        p.pending = []
        p.pending_rows = 0
        if not commit.checkpoints and not commit.series and not commit.batches:
            return
        self._commit_task = asyncio.create_task(self._commit(commit))
        if wait:
            await self._commit_task

    async def _commit(self, commit: Commit) -> None:
        try:
            await self.store.commit(commit)
        except Exception:
            log.exception("commit to %s failed; will retry with the next checkpoint", self.db_path)
            self.pipeline.self_metrics.checkpoint_errors.inc()
            # Put the series back so the next commit carries them; offsets are re-taken anyway.
            for name, key, _ in commit.series:
                self.pipeline.aggregator.dirty.add((name, key))
            self.pipeline.pending[:0] = commit.batches
            for cp in commit.checkpoints:
                self._uncommit(cp.file_id)
            return
        self._last_commit_ok = time.time()
        self.pipeline.self_metrics.last_checkpoint_ts.set(self._last_commit_ok)

    def _uncommit(self, file_id: str) -> None:
        assert self.tailer is not None
        for stream in self.tailer.streams.values():
            if stream.cp.file_id == file_id:
                stream.committed_offset = -1

    # --- health ----------------------------------------------------------------------------------
    def health(self) -> dict[str, Any]:
        tailer = self.tailer
        files = len(tailer.streams) if tailer else 0
        behind = sum(s.behind for s in tailer.streams.values()) if tailer else 0
        stale = time.time() - self._last_commit_ok > max(60.0, 10 * self.config.tail.checkpoint_interval)
        return {"ok": self.started.is_set() and not stale, "files_followed": files, "bytes_behind": behind,
                "last_commit": self._last_commit_ok}


def run_oneshot(config: Config) -> str:
    """Read every matching file from byte 0 to EOF and return the exposition text (no checkpoint)."""
    return asyncio.run(_oneshot(config))


async def _oneshot(config: Config) -> str:
    registry = CollectorRegistry()
    isp, replies = _classifiers(config)
    with tempfile.TemporaryDirectory(prefix="watchtower-oneshot-") as tmp:
        db_path = Path(tmp) / STATE_DB
        sink = _correlator(config, db_path, isp, replies)
        pipeline = Pipeline(config, registry, sink, isp, replies)
        store = StateStore(db_path, [sink] if sink is not None else [])
        await store.open()
        tailer = Tailer(config.sources, config.tail, pipeline.self_metrics, first_run=True, oneshot=True)
        more = True
        first = True
        while more:
            more = await tailer.poll(pipeline.on_batch, force_scan=first)
            first = False
            if pipeline.pending_rows >= MAX_PENDING_ROWS or (not more and pipeline.pending):
                await store.commit(Commit(batches=pipeline.pending))
                pipeline.pending, pipeline.pending_rows = [], 0
        await tailer.close()
        await store.close()
    return generate_latest(registry).decode()
