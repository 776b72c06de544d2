"""One daemon per state directory: a lock file taken at start and held for the process's life.

Two daemons given one `state_dir` (a second `watchtower run` by mistake, a container beside a systemd unit,
different listen addresses) would both commit checkpoints and counters to one database, and both would
store timelines: each correlator's link cache and key filter would miss the other's. The second daemon
refuses to start instead, naming the directory and the pid that holds it. flock(2) is released by the
kernel when its holder dies, so a `kill -9` never leaves a stale lock.

The file also tells how the previous daemon stopped: it holds the holder's pid while it runs and is emptied by a
stop that committed everything it had shown (`release(clean=True)`). A pid found at start means the previous daemon
died (kill -9, OOM, power cut) or stopped with reads uncommitted: its /metrics may have shown more than the state
database holds (`unclean`), and the daemon keeps its restored counters off /metrics until it has read that far again.
"""

from __future__ import annotations

import errno
import fcntl
import logging
import os
from pathlib import Path
from typing import IO

LOCK_FILE = "watchtower.lock"

log = logging.getLogger("watchtower.daemon")


def way_out(path: Path) -> str:
    """What to do about a state file this user was refused: the directory's mode when that is what refuses (a chown
    of the file would change nothing), the file's mode when it is this user's own, else its owner."""
    parent, uid = path.parent, os.geteuid()
    try:
        if not os.access(parent, os.W_OK | os.X_OK):
            return (f"chmod u+rwx {parent}" if parent.stat().st_uid == uid
                    else f"chown {parent} to the user running watchtower (uid {uid})")
        if path.stat().st_uid == uid:
            return f"chmod u+rw {path}"
    except OSError:  # cannot even stat it: the directory above refuses, or the file is gone
        pass
    return f"chown it to the user running watchtower (uid {uid}), as every file in the state directory"


class StateDirInUse(Exception):
    """Another live process holds the state directory's lock."""


class InstanceLock:
    """The state directory's lock, held from `acquire` to `release` (or the process's end)."""

    def __init__(self, state_dir: Path) -> None:
        self.path = state_dir / LOCK_FILE
        self._file: IO[str] | None = None
        self.unclean = False
        """The previous holder did not stop cleanly (its pid was still in the file): set by `acquire`."""
        self.identity: tuple[int, int] | None = None
        """(device, inode) of the file locked: a lock file deleted since no longer keeps a second daemon out."""

    def acquire(self) -> None:
        """Take the lock or raise StateDirInUse. A file system without flock (some network mounts) is warned
        about and the daemon starts unguarded, as it did before the lock existed."""
        from exporter.state import private_file

        private_file(self.path)  # 0600 like the database beside it (an older, looser one is tightened)
        f = open(self.path, "r+")  # noqa: SIM115 - held until release()
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = f.read().strip() or "unknown"
            f.close()
            raise StateDirInUse(f"another watchtower daemon (pid {holder}) uses the state directory "
                                f"{self.path.parent}: each daemon needs a state_dir of its own") from None
        except OSError as exc:
            if exc.errno not in (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS):
                f.close()
                raise
            log.warning("%s: cannot lock it (%s): nothing keeps a second daemon from using this state directory",
                        self.path, exc.strerror)
        f.seek(0)
        self.unclean = bool(f.read().strip())
        try:  # on the descriptor: a failed write must leave nothing in a buffer for close() to fail on again
            os.ftruncate(f.fileno(), 0)
            os.pwrite(f.fileno(), f"{os.getpid()}\n".encode(), 0)
        except OSError as exc:  # a full disk: the flock is what keeps a second daemon out, and it is held
            log.warning("%s: cannot write this daemon's pid (%s): a crash now would not be seen at the next start; "
                        "the state directory is locked all the same", self.path, exc.strerror or exc)
        st = os.fstat(f.fileno())
        self.identity = (st.st_dev, st.st_ino)
        self._file = f

    def release(self, clean: bool = False) -> None:
        """Unlock; `clean`: everything this daemon showed is committed (and so was the previous one's), so the
        next start may show its restored counters at once. Otherwise the pid stays in the file for it to see."""
        if self._file is not None:
            if clean:
                try:
                    os.ftruncate(self._file.fileno(), 0)
                except OSError as exc:  # the next start then waits for its reads once more: only later metrics
                    log.warning("%s: cannot mark the stop clean (%s)", self.path, exc.strerror)
            try:
                self._file.close()
            except OSError as exc:  # nothing buffered is ours to lose: the lock goes with the descriptor anyway
                log.debug("%s: close: %s", self.path, exc)
            self._file = None
