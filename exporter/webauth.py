"""HTTP basic auth against bcrypt hashes (node_exporter web-config style) or, discouraged, plain passwords.

Why bcrypt and not a fast hash: the config file holds the verifier, and a leaked config must not
give the password away. Why the work is the same for every failure: a wrong password for a
bcrypt user, any failure for a plain-text user and an unknown user each cost one bcrypt check
(the latter two against a dummy hash of the slowest configured cost), so response time tells
neither which user names exist nor which users have plain-text passwords. Why costs stop at
MAX_BCRYPT_COST: each step doubles a check (~1 s at 14), and a cost-31 hash made every login, and
the dummy hash once made at start, take days.
bcrypt is slow on purpose (~50 ms at cost 10), so it runs in a worker thread, VERIFY_CONCURRENCY at
a time; a successful (user, password) pair is cached (keyed by a digest, never the password) so
that a scraper's repeated requests cost one dictionary lookup. Why the queue is bounded: each
client address (an IPv6 client by its /64) gets one check in flight, further concurrent ones are
refused 429 without hashing, and a check waits at most VERIFY_QUEUE_TIMEOUT for a thread (then
503), so wrong-password floods cannot delay the first scrape after a restart without limit.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import hmac
import ipaddress
import logging
import math
import re
from collections import OrderedDict
from dataclasses import dataclass, field

import anyio.to_thread
import bcrypt

log = logging.getLogger("watchtower.http")

_BCRYPT = re.compile(r"\$2[abxy]?\$(\d\d)\$[./A-Za-z0-9]{53}\Z")
"""A whole bcrypt hash: prefix, two-digit cost, 22 characters of salt and 31 of hash."""
_BCRYPT_START = re.compile(r"^\$2[a-z]?\$(\d+)\$")
"""How a bcrypt hash starts (`$2b$10$`): a value that starts so is a hash, whole or not, never a plain password (one
cut by a character when pasted was compared as text: its text logged in, the real password did not)."""
CACHE_SIZE = 64
VERIFY_CONCURRENCY = 2
"""bcrypt checks running at once (worker threads), whatever the number of clients."""
VERIFY_QUEUE_TIMEOUT = 2.0
"""Seconds a check waits for one of the VERIFY_CONCURRENCY threads before the answer is 503."""
MAX_BCRYPT_COST = 14
"""Highest bcrypt cost accepted (docs/security.md). A check doubles per step: 0.06 s at 10, 0.25 s at 12, ~1 s at 14
on a current x86 core. At 14 a login waiting behind two running checks still gets a thread within
VERIFY_QUEUE_TIMEOUT (2 s); from 15 (~2 s a check) two wrong passwords from two addresses are enough to make every
other login 503, and at 31 a check takes days, uninterruptible. docs/security.md makes hashes at 10 (htpasswd -B: 5)."""
BCRYPT_MAX_PASSWORD = 72
"""bcrypt's key schedule reads 72 bytes: hashes made by htpasswd, Go or bcrypt < 5 cover only those."""


@dataclass(frozen=True)
class Refusal:
    """Why a request is not let through: status, ApiError message and response headers."""

    status: int
    error: str
    headers: dict[str, str] = field(default_factory=dict)


UNAUTHORIZED = Refusal(401, "authentication required", {"WWW-Authenticate": 'Basic realm="watchtower"'})
CLIENT_BUSY = Refusal(429, "another login from this address is being checked; retry when it is answered",
                      {"Retry-After": "1"})
VERIFIER_BUSY = Refusal(503, "too many logins being checked; retry later",
                        {"Retry-After": str(max(1, math.ceil(VERIFY_QUEUE_TIMEOUT)))})


def is_bcrypt(secret: str) -> bool:
    """Whether `secret` is meant as a bcrypt hash (it starts like one): never compared as a plain password, even when
    malformed (bcrypt_problem says why it cannot be checked)."""
    return _BCRYPT_START.match(secret) is not None


def bcrypt_cost(secret: str) -> int:
    m = _BCRYPT_START.match(secret)
    return int(m.group(1)) if m else 0


def bcrypt_problem(secret: str) -> str | None:
    """Why bcrypt cannot check this hash (it would raise on every login, or it is not a whole hash), None when it can.
    Never quotes the hash."""
    if _BCRYPT.match(secret) is None:
        return (f"not a whole bcrypt hash: {len(secret)} characters, where a hash is $2b$, a two-digit cost, $ and "
                "53 characters of ./A-Za-z0-9 (60 in all); cut short or changed when pasted?")
    if not 4 <= bcrypt_cost(secret) <= 31:
        return f"cost {bcrypt_cost(secret)} is outside 04..31"
    if bcrypt_cost(secret) > MAX_BCRYPT_COST:
        return (f"cost {bcrypt_cost(secret)} is above {MAX_BCRYPT_COST}, the highest accepted: each step doubles a "
                f"login's work (~1 s at {MAX_BCRYPT_COST}); hash the password again at cost 10 to 12")
    if not secret.startswith(("$2a$", "$2b$", "$2y$")):
        return "prefix is not $2a$, $2b$ or $2y$"
    try:  # the salt's encoding, checked at the cheapest cost
        bcrypt.hashpw(b"", b"$2b$04$" + secret[7:29].encode())
    except ValueError:
        return "invalid salt"
    return None


