"""PMTA Watchtower exporter: PowerMTA accounting files and live queues into Prometheus metrics.

Data flow, one module per stage:

    sources (globs) -> tailer.py (finds files) -> filestream.py (one file: bytes -> complete lines,
    rotation, truncation, offsets) -> parser.py (header-mapped CSV rows, bad lines counted)
    -> records.RecordBatch -> aggregate.py (classify/ ISP + reply class; per-chunk counts into the
    `pmta_*` series of metrics.py) and the correlator sink (correlator/, per-message timelines)
    -> state.py (one SQLite transaction: checkpoints + counters + correlator rows)
    -> http.py (/metrics, /healthz, /api/v1 ...).

    pmta_api.py + queues.py poll PMTA's management interface for the `pmta_queue_*` gauges.
    daemon.py owns the lifecycle (startup -> main loop -> shutdown); cli.py is the entry point.
"""

__version__ = "0.1.0"
__all__ = ["__version__"]
