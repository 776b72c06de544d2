"""Reading a small file an operator names (the config, a demo scenario, a hub's target list) whatever it turns out
to be: a FIFO nobody writes to must not hang the command, /dev/zero must not fill the memory, a directory must not
end in a traceback. One line names the file and what is wrong with it (`FileProblem`)."""

from __future__ import annotations

import errno
import os
import select
import stat
import time
from pathlib import Path

PIPE_TIMEOUT = 10.0
"""Longest wait for a piped file (`--config <(envsubst < tmpl)`, /dev/stdin) to be written to its end."""

_KINDS = ((stat.S_ISDIR, "a directory"), (stat.S_ISFIFO, "a FIFO"), (stat.S_ISCHR, "a character device"),
          (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket"))


class FileProblem(ValueError):
    """`path: what is wrong`, in one line (the caller shows it as is)."""


def read_bounded(path: str | Path, limit: int, give: str, what: str, pipe_timeout: float = PIPE_TIMEOUT) -> bytes:
    """The bytes of `path`, at most `limit`: a regular file, or a pipe or character device read to its end, never more
    than `limit` + 1 bytes nor longer than `pipe_timeout`. FileProblem for anything else, saying to give `give` (e.g.
    "the YAML config file") and that `what` ("a config file") is at most `limit`; OSError if it cannot be opened.

    Opened non-blocking: a FIFO nobody writes to would block for ever, /dev/zero never ends."""
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    try:
        st = os.fstat(fd)
        if stat.S_ISREG(st.st_mode):
            raw = _read_up_to(fd, limit + 1, None, path, give) if st.st_size else b""
        elif stat.S_ISFIFO(st.st_mode) or stat.S_ISCHR(st.st_mode):
            raw = _read_up_to(fd, limit + 1, pipe_timeout, path, give)
            if not raw and stat.S_ISFIFO(st.st_mode):
                raise FileProblem(f"{path}: a pipe with nothing written to it; give {give}")
        else:
            kind = next((name for test, name in _KINDS if test(st.st_mode)), "a special file")
            raise FileProblem(f"{path}: not a regular file ({kind}); give {give}")
    finally:
        os.close(fd)
    if len(raw) > limit:
        size = f"{st.st_size} bytes" if stat.S_ISREG(st.st_mode) else f"more than {_size(limit)}"
        raise FileProblem(f"{path}: {size}; {what} is at most {_size(limit)} (is this the right file?)")
    return raw


def _size(n: int) -> str:
    return f"{n >> 20}MiB" if n >= 1 << 20 and not n % (1 << 20) else f"{n >> 10}KiB" if not n % 1024 else f"{n} bytes"


def _read_up_to(fd: int, limit: int, timeout: float | None, path: str | Path, give: str) -> bytes:
    """Read `fd` (non-blocking) to its end or `limit` bytes; a pipe is waited for up to `timeout` seconds in all."""
    deadline = None if timeout is None else time.monotonic() + timeout
    parts: list[bytes] = []
    size = 0
    while size < limit:
        try:
            more = os.read(fd, min(limit - size, 1 << 16))
        except BlockingIOError:  # a pipe whose writer has not written yet
            left = deadline - time.monotonic() if deadline is not None else 0.0
            if left <= 0 or not select.select([fd], [], [], left)[0]:
                raise FileProblem(f"{path}: nothing more was written to the pipe within {timeout:.0f}s; "
                                  f"give {give}") from None
            continue
        if not more:
            break
        parts.append(more)
        size += len(more)
    return b"".join(parts)


SECRET_MAX_BYTES = 16 * 1024
"""Largest secret file read (a password, an API key, a bearer token, a cursor key): a few bytes to a few KiB, so a
bigger file is the wrong file (a log, /dev/zero)."""
HMAC_KEY_MAX_BYTES = 1024 * 1024
"""Largest HMAC key file read: the correlator takes a key of any size (32 bytes or more), and a store keyed with a
large one refuses any other, so the bound only keeps out /dev/zero-like files, never a key a store was made with."""


def read_regular(path: str | Path, limit: int = SECRET_MAX_BYTES, what: str = "a secret file") -> bytes:
    """The bytes of `path`, which must be a regular file of at most `limit` bytes: FileProblem (`PATH is not a
    regular file`, `PATH holds N bytes; a secret file is at most 16KiB`) otherwise; OSError if it cannot be opened.

    Opened non-blocking and checked with fstat after opening (no race with a rename): a FIFO nobody writes to never
    hangs the read, /dev/zero is never read."""
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise FileProblem(f"{path} is not a regular file")
        raw = _read_up_to(fd, limit + 1, None, path, "a regular file")  # whatever st_size says: procfs, FUSE
        # secret mounts with direct_io report 0 for a file that holds bytes
    finally:
        os.close(fd)
    if len(raw) > limit:
        raise FileProblem(f"{path} holds {max(st.st_size, len(raw))} bytes; {what} is at most {_size(limit)}")
    return raw


def read_secret_file(key: str, path: Path, limit: int = SECRET_MAX_BYTES) -> tuple[bytes, str | None]:
    """The bytes of a secret file the config names under `key`, or the one line saying why not: a regular file of at
    most `limit` bytes (a FIFO never hangs the read, /dev/zero is never read)."""
    try:
        return read_regular(path, limit), None
    except FileProblem as exc:
        return b"", f"{key}: {exc}"
    except OSError as exc:
        return b"", f"{key}: cannot read {path}: {exc.strerror or exc}"


def secret_text(raw: bytes) -> str:
    """A secret file's text, as every reader takes it: UTF-8 (UnicodeDecodeError otherwise) without the byte order
    mark an editor may put first, which is no part of a password or a key."""
    return raw.decode("utf-8-sig")


def first_line(text: str) -> str:
    """A password file's first line: it ends at a line feed (CRLF's CR dropped) only, not at the other characters
    `str.splitlines` takes for a line's end (U+0085, U+2028, a form feed...), which may stand inside a password."""
    return text.partition("\n")[0].removesuffix("\r")


def read_password(path: str | Path) -> str:
    """A basic auth password file's password, as the PMTA poller and the hub send it: its first line, as written."""
    return first_line(secret_text(read_secret(path)))


def read_secret(path: str | Path) -> bytes:
    """A secret file read while running (a poll's password or API key, the hub's at a SIGHUP), as `read_regular`
    checked it at start: its problem raised as the OSError of an unreadable file, which those callers report."""
    try:
        return read_regular(path)
    except FileProblem as exc:
        raise OSError(errno.EINVAL, str(exc)) from None
