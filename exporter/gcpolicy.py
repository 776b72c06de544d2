"""The cyclic garbage collector's policy for a process watchtower runs for hours: the daemon, the correlator process.

Why: their hot paths allocate container objects by the hundred thousand per second (a tuple per row handed to
SQLite's executemany, lists per column), almost all freed by reference counting. With CPython's default thresholds
(700 allocations per young collection, 10 young per middle, 10 middle per full) that is hundreds of collections a
second, and every full one walks every object alive, start-up's included (pydantic's schemas, polars' and the web
stack's modules, the classification tables). A profile of the correlator process in a backfill put 6% of its CPU in
`gc_collect_main` (bench/README.md, twenty-first round).

So, once a process has started (`settle`): one full collection, then everything still alive is frozen (moved to a
generation no collection visits: it lives as long as the process), and a young collection waits for GEN0_THRESHOLD
allocations instead of 700. Cycles are still collected, only later; the middle and full generations keep their
ratios. What start-up leaves is meant to live as long as the process (modules, the config, the tables); one of those
objects dropped later is still freed by reference counting (a SIGHUP's replaced classification tables are), only a
cycle among them would stay. Called by the process's owner only (the command line, the correlator process's entry
point): a library caller (a test, an embedding program) keeps its own policy.
"""

from __future__ import annotations

import gc

GEN0_THRESHOLD = 10_000
"""Allocations of container objects between two young collections (CPython's default: 700). Cyclic garbage waits
at most this many allocations; measured the same as 100,000 (`bench/bench_corr_write.py`)."""


def settle() -> None:
    """Start-up is over: collect once, freeze what survives, space the young collections (see the module)."""
    gc.collect()  # garbage left by start-up is freed now, not frozen for the life of the process
    gc.freeze()
    gen0, gen1, gen2 = gc.get_threshold()
    if gen0:  # 0: the embedding program switched collections off (set_threshold(0)); left so
        gc.set_threshold(max(gen0, GEN0_THRESHOLD), gen1, gen2)
