"""`watchtower oneshot` with the correlator off: read every file once, print the exposition, exit.

The metrics-only run needs neither the state database (nothing is checkpointed), the web stack nor
an event loop, so it imports none of them: the Tailer's `poll()` is driven to completion directly
(`_drive`) over FileStreams that read with plain blocking calls (`filestream.blocking_reads`),
BACKFILL_CHUNK_BYTES at a time. The
same tailer, parser and aggregator as `watchtower run` do the work; the aggregator is the one the
daemon's Pipeline builds (`RecordAggregator.for_config`). It renders with the cached-line renderer of `/metrics`
(exporter.exposition, byte-identical to prometheus_client's `generate_latest`). With the
correlator on, `exporter.daemon.run_oneshot` runs instead (it commits the timelines as it reads).

Folding is a pipeline of four threads (`RecordAggregator.run_in_background(pipelined=True)`): this
thread reads and parses a chunk while one thread derives and groups the previous chunk (polars),
one decides that chunk's reply classes (the classifier, Python) and one labels and merges the
oldest, in file order, so the series, cap admissions and self-metrics are those of an inline pass.

A oneshot process lives for one pass and then exits, so it trades memory the daemon must give
back for CPU (`tune_process`): freed buffers are kept for the next chunk instead of being returned to
the kernel and faulted in again page by page (that alone was ~0.5 s of system time on 116 MB),
and the cyclic garbage collector stays off (a pass creates no reference cycles to collect).
"""

from __future__ import annotations

import gc
import sys
from collections.abc import Coroutine, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, TypeVar

from exporter import allocator

if TYPE_CHECKING:
    from exporter.config import Config
    from exporter.records import RecordBatch

T = TypeVar("T")

BACKFILL_CHUNK_BYTES = 16 * 1024 * 1024
"""Read size of a oneshot run (at least `tail.chunk_bytes`): a backfill reads whole files anyway."""

_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3


class Exposition(str):
    """The exposition text of a pass, plus the paths it could not read (listed, stat'ed or opened): a backfill
    that under-counted must be told apart from a complete one (the command exits 1). A str, so callers that
    only want the text compare and print it as before."""

    unreadable: tuple[str, ...] = ()

    @classmethod
    def of(cls, text: str, unreadable: list[str]) -> Exposition:
        page = cls(text)
        page.unreadable = tuple(unreadable)
        return page


def backfill_sources(config: Config) -> Config:
    """`config` with each source's `moved_to` globs read as its `paths`: a backfill counts every file PMTA wrote
    that is still on disk, the closed ones its move-to put away included (they are read by identity only in the
    daemon, which followed them before they moved). A file both match is one file (read once, by identity)."""
    if not any(source.moved_to for source in config.sources):
        return config
    sources = [source.model_copy(update={"paths": list(dict.fromkeys([*source.paths, *source.moved_to])),
                                         "moved_to": []}) for source in config.sources]
    return config.model_copy(update={"sources": sources})


def tune_process() -> None:
    """Allocator settings for a single pass; call before polars is imported (it reads its jemalloc
    settings when it loads). An operator's own `_RJEM_MALLOC_CONF` is kept."""
    allocator.use(allocator.ONESHOT_METRICS)  # freed pages are reused, never returned: the process exits after one pass
    if sys.platform.startswith("linux"):
        try:  # glibc: chunk-sized bytes from the heap (reused), not a fresh mmap per chunk and copy
            import ctypes

            libc = ctypes.CDLL(None)
            libc.mallopt(_M_MMAP_THRESHOLD, 4 * BACKFILL_CHUNK_BYTES)
            libc.mallopt(_M_TRIM_THRESHOLD, 1 << 30)
        except (OSError, AttributeError):  # not glibc (musl): its defaults, only slower
            pass


@contextmanager
def no_collections() -> Iterator[None]:
    """No cyclic garbage collection during the pass: a pass creates few reference cycles (frames, rows
    and groups are freed by reference counting), so a collection only rescans what is alive (~30 ms in
    ~10 collections, one of them of the older generations). The caller's setting comes back afterwards
    (tests run oneshot in their own process)."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def run_oneshot(config: Config) -> Exposition:
    """Read every matching file from byte 0 to EOF and return the exposition text (metrics only)."""
    tune_process()  # before polars loads
    with no_collections():  # imports create long-lived objects only: ~50 collections saved there too
        from exporter.filestream import blocking_reads

        with blocking_reads():
            return _oneshot(config)


def _drive(coro: Coroutine[Any, Any, T]) -> T:
    """Run a coroutine that never suspends (the Tailer's poll over blocking FileStreams) to its result."""
    try:
        coro.send(None)
    except StopIteration as done:
        return done.value  # type: ignore[no-any-return]
    coro.close()
    raise RuntimeError("a oneshot read suspended: only blocking FileStreams can be driven without an event loop")


def _oneshot(config: Config) -> Exposition:
    from prometheus_client import CollectorRegistry

    from exporter.aggregate import FIELDS, RecordAggregator
    from exporter.classify import load_classifiers
    from exporter.exposition import render_sync
    from exporter.metrics import SelfMetrics
    from exporter.tailer import Tailer

    registry = CollectorRegistry()
    self_metrics = SelfMetrics(registry)  # registered first, as the daemon's Pipeline does: same output order
    isp, replies = load_classifiers(config)
    aggregator = RecordAggregator.for_config(config, isp.classify, replies.classify, self_metrics)
    registry.register(aggregator)
    tail = config.tail.model_copy(update={"chunk_bytes": max(config.tail.chunk_bytes, BACKFILL_CHUNK_BYTES)})
    tailer = Tailer(config.sources, tail, self_metrics, first_run=True, oneshot=True, fields=FIELDS)

    def on_batch(_stream: object, batch: RecordBatch) -> None:
        aggregator.apply(batch)

    aggregator.run_in_background(pipelined=True)  # parse | derive+group | reply classes | label+merge
    try:
        more = _drive(tailer.poll(on_batch, force_scan=True))
        while more:
            more = _drive(tailer.poll(on_batch))
        aggregator.flush()  # the self-metrics it updates are rendered before its own series
        unreadable = tailer.unreadable()
    finally:
        aggregator.close()
        _drive(tailer.close())
    return Exposition.of(render_sync(registry).decode(), unreadable)
