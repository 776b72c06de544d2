"""Link keys: stable 64-bit hashes of Message-Id, jobId and recipient, plus optional HMAC of recipients.

Indexes hold 8-byte integers instead of long strings, which keeps them small and the random-key
inserts cheap. The hashes must be identical across processes (they are stored), so Python's
salted `hash()` is out; blake2b is fast and stable. With `hash_recipients` the recipient key is
derived from an HMAC-SHA256 so neither the index nor the stored text reveals the address, while a
lookup by address (hashed the same way) still finds it; the Message-Id and jobId keys are then keyed too (a blake2b
keyed with a subkey of the HMAC key, `LinkKeys`), except in a store written before they were (corr_meta `link_keys`).
"""

from __future__ import annotations

import hmac
import logging
import os
import secrets
from hashlib import blake2b, sha256
from pathlib import Path

from exporter.boundedfile import HMAC_KEY_MAX_BYTES, read_secret_file

log = logging.getLogger(__name__)

HASHED_PREFIX = "hmac-sha256:"


def h64(value: str) -> int:
    """Signed 64-bit blake2b of a string (fits SQLite INTEGER)."""
    return int.from_bytes(blake2b(value.encode("utf-8", "surrogateescape"), digest_size=8).digest(), "big", signed=True)


MID_STRIP = " \t\r\n<>"


def norm_message_id(value: str) -> str:
    """`<abc@host>`, ` abc@host ` and `abc@host` are the same Message-Id."""
    return value.strip(MID_STRIP)


def mid_key(message_id: str) -> str:
    """The Message-Id as timelines are keyed by it: its domain (after the last `@`) lower-cased, as domains compare,
    its local part as written (RFC 5322). An ISP's FBL copy naming `<id@EXAMPLE.COM>` is the message sent as
    `<id@example.com>`. Not in a store written before (LINKS_AS_WRITTEN): its keys are of the ids as written."""
    left, at, right = message_id.rpartition("@")
    return f"{left}@{right.lower()}" if at else message_id


LINKS_UNKEYED = "unkeyed"
"""corr_meta `link_keys` of a store whose Message-Id, jobId and sender + timeQueued keys (mid_h, job_h) are plain
blake2b of the texts: every store with hashing off, and one written with hashing on before they were keyed."""
LINKS_KEYED = "keyed"
"""corr_meta `link_keys` of a store whose mid_h and job_h are keyed with a subkey of the HMAC key (`LinkKeys`)."""
LINKS_AS_WRITTEN = "as-written"
"""The scheme of a store written before `link_keys` was recorded (schema version 3 or older): unkeyed, and its
Message-Ids keyed as written, their domain's case too (`mid_key` came with `link_keys`). Kept: a Message-Id that
reaches it again in the case it was stored under must find its timeline (a delivery, then its complaint, across the
upgrade); keyed by `mid_key`, it would start a second timeline and the complaint would lose its vmta."""
LINK_SCHEMES = (LINKS_KEYED, LINKS_UNKEYED, LINKS_AS_WRITTEN)


