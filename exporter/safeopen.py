"""Opening a file a glob matched without trusting what the path names by the time it is opened.

A path stat'ed as a regular file can be swapped (a symlink replaced, `mv`) for a FIFO before the open: a plain
`open()` then waits in the kernel for a writer that may never come, and the thread (the event loop's executor,
or oneshot's only thread) is stuck for good. So the path is opened non-blocking (a FIFO open returns at once),
the descriptor itself is checked, and only a regular file is handed on, blocking again for its reads.
"""

from __future__ import annotations

import errno
import fcntl
import os
import stat
from typing import BinaryIO

_FLAGS = os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC | getattr(os, "O_NOCTTY", 0)
_KINDS = ((stat.S_ISDIR, "a directory"), (stat.S_ISFIFO, "a FIFO"), (stat.S_ISCHR, "a character device"),
          (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket"))


class NotRegularFile(OSError):
    """The path names something other than a regular file now (an OSError: callers' read-error paths take it)."""


def kind_of(mode: int) -> str:
    return next((name for test, name in _KINDS if test(mode)), "a special file")


def open_regular(path: str | os.PathLike[str], flags: int = 0) -> int:
    """A blocking read-only descriptor of the regular file at `path`; NotRegularFile for anything else.

    `flags` is ignored: the signature is `open()`'s `opener=` one (aiofiles passes it through), so a caller gets
    the same checks whichever way it opens."""
    fd = os.open(path, _FLAGS)
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            raise NotRegularFile(errno.EINVAL, f"not a regular file ({kind_of(mode)})", os.fspath(path))
        fcntl.fcntl(fd, fcntl.F_SETFL, fcntl.fcntl(fd, fcntl.F_GETFL) & ~os.O_NONBLOCK)
    except BaseException:
        os.close(fd)
        raise
    return fd


def open_regular_file(path: str | os.PathLike[str], buffering: int = -1) -> BinaryIO:
    """`open(path, "rb", buffering)` of a regular file only (see `open_regular`)."""
    return open(path, "rb", buffering=buffering, opener=open_regular)  # noqa: SIM115 - the caller closes it
