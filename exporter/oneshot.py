"""`watchtower oneshot` with the correlator off: read every file once, print the exposition, exit.

The metrics-only run needs neither the state database (nothing is checkpointed) nor the web stack,
so it imports neither; it reads in bigger chunks than the daemon's per-poll reads (fewer fixed
per-chunk costs) and renders with the cached-line renderer of `/metrics` (exporter.exposition,
byte-identical to prometheus_client's `generate_latest`, ~5x faster at this size). The same
Pipeline, tailer, parser and aggregator as `watchtower run` do the work. With the correlator on,
`exporter.daemon.run_oneshot` runs instead (it commits the timelines as it reads).
"""

from __future__ import annotations

import asyncio

from prometheus_client import CollectorRegistry

from exporter.aggregate import FIELDS
from exporter.config import Config
from exporter.daemon import Pipeline, _classifiers
from exporter.exposition import render_sync
from exporter.tailer import Tailer

BACKFILL_CHUNK_BYTES = 16 * 1024 * 1024
"""Read size of a oneshot run (at least `tail.chunk_bytes`): a backfill reads whole files anyway."""


def run_oneshot(config: Config) -> str:
    """Read every matching file from byte 0 to EOF and return the exposition text (metrics only)."""
    return asyncio.run(_oneshot(config))


async def _oneshot(config: Config) -> str:
    registry = CollectorRegistry()
    isp, replies = _classifiers(config)
    pipeline = Pipeline(config, registry, None, isp, replies)
    tail = config.tail.model_copy(update={"chunk_bytes": max(config.tail.chunk_bytes, BACKFILL_CHUNK_BYTES)})
    tailer = Tailer(config.sources, tail, pipeline.self_metrics, first_run=True, oneshot=True, fields=FIELDS)
    aggregator = pipeline.aggregator
    aggregator.run_in_background()  # chunk N is aggregated while chunk N+1 is parsed
    try:
        more = await tailer.poll(pipeline.on_batch, force_scan=True)
        while more:
            more = await tailer.poll(pipeline.on_batch)
        aggregator.flush()  # the self-metrics it updates are rendered before its own series
    finally:
        aggregator.close()
        await tailer.close()
    return render_sync(registry).decode()
