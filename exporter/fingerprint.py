"""What identifies a followed file besides (device, inode): a digest of its first bytes, with their length.

Inodes are reused (ext4 hands a deleted file's inode to the next file at once), so a file is the one
remembered only when its first bytes also match. The state database keeps the digest, never the raw
bytes: the first lines carry recipient addresses.
"""

from __future__ import annotations

import hashlib
import os

from exporter.safeopen import open_regular

FINGERPRINT_BYTES = 1024
"""The bytes a fingerprint covers at least (all of a shorter file)."""
RECORD_PREFIX_BYTES = 64
"""How much of a file's first record its fingerprint must cover to tell the file from others of its source: its
type, timeLogged and sender at least (the recipient soon after)."""
RECORD_BYTES_PAST_A_LONG_HEADER = 512
"""Of the first record, what a fingerprint covers past a header line too long to leave RECORD_PREFIX_BYTES of it in
the first FINGERPRINT_BYTES (PMTA's record-fields with many header_* columns): about what a usual header leaves."""
MAX_FINGERPRINT_BYTES = 0xFFFF
"""The most a fingerprint covers (its length is stored in two bytes): a header line longer than this leaves no record
in it, and such a file's identity is checked by its lines (exporter.tailer)."""
_DIGEST_TAG = b"h1"


def identity_bytes(head: bytes) -> int:
    """How many of a file's first bytes identify it, from its first bytes `head` (at least FINGERPRINT_BYTES of them,
    or the whole file): FINGERPRINT_BYTES, or through RECORD_BYTES_PAST_A_LONG_HEADER of its first record when its
    header line ends too late for RECORD_PREFIX_BYTES of the record to fit in them (at most MAX_FINGERPRINT_BYTES;
    that when no header line's end is in `head`). A JSON file (no header) or a compressed one: FINGERPRINT_BYTES."""
    if head[:1] == b"{" or compression_of(head) is not None:
        return FINGERPRINT_BYTES
    end = head.find(b"\n", 0, MAX_FINGERPRINT_BYTES)
    if end < 0:
        return FINGERPRINT_BYTES if len(head) < FINGERPRINT_BYTES else MAX_FINGERPRINT_BYTES
    if end + 1 + RECORD_PREFIX_BYTES <= FINGERPRINT_BYTES:
        return FINGERPRINT_BYTES
    return min(MAX_FINGERPRINT_BYTES, end + 1 + RECORD_BYTES_PAST_A_LONG_HEADER)


def read_head(path_or_fd: str | int, size: int | None = None) -> bytes:
    """The first bytes of a file: what identifies it besides (device, inode), `identity_bytes` of them unless `size`
    says how many (the file's all when shorter). A path is opened as a regular file only (safeopen: a FIFO swapped in
    since the caller's stat raises NotRegularFile, an OSError, instead of blocking)."""
    if isinstance(path_or_fd, int):
        return _head_of(path_or_fd, size)
    fd = open_regular(path_or_fd)
    try:
        return _head_of(fd, size)
    finally:
        os.close(fd)


def _head_of(fd: int, size: int | None) -> bytes:
    if size is not None:
        return os.pread(fd, size, 0)
    head = os.pread(fd, FINGERPRINT_BYTES, 0)
    if len(head) < FINGERPRINT_BYTES:
        return head
    want = identity_bytes(head)
    if want > FINGERPRINT_BYTES and head.find(b"\n") < 0:  # the header line's end is further: found in more bytes
        head = os.pread(fd, MAX_FINGERPRINT_BYTES, 0)
        want = identity_bytes(head)
    if want > len(head):
        head += os.pread(fd, want - len(head), len(head))
    return head[:want]


def whole_identity(head: bytes) -> bool:
    """Does `head` (a file's first bytes, `read_head`) hold all the bytes that identify the file? Not while the file is
    shorter than that: its fingerprint is taken again once it has grown."""
    return len(head) >= identity_bytes(head)


def fingerprint_of(head: bytes) -> bytes:
    """A digest of a file's first bytes, with their length: the state DB never holds raw log lines
    (they carry recipient addresses), yet a file whose head grows is still recognised."""
    if not head:
        return b""
    return _DIGEST_TAG + len(head).to_bytes(2, "big") + hashlib.sha256(head).digest()


def fingerprint_len(fingerprint: bytes) -> int:
    """How many bytes of the file a fingerprint covers (raw fingerprints of older versions included)."""
    if len(fingerprint) == 36 and fingerprint.startswith(_DIGEST_TAG):
        return int.from_bytes(fingerprint[2:4], "big")
    return len(fingerprint)


def read_fingerprint(path_or_fd: str | int, size: int | None = None) -> bytes:
    return fingerprint_of(read_head(path_or_fd, size))


def head_matches(fp: bytes, head: bytes) -> bool:
    """Do a file's first bytes `head` (at least as many as `fp` covers) give the fingerprint `fp`?"""
    n = fingerprint_len(fp)
    if len(head) < n:
        return False
    if len(fp) == 36 and fp.startswith(_DIGEST_TAG):
        return fingerprint_of(head[:n]) == fp
    return head[:n] == fp  # a raw fingerprint stored by an older version


def shares_first_record(fp: bytes, head: bytes) -> bool:
    """Does a file starting with `head` start as the one fingerprinted `fp` did, through the start of a first record?
    Every file of a source starts with the same header line, so a fingerprint of the header alone (the file held
    nothing else then) says nothing of whether `head` is that file's copy; the start of a first record (its time,
    sender, recipient) does. A JSON file has no header line; a header longer than the fingerprint leaves no room (one
    an older version took of 1,024 bytes, or a header line over MAX_FINGERPRINT_BYTES)."""
    if not head_matches(fp, head):
        return False
    covered = fingerprint_len(fp)
    if head[:1] == b"{":
        first = 0
    else:
        end = head.find(b"\n", 0, covered)
        if end < 0:
            return False
        first = end + 1
    return covered - first >= RECORD_PREFIX_BYTES


COMPRESSION_MAGIC = ((b"\x1f\x8b", "gzip"), (b"BZh", "bzip2"), (b"\xfd7zXZ\x00", "xz"), (b"\x28\xb5\x2f\xfd", "zstd"))


def compression_of(head: bytes) -> str | None:
    """The compression format a file's first bytes announce (logrotate's `compress`; a PMTA accounting file starts
    with text), or None."""
    return next((name for magic, name in COMPRESSION_MAGIC if head.startswith(magic)), None)
