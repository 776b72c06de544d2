"""What a consumer of the record stream besides the metrics must provide (the correlator is one).

The daemon calls `observe` on the event loop as each batch is parsed, `lookup_vmta` when an f/rb/rs
record lacks its vmta/pool or names no provider, and `setup` / `write` / `maintain` on the state writer thread, where
`write` runs inside the same SQLite transaction that stores the sinks' new position in each file
(exporter/backlog.py): a restart (kill -9 included) resumes them there. A sink must skip lines it
already holds (by file id and line number): the rows of a slice may come again after a crash.
"""

from __future__ import annotations

import sqlite3
from typing import Any, NamedTuple, Protocol

from exporter.records import Columns, RecordBatch


class Delivery(NamedTuple):
    """What `lookup_vmta` found of the delivery a report (f/rb/rs row) refers to."""

    vmta: str
    pool: str
    isp: str = ""
    """The delivery's provider as the ISP classifier placed it (its recipient domain / MX): what the metrics take
    for a report whose own fields name no provider (an anonymised FBL recipient, no dsnMta / reportingMta).
    '' when unknown (the store's timeline has none)."""


class RecordSink(Protocol):
    def setup(self, conn: sqlite3.Connection) -> None:
        """Create or migrate tables (writer thread, once, before any write)."""

    def observe(self, batch: RecordBatch) -> None:
        """See a batch as soon as it is parsed (event loop; keep it cheap)."""

    def lookup_vmta(self, columns: Columns, rows: list[list[str]],
                    resume: bool = False) -> list[Delivery | None]:
        """(vmta, vmta_pool, isp) of the delivery each f/rb/rs row refers to, or None (event loop). `resume`: these
        rows go on with the previous call's batch (handed over in slices) and share its lookup budget. With the
        correlator in its own process (`correlator.worker: process`) this still runs in the daemon: from the rows it
        `observe`d and from the store the correlator process writes."""

    def release(self, batch: RecordBatch) -> None:
        """An observed batch will not be written as such (its rows come again, read from its file, when the
        sink is behind): drop any reference kept to it (event loop)."""

    def write(self, conn: sqlite3.Connection, batches: list[RecordBatch]) -> None:
        """Store batches inside the caller's open transaction (writer thread)."""

    def maintain(self, conn: sqlite3.Connection) -> bool | None:
        """Bounded housekeeping such as retention pruning, between commits (writer thread). True: it stopped on
        its budget with more to do, come back soon (exporter/maintenance.py)."""

    def asgi_routes(self) -> Any:
        """A FastAPI APIRouter mounted on the daemon's listener, or None."""
