"""HTTP basic auth against bcrypt hashes (node_exporter web-config style) or, discouraged, plain passwords.

Why bcrypt and not a fast hash: the config file holds the verifier, and a leaked config must not
give the password away. Why the work is the same for every failure: an unknown user is checked
against a dummy hash of the same cost, so response time does not tell which user names exist.
bcrypt is slow on purpose (~50 ms at cost 10), so it runs in a worker thread, a few at a time,
and a successful (user, password) pair is cached (keyed by a digest, never the password) so that
a scraper's repeated requests cost one dictionary lookup.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import hmac
import re
from collections import OrderedDict

import anyio.to_thread
import bcrypt

_BCRYPT = re.compile(r"^\$2[aby]?\$(\d\d)\$[./A-Za-z0-9]{53}$")
CACHE_SIZE = 64
VERIFY_CONCURRENCY = 2


def is_bcrypt(secret: str) -> bool:
    return _BCRYPT.match(secret) is not None


def bcrypt_cost(secret: str) -> int:
    m = _BCRYPT.match(secret)
    return int(m.group(1)) if m else 0


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


class BasicAuth:
    """Verifies credentials; the slow path (bcrypt) runs off the event loop."""

    def __init__(self, users: dict[str, str]) -> None:
        self._users = {u: s.encode() for u, s in users.items()}
        costs = [bcrypt_cost(s) for s in users.values() if is_bcrypt(s)]
        # The dummy every unknown user is checked against: as slow as the slowest real check.
        self._dummy_hash = bcrypt.hashpw(b"not a password", bcrypt.gensalt(rounds=max(costs))) if costs else None
        self._dummy_plain = hashlib.sha256(b"not a password").digest()
        self._cache: OrderedDict[bytes, str] = OrderedDict()
        self._sem: asyncio.Semaphore | None = None

    def _key(self, user: str, password: str) -> bytes:
        return hashlib.sha256(user.encode() + b"\0" + password.encode()).digest()

    def cached(self, user: str, password: str) -> bool:
        key = self._key(user, password)
        if key in self._cache and user in self._users:
            self._cache.move_to_end(key)
            return True
        return False

    def verify(self, user: str, password: str) -> bool:
        """Constant work per failure class; CPU-heavy when bcrypt hashes are configured."""
        secret = self._users.get(user)
        pw = password.encode()
        if secret is None:
            if self._dummy_hash is not None:
                bcrypt.checkpw(pw, self._dummy_hash)
            else:
                hmac.compare_digest(hashlib.sha256(pw).digest(), self._dummy_plain)
            return False
        if is_bcrypt(secret.decode()):
            ok = bcrypt.checkpw(pw, secret)
        else:
            ok = hmac.compare_digest(hashlib.sha256(pw).digest(), hashlib.sha256(secret).digest())
        if ok:
            self._cache[self._key(user, password)] = user
            while len(self._cache) > CACHE_SIZE:
                self._cache.popitem(last=False)
        return ok

    async def check(self, header: str) -> bool:
        creds = parse_header(header)
        if creds is None:
            return False
        if self.cached(*creds):
            return True
        if self._sem is None:
            self._sem = asyncio.Semaphore(VERIFY_CONCURRENCY)
        async with self._sem:
            return await anyio.to_thread.run_sync(self.verify, *creds)