class LinkKeys:
    """The Message-Id, jobId and sender + timeQueued keys of one store's scheme (corr_meta `link_keys`).

    Unkeyed (`key` empty), they are the plain blake2b of `h64`: `message_hash`, `job_hash`, `queued_hash`. Keyed, a
    blake2b keyed with a subkey of the HMAC key: with hash_recipients the stored Message-Id, jobId and sender keep all
    but the recipient's address (`<rcpt>`), so a plain hash of them let anyone holding a copy of the store fill in
    guessed addresses and compare, without the key (100k candidates a second). blake2b with an empty key is the
    unkeyed hash, so one code path serves both (prepare.py inlines it)."""

    __slots__ = ("as_written", "jobs", "key")

    def __init__(self, key: bytes = b"", as_written: bool = False) -> None:
        self.key = key
        """The blake2b key (b"": unkeyed)."""
        self.as_written = as_written
        """Message-Ids keyed as written, their domain's case too (LINKS_AS_WRITTEN); else by `mid_key`."""
        self.jobs: dict[str, int] = {}
        """jobId -> its key, memoised by the writer (prepare.py); dropped with this object when the scheme changes."""

    @classmethod
    def of(cls, hmac_key: bytes | None, scheme: str) -> LinkKeys:
        """The keys of `scheme` (LINKS_KEYED or LINKS_UNKEYED) for a store whose recipients are keyed with
        `hmac_key` (None: hashing off, always unkeyed)."""
        if scheme == LINKS_AS_WRITTEN:
            return cls(as_written=True)
        if hmac_key is None or scheme != LINKS_KEYED:
            return cls()
        return cls(hmac.new(hmac_key, b"watchtower link keys\0v1", sha256).digest())

    @property
    def keyed(self) -> bool:
        return bool(self.key)

    @property
    def scheme(self) -> str:
        return LINKS_KEYED if self.key else LINKS_AS_WRITTEN if self.as_written else LINKS_UNKEYED

    def mid_text(self, message_id: str) -> str:
        """The text a Message-Id is keyed by in this scheme: `mid_key`, or as written (LINKS_AS_WRITTEN)."""
        return message_id if self.as_written else mid_key(message_id)

    def h64(self, value: str) -> int:
        return int.from_bytes(blake2b(value.encode("utf-8", "surrogateescape"), digest_size=8, key=self.key).digest(),
                              "big", signed=True)

    def message_hash(self, message_id: str) -> int:
        return self.h64("m\0" + self.mid_text(message_id))

    def job_hash(self, job_id: str) -> int:
        return self.h64("j\0" + job_id)

    def queued_hash(self, orig: str, time_queued: float) -> int:
        """Fallback message identity when no jobId: sender + queue time (shared by all attempts)."""
        return self.h64(f"q\0{orig}\0{time_queued:.0f}")


_UNKEYED = LinkKeys()
# The unkeyed scheme's keys (LINKS_UNKEYED: a store with hashing off; tests and benchmarks of one): what a store is
# keyed with is `RcptHasher.links`, read from it at setup.
message_hash = _UNKEYED.message_hash
job_hash = _UNKEYED.job_hash
queued_hash = _UNKEYED.queued_hash


def norm_rcpt(rcpt: str) -> str:
    """A recipient as every key, lookup and redaction takes it: stripped, lowercase, and without the angle brackets
    of a path (`<bob@x>`, as an SMTP command writes it): bracketed, it was another recipient than the bare address,
    and a text never found inside the Message-Id or jobId, which then kept the address (privacy review 2026-12-07)."""
    value = rcpt.strip().lower()
    while value[:1] == "<" and value[-1:] == ">":  # every pair: a value normalised is its own normal form
        value = value[1:-1].strip()
    return value


def domain_of(address: str) -> str:
    at = address.rfind("@")
    return address[at + 1 :].strip().lower() if at >= 0 else ""


