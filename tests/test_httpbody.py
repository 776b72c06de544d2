"""read_capped: an answer we did not choose, unzipped under its cap; what follows a gzip body.

After the end of a gzip stream zlib keeps every further byte in `unused_data`, each chunk copying what came before:
an answer that went on after its gzip body cost memory and CPU growing with the square of its length, bounded only
by the caller's time budget (a hostile review: 300 chunks of 64 KiB held 19.6 MB and took 1.95 s of CPU)."""

from __future__ import annotations

import gzip
from collections.abc import AsyncIterator

import httpx
import pytest

from exporter.httpbody import BodyProblem, read_capped


class Chunks(httpx.AsyncByteStream):
    """A body arriving in these chunks; counts how many were pulled."""

    def __init__(self, chunks: list[bytes]) -> None:
        self.chunks = chunks
        self.pulled = 0

    async def __aiter__(self) -> AsyncIterator[bytes]:
        for chunk in self.chunks:
            self.pulled += 1
            yield chunk


def answer(chunks: list[bytes], encoding: str = "gzip") -> tuple[httpx.Response, Chunks]:
    stream = Chunks(chunks)
    return httpx.Response(200, headers={"content-encoding": encoding}, stream=stream), stream


async def test_a_gzip_body_split_anywhere_unzips_whole() -> None:
    body = b'{"a": 1}' * 1000
    packed = gzip.compress(body)
    for cut in (1, 2, 10, len(packed) - 1):
        resp, _ = answer([packed[:cut], packed[cut:]])
        assert bytes(await read_capped(resp, 1 << 20)) == body


async def test_gzip_members_one_after_another_are_one_body() -> None:
    """RFC 1952: a gzip file is a series of members; Python's gzip reads them all, so does read_capped."""
    resp, _ = answer([gzip.compress(b"first,"), gzip.compress(b"second")[:5], gzip.compress(b"second")[5:]])
    assert bytes(await read_capped(resp, 1 << 20)) == b"first,second"


async def test_zero_padding_after_the_body_is_skipped_without_being_kept() -> None:
    """NULs after a member (tape-style padding, which Python's gzip skips too) are dropped as they come."""
    resp, stream = answer([gzip.compress(b"body"), b"\0" * 65536, b"\0" * 65536, b"\0" * 7])
    assert bytes(await read_capped(resp, 1 << 20)) == b"body" and stream.pulled == 4


async def test_a_few_bytes_after_the_body_are_dropped_as_curl_drops_them() -> None:
    """A CRLF after the gzip body (some servers add one) is no reason to refuse the answer."""
    resp, _ = answer([gzip.compress(b"body") + b"\r\n"])
    assert bytes(await read_capped(resp, 1 << 20)) == b"body"
    resp, _ = answer([gzip.compress(b"body"), b"\r\n", gzip.compress(b"more")])  # then nothing more is read as gzip
    assert bytes(await read_capped(resp, 1 << 20)) == b"body"


async def test_many_bytes_after_the_body_stop_the_read_without_being_kept() -> None:
    garbage = [gzip.compress(b"body") + b"x" * 100] + [b"y" * 65536] * 300
    resp, stream = answer(garbage)
    with pytest.raises(BodyProblem, match="gzip body does not decompress"):
        await read_capped(resp, 32 << 20)
    assert stream.pulled == 2  # not the 300 chunks behind them
    resp, stream = answer([gzip.compress(b"body"), b"\0\0\x1f"] + [b"z" * 65536] * 300)
    with pytest.raises(BodyProblem, match="gzip body does not decompress"):
        await read_capped(resp, 32 << 20)
    assert stream.pulled == 3


async def test_a_second_member_is_under_the_same_cap() -> None:
    resp, _ = answer([gzip.compress(b"a" * 600), gzip.compress(b"b" * 600)])
    with pytest.raises(BodyProblem, match="answer larger than 1000 bytes"):
        await read_capped(resp, 1000)
    resp, _ = answer([gzip.compress(b"a" * 600), gzip.compress(b"b" * 600)])
    assert bytes(await read_capped(resp, 1000, cut=True)) == b"a" * 600 + b"b" * 400


async def test_a_body_cut_inside_its_second_member_does_not_decompress() -> None:
    resp, _ = answer([gzip.compress(b"first"), gzip.compress(b"second")[:12]])
    with pytest.raises(BodyProblem, match="gzip body does not decompress"):
        await read_capped(resp, 1 << 20)


async def test_a_body_said_gzip_that_is_not_is_refused_not_read_as_empty() -> None:
    """Dropping what follows a gzip body took a body that never began one for such bytes: read as empty, with no
    error (regression review 2026-12-06)."""
    for chunks in ([b'{"status": "success"}'], [b"\0\0plain"], [b""]):
        resp, _ = answer(chunks)
        with pytest.raises(BodyProblem, match="gzip body does not decompress"):
            await read_capped(resp, 1 << 20)
