"""Which page-return policy polars' allocator (jemalloc) runs with, per kind of run.

polars reads `_RJEM_MALLOC_CONF` once, when it loads, so the choice is made before any import of it:
`exporter.cli` sets the daemon's at import, and each oneshot path swaps in its own before it imports
polars. An operator's own setting always wins.

Why these values (bench/README.md, "Where it stands"):
* the daemon keeps freed pages for ~1 s: each poll (every 0.25 s) frees and allocates frames of about
  the same size, and returning them at once meant faulting them in again every poll. At 20k records/s
  the thread correlator's lag grew ~40% slower for ~20-40 MB more RSS, which still falls back
  within a second of a burst.
* a metrics-only oneshot never returns pages (it exits after one pass);
* a oneshot with the correlator keeps them 200 ms: ~8-10% faster, peak RSS still below 300 MB at 1M lines.
"""

from __future__ import annotations

import os
import sys

ENV = "_RJEM_MALLOC_CONF"
DAEMON = "dirty_decay_ms:1000,muzzy_decay_ms:0"
ONESHOT_METRICS = "dirty_decay_ms:-1,muzzy_decay_ms:-1"
ONESHOT_CORRELATOR = "dirty_decay_ms:200,muzzy_decay_ms:0"


def set_default() -> None:
    """The daemon's policy, unless the operator chose one."""
    os.environ.setdefault(ENV, DAEMON)


def use(policy: str) -> bool:
    """Switch to `policy` if polars has not loaded yet and the operator did not choose one; True if switched."""
    if "polars" in sys.modules or os.environ.get(ENV, DAEMON) != DAEMON:
        return False
    os.environ[ENV] = policy
    return True