class RcptHasher:
    """Recipient -> (index key, stored text); plain by default, HMAC-SHA256 when a key is given. `links`: the
    Message-Id and jobId keys of the store's scheme, keyed with a key given until `use_links` says otherwise (the
    sink reads the scheme from the store at setup: every writer, attribution and API reader share this object)."""

    __slots__ = ("_key", "links")

    def __init__(self, key: bytes | None = None) -> None:
        self._key = key
        self.links = LinkKeys.of(key, LINKS_KEYED)

    def use_links(self, scheme: str) -> None:
        """Hash Message-Ids and jobIds as `scheme` says (the store's corr_meta `link_keys`, store.migrate)."""
        if scheme != self.links.scheme:
            self.links = LinkKeys.of(self._key, scheme)

    @property
    def hashed(self) -> bool:
        return self._key is not None

    def __call__(self, rcpt_lower: str) -> tuple[int, str]:
        if self._key is None:
            return h64("r\0" + rcpt_lower), rcpt_lower
        digest = hmac.new(self._key, rcpt_lower.encode("utf-8", "surrogateescape"), sha256).digest()
        return int.from_bytes(digest[:8], "big", signed=True), HASHED_PREFIX + digest.hex()

    def shown_key(self, text: str) -> int | None:
        """The index key of a recipient given in the form answers show it when hashed (`hmac-sha256:<hex>`, any
        case), which is the key itself: hashing it again would find nothing. None for any other text."""
        if self._key is None or not text.startswith(HASHED_PREFIX) or len(text) != len(HASHED_PREFIX) + 64:
            return None
        try:
            digest = bytes.fromhex(text[len(HASHED_PREFIX):])
        except ValueError:
            return None
        return int.from_bytes(digest[:8], "big", signed=True)

    def keyed_digest(self, data: bytes, size: int) -> str:
        """`data`'s hex digest keyed with the recipient key when there is one (plain otherwise): for what a cursor
        carries about a search, which must not give back an address it names (hash_recipients)."""
        key = sha256(self._key).digest() if self._key is not None else b""
        return blake2b(data, key=key, digest_size=size).hexdigest()

    def fingerprint(self) -> str:
        """Identifies the key (not the key itself) so a changed key is noticed at startup."""
        if self._key is None:
            return "plain"
        return "hmac:" + sha256(b"fingerprint\0" + self._key).hexdigest()[:16]


MIN_KEY_BYTES = 32
"""Bytes a recipient-hashing key should hold (the one created holds 64 hex digits): `printf short > KEY` gave a
40-bit key, taken without a word (exporter/preflight.py warns)."""


def short_key_problem(path: Path, key: bytes) -> str | None:
    """Why `key` (read from `path`, whitespace stripped) is too short to hash recipients well, or None. Said at each
    start and by check-config, never refused: a store keyed with it refuses any other key (its timelines with it)."""
    if len(key) >= MIN_KEY_BYTES:
        return None
    return (f"{path} holds {len(key)} bytes, fewer than the {MIN_KEY_BYTES} a key should (hashed recipients can be "
            f"guessed back from a short one); before the first start, write a longer one (`openssl rand -hex 32 > "
            f"{path}`); a store already keyed with it needs that key: move the store aside to change it")


KEY_SETTING = "correlator.hmac_key_file"
"""The config key every problem of the key file is said under (its default path too, as check-config says it)."""


class KeyFileError(ValueError):
    """The HMAC key file cannot be used: one line naming KEY_SETTING and the file, a setup error (check-config's
    words), never an internal one. Raised at a start that found it changed since the checks."""


def load_or_create_key(path: Path) -> bytes:
    """Read the HMAC key, creating a random one with mode 0600 if the file is absent."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise KeyFileError(f"{KEY_SETTING}: cannot create {path}: {(exc.strerror or str(exc)).lower()}") from None
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return _read_key(path)
    except OSError as exc:
        raise KeyFileError(f"{KEY_SETTING}: cannot create {path}: {(exc.strerror or str(exc)).lower()}") from None
    key = secrets.token_hex(32)
    with os.fdopen(fd, "w") as f:
        f.write(key + "\n")
    log.info("created correlator HMAC key %s", path)
    return key.encode()


def _read_key(path: Path) -> bytes:
    """The key the file holds, read as every secret is (exporter/boundedfile.py): a link to /dev/zero or a FIFO
    swapped in after check-config must neither fill the memory nor hang the start."""
    raw, problem = read_secret_file(KEY_SETTING, path, HMAC_KEY_MAX_BYTES)
    if problem:
        raise KeyFileError(problem)
    key = raw.strip()
    try:
        mode = path.stat().st_mode & 0o7777
    except OSError as exc:
        raise KeyFileError(f"{KEY_SETTING}: cannot read {path}: {exc.strerror or exc}") from None
    if not key:
        raise KeyFileError(f"{KEY_SETTING}: {path} is empty; write a key into it, or delete it to have one created")
    if mode & 0o077:
        log.warning("correlator HMAC key %s is readable by group/other (mode %04o)", path, mode)
    return key
