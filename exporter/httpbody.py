"""Reading an HTTP answer we did not choose (PMTA's management API for the daemon; a daemon's or a Prometheus's for
the hub): streamed, unzipped and capped as it arrives, so its size on the wire says nothing about the memory it takes.
httpx's own decoders expand each network chunk whole, one per listed encoding: `gzip, gzip` on 7 KB was 4 GiB before
a cap counted after them could look."""

from __future__ import annotations

import zlib
from collections.abc import AsyncIterator
from typing import Any

import httpx

ACCEPT_ENCODING = "gzip"
"""The one encoding asked for: the one read_capped unzips under its cap."""


class BodyProblem(Exception):
    """An answer not to read: over the cap, or in an encoding it cannot unzip."""


async def read_capped(resp: httpx.Response, cap: int, cut: bool = False,
                      setting: str = "hub.max_answer_size") -> bytes | bytearray:
    """The body, unzipped, at most `cap` bytes counted after unzipping (a few KiB of gzip can unzip to GiBs).
    Over the cap: BodyProblem naming `setting` (the cap's), or (`cut`) the first `cap` bytes."""
    encoding = resp.headers.get("content-encoding", "").strip().lower()
    if resp.is_stream_consumed:  # already in memory, unzipped (an in-process transport's answer)
        encoding = ""
    elif encoding not in ("", "identity", "gzip", "x-gzip"):
        raise BodyProblem(f"content-encoding {encoding[:40]}, where {ACCEPT_ENCODING} is asked for")
    unzip = _Gunzip() if encoding in ("gzip", "x-gzip") else None
    out = bytearray()
    try:
        async for chunk in _raw(resp):
            if _add(out, unzip, chunk, cap):
                if cut:
                    return bytes(out[:cap])
                raise BodyProblem(f"answer larger than {_size(cap)} ({setting}), counted unzipped")
    except zlib.error:
        raise BodyProblem("its gzip body does not decompress") from None
    if unzip is not None and not unzip.ended and not cut:
        raise BodyProblem("its gzip body does not decompress")
    return out


TRAILING_MAX = 64 * 1024
"""Bytes after a gzip body that are no next member (a CRLF some servers add), dropped as curl and browsers drop them;
past this many the answer is refused."""


class _Gunzip:
    """gzip members one after another (RFC 1952), NUL padding between them skipped as Python's gzip does.

    Bytes after a member are never left to zlib: it keeps them all in `unused_data`, each chunk copying the ones
    before, so a body that went on after its end cost memory and time growing with the square of its length. Bytes
    that start no member are dropped, up to TRAILING_MAX."""

    def __init__(self) -> None:
        self.member: Any = None  # a zlib decompressor while inside a member
        self.ended = False  # a member ended and no other began: the body may end here
        self.dropped = 0  # bytes dropped after the body: once one is, every later one is

    def unzip(self, chunk: bytes, room: int) -> tuple[bytes, bytes]:
        """(at most `room` unzipped bytes, what of `chunk` is left to feed); zlib.error on bytes that are not gzip."""
        if self.member is None:
            chunk = chunk.lstrip(b"\0")
            if not chunk:
                return b"", b""
            if self.ended and (self.dropped or not _MAGIC.startswith(chunk[:2])):
                self.dropped += len(chunk)
                if self.dropped > TRAILING_MAX:
                    raise zlib.error(f"more than {TRAILING_MAX} bytes after the gzip body")
                return b"", b""
            self.member = zlib.decompressobj(16 + zlib.MAX_WBITS)
            self.ended = False
        piece = self.member.decompress(chunk, room)
        rest = self.member.unconsumed_tail
        if self.member.eof:
            rest, self.member, self.ended = self.member.unused_data + rest, None, True
        return piece, rest


_MAGIC = b"\x1f\x8b"


async def _raw(resp: httpx.Response) -> AsyncIterator[bytes]:
    if resp.is_stream_consumed:
        yield resp.content
        return
    async for chunk in resp.aiter_raw():
        yield chunk


def _add(out: bytearray, unzip: _Gunzip | None, chunk: bytes, cap: int) -> bool:
    """Append `chunk` (unzipped when `unzip`) to `out`; True as soon as `out` is over `cap` (it holds cap + 1)."""
    while chunk:
        room = cap + 1 - len(out)
        if unzip is None:
            piece, chunk = chunk[:room], b""
        else:  # max_length: never more than the room left in one step, the rest waits in unconsumed_tail
            piece, chunk = unzip.unzip(chunk, room)
        out += piece
        if len(out) > cap:
            return True
    return False


def _size(n: int) -> str:
    for unit, scale in (("GiB", 1024**3), ("MiB", 1024**2), ("KiB", 1024)):
        if n % scale == 0:
            return f"{n // scale}{unit}"
    return f"{n} bytes"