def dummy_hash(cost: int) -> bytes:
    """A hash to check failures against at `cost`, made without hashing: a check's work depends on the cost and the
    salt only, so no bcrypt run at the configured cost is needed at start (on the event loop, which a high cost
    blocked). Its 31 hash characters are all `.`, which no password gives in practice; the result is ignored anyway."""
    return bcrypt.gensalt(rounds=cost) + b"." * 31


def client_key(host: str) -> str:
    """The unit the one-check-in-flight limit applies to: an IPv4 address, an IPv6 /64 (one host
    usually owns a whole /64, so counting its addresses one by one would not limit it)."""
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return host
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return str(ipaddress.ip_network(f"{ip}/64", strict=False))
    return str(ip)


def parse_header(header: str) -> tuple[str, str] | None:
    """(user, password) from an `Authorization: Basic ...` value, None if absent or malformed."""
    scheme, _, value = header.strip().partition(" ")
    if scheme.lower() != "basic" or not value:
        return None
    try:
        user, sep, password = base64.b64decode(value.strip(), validate=True).decode("utf-8").partition(":")
    except (binascii.Error, ValueError):
        return None
    return (user, password) if sep else None


def _utf8(text: str) -> bytes:
    """UTF-8 that cannot raise (a lone surrogate is encoded as is, never matching a real secret)."""
    return text.encode("utf-8", "surrogatepass")


def _checkpw(password: bytes, hashed: bytes) -> bool:
    """bcrypt.checkpw on the first 72 bytes, as the hash was made; False instead of any ValueError."""
    try:
        return bcrypt.checkpw(password[:BCRYPT_MAX_PASSWORD], hashed)
    except ValueError:
        return False


class BasicAuth:
    """Verifies credentials; the slow path (bcrypt) runs off the event loop, bounded per client and overall."""

    def __init__(self, users: dict[str, str]) -> None:
        self._plain: dict[str, bytes] = {}
        self._hashed: dict[str, bytes] = {}
        for user, secret in users.items():
            problem = bcrypt_problem(secret) if is_bcrypt(secret) else None
            if problem is not None:
                log.warning("web.basic_auth_users.%s: bcrypt cannot check this hash (%s); this user cannot log in",
                            user, problem)
            elif is_bcrypt(secret):
                self._hashed[user] = secret.encode()
            else:
                self._plain[user] = _utf8(secret)
        self._names = set(users)
        costs = [bcrypt_cost(s.decode()) for s in self._hashed.values()]
        # What every failure other than a bcrypt user's wrong password is checked against: as slow as the slowest.
        self._dummy_hash = dummy_hash(max(costs)) if costs else None
        self._cache: OrderedDict[bytes, str] = OrderedDict()
        self._sem: asyncio.Semaphore | None = None
        self._pending: set[str] = set()  # client keys with a check waiting or running
        self._checks: dict[bytes, asyncio.Future[Refusal | None]] = {}  # credentials being checked -> the answer

    def _key(self, user: str, password: str) -> bytes:
        return hashlib.sha256(_utf8(user) + b"\0" + _utf8(password)).digest()

    def cached(self, user: str, password: str) -> bool:
        key = self._key(user, password)
        if key in self._cache and user in self._names:
            self._cache.move_to_end(key)
            return True
        return False

    def verify(self, user: str, password: str) -> bool:
        """Never raises. Every failure costs one bcrypt check at the same cost when any hash is configured."""
        pw = _utf8(password)
        hashed = self._hashed.get(user)
        if hashed is not None:
            ok = _checkpw(pw, hashed)
        else:
            plain = self._plain.get(user)
            ok = plain is not None and hmac.compare_digest(hashlib.sha256(pw).digest(), hashlib.sha256(plain).digest())
            if not ok and self._dummy_hash is not None:
                _checkpw(pw, self._dummy_hash)  # a plain-text user's failure costs what any other does
        if ok:
            self._cache[self._key(user, password)] = user
            while len(self._cache) > CACHE_SIZE:
                self._cache.popitem(last=False)
        return ok

    async def authorize(self, header: str, client: str) -> Refusal | None:
        """None to let the request through, else the answer to give. `client` is the peer's address.

        The 429 and 503 refusals are decided before the user name is looked at, so they reveal nothing about it.
        """
        creds = parse_header(header)
        if creds is None:
            return UNAUTHORIZED
        if self.cached(*creds):
            return None
        cred = self._key(*creds)
        running = self._checks.get(cred)
        if running is not None:  # the same login is being checked (scrape jobs, replicas behind one NAT): share it
            return await asyncio.shield(running)
        key = client_key(client)
        if key in self._pending:
            return CLIENT_BUSY
        self._pending.add(key)
        answer: asyncio.Future[Refusal | None] = asyncio.get_running_loop().create_future()
        self._checks[cred] = answer
        outcome: Refusal | None = VERIFIER_BUSY  # what the sharers get if this request is cancelled mid-check
        try:
            outcome = await self._check(creds)
        finally:
            self._pending.discard(key)
            del self._checks[cred]
            answer.set_result(outcome)
        return outcome

    async def _check(self, creds: tuple[str, str]) -> Refusal | None:
        """One bcrypt check on a worker thread, after a bounded wait for one (503 past it)."""
        if self._sem is None:
            self._sem = asyncio.Semaphore(VERIFY_CONCURRENCY)
        try:
            await asyncio.wait_for(self._sem.acquire(), timeout=VERIFY_QUEUE_TIMEOUT)
        except TimeoutError:
            return VERIFIER_BUSY
        try:
            ok = await anyio.to_thread.run_sync(self.verify, *creds)
        finally:
            self._sem.release()
        return None if ok else UNAUTHORIZED
