"""The process's open-file budget: the soft RLIMIT_NOFILE raised to the hard one, and the tailer's share of it.

Under a limit below what the config asks (`ulimit -n 64`, systemd `LimitNOFILE=64`, with `tail.max_open_files` 128)
every open past the limit failed: the tailer retried thousands of files each pass, accept() failed in a loop (a core
at 93%, /metrics and /healthz unreachable), and a oneshot read 255 of 25,000 records. The tailer now holds at most
what the limit leaves (`files_cap`), and says so once.
"""

from __future__ import annotations

import contextlib
import logging
import resource

log = logging.getLogger("watchtower.tailer")

BASE_FDS = 32
"""Descriptors the process needs besides accounting files and client sockets: stdio, the state database and the
correlator's store with their -wal and -shm, the event loop, the PMTA poller's connections, the correlator process's
pipes, a held file or two."""
MIN_FILES = 2
"""Fewest accounting files held open however low the limit: the tailer must read something."""
_warned: set[tuple[int, int]] = set()


def raise_limit() -> int:
    """Raise the soft RLIMIT_NOFILE to the hard limit (as Go programs do); returns the soft limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
            soft = hard
    return soft


def soft_limit() -> int | None:
    """The soft RLIMIT_NOFILE, None when unlimited."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    return None if soft == resource.RLIM_INFINITY else soft


def files_cap(configured: int) -> int:
    """Accounting files the tailer may hold open: `tail.max_open_files`, at most half of what the limit leaves past
    BASE_FDS (the other half is for client sockets, see exporter.http.connection_cap). Lowered: a WARNING, once."""
    soft = soft_limit()
    if soft is None:
        return configured
    cap = min(configured, max(MIN_FILES, (soft - BASE_FDS) // 2))
    if cap < configured and (configured, soft) not in _warned:
        _warned.add((configured, soft))
        log.warning("tail.max_open_files is %d, but the open-file limit is %d (ulimit -n, systemd LimitNOFILE): at "
                    "most %d accounting files are held open at once; a limit of %d or more keeps the setting",
                    configured, soft, cap, 2 * configured + BASE_FDS)
    return cap


def reserved(configured_files: int) -> int:
    """Descriptors kept free of client sockets: the tailer's share plus BASE_FDS."""
    return files_cap(configured_files) + BASE_FDS
