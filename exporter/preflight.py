"""Checks of a valid config against the machine: files exist, dirs are writable, the listen host resolves.

The pydantic model only checks shape. `check-config` and `run` both call `problems()` so that
whatever would make `run` fail at startup is reported first, as one line naming the key, never
as a traceback. `warnings()` lists what is legal but probably not meant (a glob matching nothing).
"""

from __future__ import annotations

import errno
import functools
import glob
import os
import re
import socket
import ssl
import stat
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Concatenate, ParamSpec, TypeVar

from exporter.boundedfile import (
    HMAC_KEY_MAX_BYTES,
    FileProblem,
    first_line,
    read_regular,
    read_secret_file,
    secret_text,
)
from exporter.config import RECORD_TYPES, Config, CorrelatorConfig, PmtaApiConfig, SourceConfig

P = ParamSpec("P")
PathT = TypeVar("PathT", Path, Path | None)
Check = Callable[Concatenate[str, PathT, P], str | None]


def unreachable(exc: OSError, path: Path | str | None = None) -> str:
    """`cannot reach PATH: why`: a stat that failed for another reason than `not there` (EACCES on a directory on
    the way, which Python 3.11's Path.exists() raises), naming the uid when it is permissions."""
    why = (exc.strerror or str(exc)).lower()
    uid = f" (uid {os.getuid()})" if isinstance(exc, PermissionError) else ""
    return f"cannot reach {path if path is not None else exc.filename}: {why}{uid}"


def reaching(check: Check[PathT, P]) -> Check[PathT, P]:
    """Every check of the path a key names goes through this: an OSError from any stat in it is that key's problem
    line (`key: cannot reach PATH: permission denied (uid N)`), never a traceback."""
    @functools.wraps(check)
    def guarded(key: str, path: PathT, /, *args: P.args, **kwargs: P.kwargs) -> str | None:
        try:
            return check(key, path, *args, **kwargs)
        except OSError as exc:
            return f"{key}: {unreachable(exc, path)}"
    return guarded


@reaching
def _readable_file(key: str, path: Path | None) -> str | None:
    if path is None:
        return None
    if not path.exists():
        return f"{key}: {path} does not exist"
    if not path.is_file():
        return f"{key}: {path} is not a regular file"
    if not os.access(path, os.R_OK):
        return f"{key}: {path} is not readable by this user (uid {os.getuid()})"
    return None


def secret_file_problem(key: str, path: Path | None) -> str | None:
    """A secret file (password, API key) that `run` reads as UTF-8 text on every poll."""
    return _secret_file_text(key, path)[1]


def _secret_file_text(key: str, path: Path | None) -> tuple[str, str | None]:
    """A secret file's text as `run` reads it (`boundedfile.secret_text`), or the one line saying why it cannot be
    used: unreadable, not UTF-8, or holding nothing (an API key file left empty: the poller sent no key at all)."""
    problem = _readable_file(key, path)
    if problem or path is None:
        return "", problem
    raw, problem = read_secret_file(key, path)
    if problem:
        return "", problem
    try:
        text = secret_text(raw)
    except UnicodeDecodeError as exc:
        return "", f"{key}: {path} is not UTF-8 text (byte 0x{raw[exc.start]:02x} at offset {exc.start})"
    if not text.strip():
        return "", f"{key}: {path} is empty: it holds no secret"
    return text, None


def ca_file_problem(key: str, path: Path | None) -> str | None:
    """A CA bundle loads as PEM here, or every request verified with it would fail with an SSLError."""
    problem = _readable_file(key, path)
    if problem or path is None:
        return problem
    try:
        ssl.create_default_context(cafile=str(path))
    except (ssl.SSLError, OSError, ValueError) as exc:
        return f"{key}: cannot load {path} as a PEM CA bundle: {exc}"
    return None


def _correlator_store(config: Config, state_dir_checked: bool) -> str | None:
    """What `run` refuses in the correlator store, by its content (a schema this build cannot read) or for the key
    its recipients were keyed with (another key, none, or hashing turned off over keyed timelines), and the key file
    `run` reads (or creates) when hashing recipients. The store and the default key, in state_dir, only where
    state_dir is used and passed its own check (oneshot's are temporary)."""
    correlator = config.correlator
    if not correlator.enabled:
        return None
    store = Path(config.state_dir).expanduser() / "watchtower.db" if state_dir_checked else None
    meta = _correlator_meta(store) if store is not None else {}
    if "schema_version" in meta:  # (the correlator package imports polars: not before a oneshot sets its allocator
        from correlator.store import stored_version  # policy, exporter/allocator.py, nor for a store not there)
        from exporter.state import StateRefused

        try:
            stored_version(str(store), meta["schema_version"])
        except StateRefused as exc:
            return f"state_dir: {exc}"
    if not correlator.hash_recipients:
        return _hashing_turned_off(store, meta.get("rcpt_mode"))
    explicit = correlator.hmac_key_file is not None
    if not (explicit or state_dir_checked):
        return None
    path = hmac_key_path(config)
    return (_hmac_key_file("correlator.hmac_key_file", path, explicit=explicit)
            or _keyed_with_another_key(path, store, meta.get("rcpt_mode")))


def hmac_key_path(config: Config) -> Path:
    """The recipient-hashing key's file: `correlator.hmac_key_file`, else `<state_dir>/correlator-hmac.key`."""
    return config.correlator.hmac_key_file or Path(config.state_dir).expanduser() / "correlator-hmac.key"


def _correlator_meta(store: Path) -> dict[str, str]:
    """The correlator store's schema_version and rcpt_mode, read without changing anything; empty when there is no
    store, no correlator table yet, or a database `run` judges itself (the state checks name it). (sqlite3 imported
    here: a metrics-only oneshot imports no database module.)"""
    import sqlite3

    from exporter.state import peek

    try:
        if not store.is_file():
            return {}
        conn = peek(store)
        if conn is None:
            return {}
        try:
            return dict(conn.execute("SELECT key, value FROM corr_meta WHERE key IN ('schema_version', 'rcpt_mode')"))
        finally:
            conn.close()
    except (OSError, sqlite3.Error):
        return {}


def _hashing_turned_off(store: Path | None, mode: str | None) -> str | None:
    """`run` refuses hash_recipients off over a store whose timelines were keyed with an HMAC key
    (correlator.store.hashing_turned_off): it wrote addresses in clear beside them and forgot the key. A store
    holding no timeline takes it (nothing is keyed yet)."""
    if store is None or mode is None or not mode.startswith("hmac:") or not _holds_timelines(store):
        return None
    from correlator.store import hashing_turned_off

    return str(hashing_turned_off(str(store), mode))


def _holds_timelines(store: Path) -> bool:
    """Whether the correlator store holds a timeline, read without changing anything (as `_correlator_meta`: False
    when that cannot be told here; `run`'s own check decides then, in the same words)."""
    import sqlite3

    from exporter.state import peek

    try:
        conn = peek(store)
        if conn is None:
            return False
        try:
            return conn.execute("SELECT 1 FROM corr_timelines LIMIT 1").fetchone() is not None
        finally:
            conn.close()
    except (OSError, sqlite3.Error):  # no corr_timelines table yet among them
        return False


def _keyed_with_another_key(path: Path, store: Path | None, mode: str | None) -> str | None:
    """`run` refuses a correlator store whose recipients were keyed with an HMAC key other than the key file's, or
    when that file is missing (correlator.store.other_key): said here too, rather than `ok` and then a refused
    start."""
    if store is None or mode is None or not mode.startswith("hmac:"):
        return None
    from correlator.keys import RcptHasher
    from correlator.store import other_key

    try:
        if not path.exists():
            return (f"correlator.hmac_key_file: {path} does not exist, and the recipients of the correlator store "
                    f"{store} were keyed with the key {mode}: put that key file back (from the host or the backup "
                    "the store came from), or move the store aside to start a new one")
        key = read_regular(path, HMAC_KEY_MAX_BYTES).strip()
    except (OSError, FileProblem):
        return None  # the key file's own check names what cannot be reached
    if RcptHasher(key).fingerprint() == mode:
        return None
    return f"correlator.hmac_key_file: {other_key(str(store), mode, path, created=False)}"


@reaching
def _hmac_key_file(key: str, path: Path, explicit: bool) -> str | None:
    """A non-empty regular file, or creatable in an existing directory (the same rule as state_dir: a missing parent
    is a typo, not made silently); the default one is created inside state_dir, which has its own check."""
    if not path.exists():
        return _creatable(key, path) if explicit else None
    problem = _readable_file(key, path)
    if problem:
        return problem
    raw, problem = read_secret_file(key, path, HMAC_KEY_MAX_BYTES)
    if problem:
        return problem
    held = raw.strip()
    if not held:
        return f"{key}: {path} is empty; write a key into it, or delete it to have one created"
    return None


def _can_create_in(directory: Path) -> bool:
    """Try it: os.access() says yes to root on a read-only mount or an immutable directory."""
    try:
        probe = tempfile.mkdtemp(prefix=".watchtower-check-", dir=directory)
    except OSError:
        return False
    os.rmdir(probe)
    return True


@reaching
def _writable_dir(key: str, path: Path) -> str | None:
    """The state dir must be writable, or creatable in an existing writable parent (not a link to nothing)."""
    from exporter.state import dangling_link

    path = path.expanduser()
    dangling = dangling_link(path)
    if dangling is not None:
        return f"{key}: {dangling}"
    if path.exists():
        if not path.is_dir():
            return f"{key}: {path} exists and is not a directory"
        if not _can_create_in(path):
            return f"{key}: {_unwritable(path)}"
        return None
    return _creatable(key, path)


def _unwritable(directory: Path) -> str:
    """Why this user cannot create in `directory`: a read-only file system (systemd's ProtectSystem=strict, a
    read-only mount: chown and chmod cannot help, and root is refused too) or its permissions."""
    try:
        read_only = bool(os.statvfs(directory).f_flag & os.ST_RDONLY)
    except OSError:
        read_only = False
    if read_only:
        return (f"{directory} is on a read-only file system (under systemd's ProtectSystem=strict, add it to the "
                "unit's ReadWritePaths=)")
    return f"{directory} is not writable by this user (uid {os.getuid()})"


OLD_DEFERRAL_S = 14400
"""The age PmtaQueueOldMessages (rules/alerts/queue.yaml) counts deferrals past: the smallest delay bucket >= it."""
STATE_FILES = ("watchtower.db", "watchtower.db-wal", "watchtower.db-shm", "watchtower.lock", "correlator.lock")
"""The files the daemon and its correlator process keep in state_dir (exporter.daemon.STATE_DB, instancelock,
exporter.follower.LOCK_FILE)."""


def _state_dir(key: str, path: Path, open_db: Path | None = None) -> list[str]:
    """state_dir writable, and every state file in it, where it exists, a regular file this user can read and write
    (a directory named watchtower.db would only fail later, as 'not a usable SQLite database'; a file left by a start
    as root stops `run`, or the correlator process at each of its restarts): one line per file, all in one pass.
    `open_db`: the state database this process has open (`problems`)."""
    problem = _writable_dir(key, path)
    if problem is not None:
        return [problem]
    try:
        if not path.is_dir():  # not there yet: created empty by the first start
            return []
        mode = stat.S_IMODE(path.stat().st_mode)
    except OSError as exc:
        return [f"{key}: {unreachable(exc, path)}"]
    from exporter.state import shared_dir_problem  # a typo such as `/var/lib`: refused, never made 0700

    shared = shared_dir_problem(path, mode)
    files = [_state_file(key, path / name) for name in STATE_FILES]
    if files[0] is None:  # watchtower.db absent, or a file this user can read: is it SQLite at all?
        db = path / STATE_FILES[0]
        files[0] = _state_db(key, db, header=open_db is None or not _same_file(db, open_db))
    return ([f"{key}: {shared}"] if shared else []) + [p for p in files if p]


SQLITE_HEADER = b"SQLite format 3\x00"
"""The first 16 bytes of every SQLite database file (sqlite.org/fileformat.html, 1.3.1)."""


def _same_file(a: Path, b: Path) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False


@reaching
def _state_db(key: str, db: Path, header: bool = True) -> str | None:
    """A state database without the SQLite header (random bytes, a file copied over it, zero bytes) passed here, and
    `run` then refused it at every start with exit 1, which systemd restarts for ever: refused here, with exit 2.
    Only the header is read (the daemon's quick_check judges the pages: a big database would delay the check).
    `header` False: the database this process has open (a SIGHUP's check in the daemon) is read through SQLite only.
    Closing any other descriptor of the file drops every POSIX lock the process holds on it, SQLite's included (its
    shared lock kept another process's last close from deleting the -wal and -shm in use)."""
    if not db.is_file():
        return None
    from exporter.state import WAY_OUT, content_refusal

    if not header:
        refusal = content_refusal(db)
        return f"{key}: {refusal}" if refusal else None
    with open(db, "rb") as f:
        head = f.read(len(SQLITE_HEADER))
    if head == SQLITE_HEADER:
        refusal = content_refusal(db)
        return f"{key}: {refusal}" if refusal else None

    if not head:  # exporter.state refuses an empty database too, rather than start afresh over it
        why = "is an empty file (emptied or truncated outside the daemon), which the daemon refuses to start with"
    elif len(head) < len(SQLITE_HEADER):
        why = f"is not a SQLite database ({len(head)} bytes, shorter than the SQLite header)"
    else:
        why = f"is not a SQLite database (its first {len(SQLITE_HEADER)} bytes are not the SQLite header)"
    return f"{key}: {db} {why}: {WAY_OUT}"


@reaching
def _state_file(key: str, file: Path) -> str | None:
    if not file.exists():
        return None
    if not file.is_file():
        return f"{key}: {file} is not a regular file; move it aside"
    if not os.access(file, os.R_OK | os.W_OK):  # left by a start as root: `run` would stop
        own = file.stat().st_uid == os.geteuid()  # this user's own file without its bits: a chmod, not a chown
        return (f"{key}: {file} is not readable and writable by this user (uid {os.getuid()}): "
                + (f"chmod u+rw {file}" if own else "chown it to the user running watchtower"))
    return None


@reaching
def _creatable(key: str, path: Path) -> str | None:
    """`path` can be created: its parent exists, is a directory, and this user can create in it."""
    parent = path.parent
    if not parent.exists():
        return f"{key}: cannot create {path}: its parent {parent} does not exist (a typo?)"
    if not parent.is_dir():
        return f"{key}: cannot create {path}: {parent} is not a directory"
    if not _can_create_in(parent):
        return f"{key}: cannot create {path}: {_unwritable(parent)}"
    return None


def _classifier(key: str, path: Path | None, kind: str) -> str | None:
    problem = _readable_file(key, path)
    if problem or path is None:
        return problem
    from exporter.classify import IspClassifier, ReplyClassifier

    loader = IspClassifier if kind == "isp" else ReplyClassifier
    try:
        loader.load(path)
    except Exception as exc:  # noqa: BLE001 - any failure to load is a config problem, reported as one line
        return f"{key}: {exc}"
    return None


class _Passphrase(Exception):
    """Raised by `no_passphrase`: the key file is encrypted."""


def no_passphrase() -> bytes:
    """`password=` of load_cert_chain: without it OpenSSL asks for a passphrase on the terminal (a hang, or a vague
    `Invalid argument` without one). Watchtower runs unattended: an encrypted key is a config problem."""
    raise _Passphrase


def tls_pair_problems(cert_key: str, key_key: str, cert: Path | None, key: Path | None,
                      purpose: ssl.Purpose = ssl.Purpose.CLIENT_AUTH) -> list[str]:
    """A certificate and its key (`*_key`: their config keys), loaded as the listener or client will load them."""
    out = [p for p in (_readable_file(cert_key, cert), _readable_file(key_key, key)) if p]
    if out or cert is None:
        return out
    try:
        ssl.create_default_context(purpose).load_cert_chain(cert, key, password=no_passphrase)
    except _Passphrase:
        out.append(f"{key_key}: {key or cert} is protected by a passphrase: give an unencrypted key (kept 0600)")
    except ssl.SSLError as exc:
        out.append(_tls_diagnosis(cert_key, key_key, cert, key, exc)
                   or f"{cert_key}: cannot load {cert}" + (f" with {key}" if key else "") + f": {exc}")
    except OSError as exc:
        out.append(f"{cert_key}: cannot load {cert}" + (f" with {key}" if key else "") + f": {exc.strerror or exc}")
    return out


PEM_SCAN_BYTES = 1 << 20
"""How much of a TLS file is read for its PEM markers: a certificate chain is a few KiB; a bound, not a guess."""
PEM_BEGIN = re.compile(rb"^-----BEGIN ([^\r\n-]+)-----", re.MULTILINE)
KEY_MISMATCH = ("KEY_VALUES_MISMATCH", "NO_CERTIFICATE_ASSIGNED")
"""OpenSSL's reasons for a key that is not the certificate's: another RSA key, or a key of another type."""


def _pem_labels(path: Path) -> list[str] | None:
    """The PEM block labels (`CERTIFICATE`, `PRIVATE KEY`...) in the file's first PEM_SCAN_BYTES, None when it
    holds no `-----BEGIN` line at all (DER, text, an empty file)."""
    with open(path, "rb") as f:
        head = f.read(PEM_SCAN_BYTES)
    labels = [m.group(1).decode("ascii", "replace").strip() for m in PEM_BEGIN.finditer(head)]
    return labels or None


def _has_cert(labels: list[str]) -> bool:
    return any(label in ("CERTIFICATE", "TRUSTED CERTIFICATE", "X509 CERTIFICATE") for label in labels)


def _has_key(labels: list[str]) -> bool:
    return any(label.endswith("PRIVATE KEY") for label in labels)


def _tls_diagnosis(cert_key: str, key_key: str, cert: Path, key: Path | None, exc: ssl.SSLError) -> str | None:
    """Which file of a pair OpenSSL refused, and why, from their PEM markers: its own words (`[SSL] PEM lib
    (_ssl.c:3905)`) name neither. None when the markers look right (a damaged block): the caller shows OpenSSL's."""
    try:
        cert_labels = _pem_labels(cert)
        key_labels = _pem_labels(key) if key is not None else cert_labels
        der = cert_labels is None and _looks_der(cert)
    except OSError:
        return None
    if cert_labels is None:
        return f"{cert_key}: cannot load {cert}: not PEM " + (
            "(no -----BEGIN line; DER?): give the certificate in PEM form (openssl x509 -inform DER -in FILE "
            "-out FILE.pem)" if der else "(no -----BEGIN line): give the certificate in PEM form")
    if not _has_cert(cert_labels):
        if not _has_key(cert_labels):
            held = ", ".join(dict.fromkeys(cert_labels))
            return f"{cert_key}: cannot load {cert}: it holds {held}, not a certificate"
        swapped = key_labels is not None and key is not None and _has_cert(key_labels)
        return (f"{cert_key}: cannot load {cert}: it holds a private key, not a certificate"
                + (f": {cert_key} and {key_key} swapped?" if swapped else ""))
    if key is None:
        if not _has_key(cert_labels):
            return (f"{cert_key}: cannot load {cert}: it holds no private key and {key_key} is not set: "
                    f"set {key_key} to the key's file")
    elif key_labels is None:
        return f"{key_key}: cannot load {key}: not PEM (no -----BEGIN line): give the private key in PEM form"
    elif not _has_key(key_labels):
        what = "a certificate" if _has_cert(key_labels) else ", ".join(dict.fromkeys(key_labels))
        return f"{key_key}: cannot load {key}: it holds {what}, not a private key"
    if getattr(exc, "reason", None) not in KEY_MISMATCH:
        return None
    if key is None:
        return f"{cert_key}: the private key in {cert} does not match the certificate before it"
    return (f"{key_key}: {key} does not match the certificate in {cert}: give the key the certificate was made for "
            "(or the certificate of this key)")


def _looks_der(path: Path) -> bool:
    """A DER certificate starts with an ASN.1 SEQUENCE of a long form length (0x30 0x82: most certificates)."""
    with open(path, "rb") as f:
        return f.read(2) == b"\x30\x82"


def _tls(config: Config) -> list[str]:
    web = config.web
    if web.tls_cert_file is None or web.tls_key_file is None:
        return [p for p in (_readable_file("web.tls_cert_file", web.tls_cert_file),
                            _readable_file("web.tls_key_file", web.tls_key_file)) if p]
    return tls_pair_problems("web.tls_cert_file", "web.tls_key_file", web.tls_cert_file, web.tls_key_file)


NOT_LOCAL = frozenset({errno.EADDRNOTAVAIL, errno.EAFNOSUPPORT})
"""A bind that fails with these fails at every start whatever runs beside it: an address this host does not have, or
an address family it does not support (IPv6 turned off)."""


def _listen(config: Config, waits: bool = False) -> str | None:
    """The host resolves, and the address it resolves to is this host's: `run` binds the first answer (as the
    daemon's probe does), and one on no interface here fails at every start (exit 1, restarted for ever). Checked by
    binding the address with port 0: the port itself may be taken by the very daemon this config runs (check-config
    beside it), which `run` says itself."""
    host = config.listen_host
    try:
        infos = socket.getaddrinfo(host, config.listen_port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except (socket.gaierror, UnicodeError) as exc:
        return f"listen: host {host!r} does not resolve ({exc})"
    family, kind, proto, _, address = infos[0]
    try:
        with socket.socket(family, kind, proto) as probe:
            probe.bind((address[0], 0, *address[2:]))
    except OSError as exc:
        if exc.errno not in NOT_LOCAL or (waits and exc.errno == errno.EADDRNOTAVAIL):
            return None  # anything else (no descriptor left, ...) is no property of the config: `run` says it
            # (`waits`: `run` waits a while for an address being assigned, exporter.daemon._wait_for_listen_address)
        why = (exc.strerror or str(exc)).lower()
        return (f"listen: {address[0]} is not an address of this host ({why}): name one of its addresses, "
                "0.0.0.0 or [::] for all, or 127.0.0.1")
    return None


def _api_key(config: Config) -> str | None:
    """The key as `run` sends it: a character an HTTP header cannot carry is named here, not at the first poll."""
    if not (config.pmta.api_key or config.pmta.api_key_file):  # (asked with pmta.url only: `_poller_files`)
        return None  # nothing to send (and oneshot, which polls nothing, imports no HTTP client)
    from exporter.pmta_api import PmtaApiConfigError, read_api_key

    try:
        read_api_key(config.pmta)
    except PmtaApiConfigError as exc:
        return str(exc)
    return None


def problems(config: Config, uses_state_dir: bool = True, waits_for_address: bool = False,
             open_db: Path | None = None) -> list[str]:
    """Everything that would stop `watchtower run` at startup, each as `key.path: what`.

    `uses_state_dir` False (oneshot: no state database, or a temporary one in TMPDIR) skips state_dir;
    `waits_for_address` (`run`) leaves a `listen` address this host does not have yet to the daemon, which waits
    for it a while; `open_db`: the state database this process has open (the daemon checking its config file again
    on SIGHUP), never opened here but through SQLite (`_state_db`)."""
    state_dir = _state_dir("state_dir", Path(config.state_dir), open_db) if uses_state_dir else []
    out = [
        _classifier("classify.isp_file", config.classify.isp_file, "isp"),
        _classifier("classify.replies_file", config.classify.replies_file, "replies"),
        *state_dir,
        _listen(config, waits=waits_for_address),
        _correlator_store(config, state_dir_checked=uses_state_dir and not state_dir),
        *_poller_files(config),
    ]
    return [p for p in out if p] + _tls(config) + _directories(config) + _brace_alternatives(config) + \
        _records_lost_to_overlaps(config)


def password_file_problem(key: str, path: Path | None) -> str | None:
    """A basic auth password file (the PMTA poller's, the hub's): a secret file whose first line is the password
    (`boundedfile.first_line`, as both send it). One whose first line is blank sent an empty password, though the
    file held text further down."""
    text, problem = _secret_file_text(key, path)
    if problem or path is None or first_line(text).strip():
        return problem
    return f"{key}: {path} holds no password on its first line (the password is the file's first line)"


def _poller_files(config: Config) -> list[str | None]:
    """The files of PMTA's management API polls, checked only when they run (pmta.url set: exporter.daemon starts
    the poller then alone). Without it nothing reads them: a stale path left from a poller turned off must not
    refuse the start; `_keys_without_effect` warns of it instead."""
    pmta = config.pmta
    if not pmta.url:
        return []
    return [secret_file_problem("pmta.api_key_file", pmta.api_key_file) or _api_key(config),
            password_file_problem("pmta.password_file", pmta.password_file),
            ca_file_problem("pmta.ca_file", pmta.ca_file)]


def _directories(config: Config) -> list[str]:
    """A source path without a wildcard that names a directory matches no file, ever: the daemon would start and
    follow nothing, silently (a trailing `/` is refused with the config already)."""
    return [f"sources.{i}.paths.{j}: {pattern!r}: names a directory; add a file pattern such as "
            f"{pattern.rstrip('/')}/acct-*.csv"
            for i, source in enumerate(config.sources) for j, pattern in enumerate(source.paths)
            if not glob.has_magic(pattern) and os.path.isdir(pattern)]


BRACES = re.compile(r"\{([^{}/]*,[^{}/]*)\}")
"""A shell's brace alternatives (`{acct,diag}`): glob() has none, and matches the characters literally."""


def _brace_alternatives(config: Config) -> list[str]:
    """A source glob with `{a,b}` matches no file, ever, silently; refused as `**` is (exporter.config.glob_problem),
    naming the patterns to give instead. A brace without a comma (`acct-{x}-*.csv`) may be a real file name."""
    out = []
    for i, source in enumerate(config.sources):
        for key in ("paths", "moved_to"):
            for j, pattern in enumerate(getattr(source, key)):
                found = BRACES.search(pattern)
                if found is None:
                    continue
                each = ", ".join(repr(pattern[:found.start()] + alternative + pattern[found.end():])
                                 for alternative in found.group(1).split(","))
                out.append(f"sources.{i}.{key}.{j}: {pattern!r}: brace alternatives {found.group(0)} are not "
                           f"supported (glob matches them literally): give one pattern per alternative: {each}")
    return out


def _absent_directory(pattern: str) -> str | None:
    """Why a glob's fixed directory holds nothing: the first directory on its way that does not exist (a typo such
    as `/var/log/ptma`), or a file where a directory should be. None when it is there, or cannot be told."""
    from exporter.tailer import static_root

    root = Path(static_root(pattern))
    here = Path(root.anchor)
    for part in root.parts[1:]:
        here = here / part
        try:
            mode = os.stat(here).st_mode
        except FileNotFoundError:
            return f"the directory {here} does not exist (a typo? files there are followed once it is created)"
        except OSError:
            return None  # not reachable: _unlistable, or the tailer at run time, says why
        if not stat.S_ISDIR(mode):
            return f"{here} is not a directory"
    return None


def _overlap_findings(config: Config, matched: dict[tuple[int, int], list[str]]) -> list[tuple[str, bool]]:
    """Two sources given one pattern, or one whose files another's pattern also matches now: the tailer follows a
    file (by device and inode) for the first source listed (exporter.tailer.Tailer._matches), so the other never
    reads it. Each as (line, refused): refused when both give the same pattern and the later source keeps a record
    type the first does not: every file is shared, so those records are read for no source at all (`records: [d]`
    and `records: [b]` over one glob: every bounce skipped). Patterns that only share some files now (`*.csv` beside
    `acct-*.csv`) are a warning whatever the types: what those files hold, and which files come, is not known here
    (PMTA's acct file holds only d and b; a refusal would also depend on the files present at a start). One line per
    pattern and source it overlaps."""
    out: list[tuple[str, bool]] = []
    patterns: dict[str, tuple[int, int]] = {}
    owners: dict[tuple[int, int], tuple[int, int]] = {}
    for i, source in enumerate(config.sources):
        for j, pattern in enumerate(source.paths):
            first = patterns.setdefault(pattern, (i, j))
            if first[0] != i:
                owner = config.sources[first[0]]
                said = (f"sources.{i}.paths.{j}: {pattern!r} is also sources.{first[0]}.paths.{first[1]} (source "
                        f"{owner.label}): a file both match is read for {owner.label} only")
                lost = _lost_record_types(owner, source)
                out.append((f"{said}, so the records of {_types(lost)} that {source.label} asks for are never read: "
                            f"{_one_source(owner, source)}", True) if lost else
                           (f"{said}, never for {source.label}; remove it from one of them", False))
                continue
            shared: dict[int, tuple[str, int]] = {}  # the first file of each other source this pattern matches
            for path in sorted(matched.get((i, j), ())):
                try:
                    st = os.stat(path)
                except OSError:
                    continue
                if not stat.S_ISREG(st.st_mode):
                    continue
                oi, oj = owners.setdefault((st.st_dev, st.st_ino), (i, j))
                if oi != i:
                    shared.setdefault(oi, (path, oj))
            for oi, (path, oj) in sorted(shared.items()):
                owner = config.sources[oi]
                said = (f"sources.{i}.paths.{j}: {pattern!r} also matches {path}, a file of sources.{oi}.paths.{oj} "
                        f"{owner.paths[oj]!r} (source {owner.label}): such a file is read for {owner.label} only")
                lost = _lost_record_types(owner, source)
                out.append((f"{said}, so any records of {_types(lost)} in it, which {source.label} asks for, are never "
                            f"read: {_one_source(owner, source)}, or narrow one of the patterns" if lost else
                            f"{said}, never for {source.label}; narrow one of the patterns", False))
    return out


def _lost_record_types(first: SourceConfig, later: SourceConfig) -> list[str]:
    """The record types `later` keeps and `first` does not (RECORD_TYPES' order; `records` unset keeps every type):
    those of a file both match are read for neither, the tailer reading it for `first` only. None lost when `later`
    keeps no type `first` does not (as exporter.tailer._keeps_nothing_more judges a file handed between sources)."""
    if first.records is None:
        return []
    return [t for t in RECORD_TYPES if (later.records is None or t in later.records) and t not in first.records]


def _types(codes: list[str]) -> str:
    return f"type{'s' if len(codes) > 1 else ''} {', '.join(codes)}"


def _one_source(first: SourceConfig, later: SourceConfig) -> str:
    """The fix: one source for those files, keeping the types of both."""
    if first.records is None or later.records is None:
        return "make them one source without records (every type)"
    both = [t for t in RECORD_TYPES if t in first.records or t in later.records]
    return f"make them one source with records: [{', '.join(both)}]"


def _overlaps(config: Config, matched: dict[tuple[int, int], list[str]]) -> list[str]:
    """The overlaps that are a warning: the later source reads none of those files."""
    return [line for line, refused in _overlap_findings(config, matched) if not refused]


def _records_lost_to_overlaps(config: Config) -> list[str]:
    """One pattern given to two sources whose later keeps a record type the first does not (a config error): read
    from the config alone (no glob), so a start does not depend on the files present."""
    return [line for line, refused in _overlap_findings(config, {}) if refused]


def _unlistable(pattern: str) -> str | None:
    """A glob over a directory this user cannot list (or reach) matches nothing, silently: say so, naming it (the
    docs say to run check-config as the daemon's user, which reads PMTA's logs by group). Only the pattern's own
    directory: one not created yet, under a parent the user may enter but not list, will be followed once it is."""
    from exporter.tailer import static_root  # the directory the tailer scans for it

    directory = static_root(pattern)
    try:
        with os.scandir(directory):
            return None
    except PermissionError:
        pass
    except OSError:  # not there (yet), or not reachable for another reason: the ordinary "matches no file yet"
        return None
    return (f"cannot list {directory} (permission denied for uid {os.getuid()}): no file of {pattern!r} can be "
            "followed; give this user read and search access to it")


def _unreadable(pattern: str, matches: list[str]) -> str | None:
    """Matching regular files this user cannot open: the daemon would log them at every start; check-config said
    ok. Directories, FIFOs and the like are skipped (the tailer does not follow them)."""
    files = shut = 0
    first = ""
    for path in matches:
        try:
            if not stat.S_ISREG(os.stat(path).st_mode):
                continue
            files += 1
            fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
        except PermissionError:
            shut += 1
            first = first or path
        except OSError:  # gone, a loop, ...: the tailer names those itself
            continue
        else:
            os.close(fd)
    if not shut:
        return None
    return (f"{shut} of {files} matching files cannot be read (permission denied for uid {os.getuid()}), "
            f"e.g. {first}; give this user read access (e.g. the group PMTA's logs belong to)")


def _matches(config: Config) -> dict[tuple[int, int], list[str]]:
    """Each (source, pattern) of `paths` with the files its glob matches now."""
    return {(i, j): glob.glob(pattern) for i, source in enumerate(config.sources)
            for j, pattern in enumerate(source.paths)}


def warnings(config: Config, config_path: Path | None = None) -> list[str]:
    """Legal but suspicious: globs matching no file right now (naming a missing directory), and `run_warnings`
    (`config_path`: the file `config` was read from, judged by its mode when it holds a secret)."""
    matched = _matches(config)
    out = []
    for (i, j), matches in matched.items():
        pattern = config.sources[i].paths[j]
        problem = _unreadable(pattern, matches) if matches else _unlistable(pattern)
        if problem:
            out.append(f"sources.{i}.paths.{j}: {problem}")
        elif not matches:
            absent = _absent_directory(pattern)
            why = f": {absent}" if absent else ""
            out.append(f"sources.{i}.paths.{j}: {pattern!r} matches no file yet{why}")
    return out + run_warnings(config, matched, config_path) + _plain_store_now_keyed(config) + _unkeyed_store(config)


def _plain_store_now_keyed(config: Config) -> list[str]:
    """With hash_recipients, a store holding timelines of plain recipients: `run` lets it in with a WARNING (its older
    timelines keep their addresses until pruned and are no longer found by recipient, docs/security.md); said here."""
    correlator = config.correlator
    if not (correlator.enabled and correlator.hash_recipients):
        return []
    db = Path(config.state_dir).expanduser() / "watchtower.db"
    if _correlator_meta(db).get("rcpt_mode") != "plain" or not _holds_timelines(db):
        return []
    from correlator.keys import RcptHasher  # (the correlator package loads polars: only over such a store)
    from correlator.store import now_keyed_warning

    try:
        keyed_as = RcptHasher(read_regular(hmac_key_path(config), HMAC_KEY_MAX_BYTES).strip()).fingerprint()
    except (OSError, FileProblem):  # none yet (`run` makes it), or its own check names what is wrong
        keyed_as = "the HMAC key the next start makes"
    return [f"correlator.hash_recipients: {now_keyed_warning('plain', keyed_as)}"]


def _unkeyed_store(config: Config) -> list[str]:
    """With hash_recipients, a store whose Message-Id and jobId keys a start keeps unkeyed (written before they were
    keyed, or before hashing was on, and holding timelines: correlator.store.link_scheme): a copy of it can be matched
    against guessed addresses. `run` says it as the store is set up (correlator/sink.py); check-config, here."""
    correlator = config.correlator
    if not (correlator.enabled and correlator.hash_recipients):
        return []
    db = Path(config.state_dir).expanduser() / "watchtower.db"
    scheme = _kept_link_scheme(db)
    if scheme is None:
        return []
    from correlator.keys import LINKS_KEYED  # (the correlator package loads polars: only over a store with timelines)
    from correlator.store import unkeyed_links_warning

    if scheme == LINKS_KEYED:
        return []

    return [f"correlator.hash_recipients: {unkeyed_links_warning(str(db))}"]


def _kept_link_scheme(store: Path) -> str | None:
    """The Message-Id and jobId key scheme a start would keep in `store` (corr_meta link_keys, `as-written` for a
    store written before it), or None: no store, no timeline (a start takes the keyed scheme), or not readable."""
    import sqlite3

    from exporter.state import peek

    try:
        if not store.is_file() or (conn := peek(store)) is None:
            return None
        try:
            meta = dict(conn.execute("SELECT key, value FROM corr_meta WHERE key IN ('schema_version', 'link_keys')"))
            if "schema_version" not in meta or conn.execute("SELECT 1 FROM corr_timelines LIMIT 1").fetchone() is None:
                return None
        finally:
            conn.close()
    except (OSError, sqlite3.Error):
        return None
    from correlator.keys import LINKS_AS_WRITTEN

    return meta.get("link_keys", LINKS_AS_WRITTEN)


def run_warnings(config: Config, matched: dict[tuple[int, int], list[str]] | None = None,
                 config_path: Path | None = None) -> list[str]:
    """What `run` logs at each start besides the tailer's own words about globs: two sources matching the same
    files, delay buckets an alert needs missing, a plain-text password in the config, a secret (or the config file
    holding one, `config_path`) every user can read. `matched`: each (source, pattern)'s glob matches, when already
    listed."""
    if matched is None:
        matched = _matches(config)
    out = _overlaps(config, matched)
    if not any(bound >= OLD_DEFERRAL_S for bound in config.metrics.delay_buckets):
        out.append(f"metrics.delay_buckets: no bound >= {OLD_DEFERRAL_S} (4h): the PmtaQueueOldMessages alert counts "
                   "deferrals past such a bound and cannot fire")
    return out + _exposed_secrets(config, config_path) + _store_above_free_space(config) + basic_auth_warnings(
        config.web.basic_auth_users) + _short_hmac_key(config) + _keys_without_effect(config)


LIVE_WITHOUT_CORRELATOR = frozenset({"enabled", "hash_recipients"})
"""The correlator's keys that act with `correlator.enabled: false`: hash_recipients still redacts the local part of
addresses in the log lines (exporter.logsetup, the correlator's process's too) and /healthz's problems."""


def _keys_without_effect(config: Config) -> list[str]:
    """Keys the config file sets (pydantic's model_fields_set: not a default) that nothing reads: the pmta section's
    without pmta.url (no poller runs, exporter.daemon), the correlator's with the correlator off (no sink, store, API
    or pages). One line per section, naming them."""
    out = []
    pmta = config.pmta
    if pmta.url is None:
        dead = [key for key in PmtaApiConfig.model_fields if key != "url" and key in pmta.model_fields_set]
        if dead:
            out.append(f"pmta.url is not set: {_no_effect(dead)} (they configure the polls of PMTA's management API, "
                       "which run only with pmta.url; without it there are no queue gauges); set pmta.url, or remove "
                       "them")
    correlator = config.correlator
    if not correlator.enabled:
        dead = [key for key in CorrelatorConfig.model_fields
                if key not in LIVE_WITHOUT_CORRELATOR and key in correlator.model_fields_set]
        if dead:
            out.append(f"correlator.enabled is false: {_no_effect(dead)} (they configure the correlator's timeline "
                       "store, its /api/v1 routes and /ui pages, none of which runs); remove them, or set "
                       "correlator.enabled: true")
    return out


def _no_effect(keys: list[str]) -> str:
    return f"{', '.join(keys)} {'has' if len(keys) == 1 else 'have'} no effect"


def _short_hmac_key(config: Config) -> list[str]:
    """A recipient-hashing key shorter than correlator.keys.MIN_KEY_BYTES (`printf short > KEY` was taken without a
    word). Said, not refused: a store keyed with it would refuse any other key, and its timelines with it."""
    correlator = config.correlator
    if not (correlator.enabled and correlator.hash_recipients):
        return []
    path = hmac_key_path(config)
    try:
        held = read_regular(path, HMAC_KEY_MAX_BYTES).strip()
    except (OSError, FileProblem):
        return []  # none yet (created long enough), or its own check names it
    from correlator.keys import short_key_problem

    problem = short_key_problem(path, held) if held else None
    return [f"correlator.hmac_key_file: {problem}"] if problem is not None else []


def _exposed_secrets(config: Config, config_path: Path | None = None) -> list[str]:
    """Secrets every local user can read: the PMTA API key or password (admin access to PMTA, pmta-http-api.md
    §2), the listener's TLS key, the recipient-hashing key (whoever holds it can confirm who was mailed), and the
    config file itself when it holds one of them inline."""
    files = [("pmta.api_key_file", config.pmta.api_key_file), ("pmta.password_file", config.pmta.password_file),
             ("web.tls_key_file", config.web.tls_key_file)]
    if config.correlator.enabled and config.correlator.hash_recipients:
        files.append(("correlator.hmac_key_file", hmac_key_path(config)))
    out = [line for key, path in files if (line := exposed_file_warning(key, path))]
    inline = exposed_config_warning(inline_secret_keys(config), config_path)
    return out + ([inline] if inline else [])


def inline_secret_keys(config: Config) -> list[str]:
    """The daemon's keys whose value in the config file is itself a secret (a bcrypt hash is not one)."""
    keys = [key for key, value in (("pmta.api_key", config.pmta.api_key), ("pmta.password", config.pmta.password))
            if value is not None]
    return keys + plain_text_users(config.web.basic_auth_users)


def plain_text_users(users: dict[str, str]) -> list[str]:
    """`web.basic_auth_users.NAME` of each user given a password rather than a bcrypt hash."""
    from exporter.webauth import is_bcrypt

    return [f"web.basic_auth_users.{user}" for user, secret in users.items() if not is_bcrypt(secret)]


def _world_readable_mode(path: Path) -> int | None:
    """The permission bits of a regular file every user may read, else None (a pipe's or a device's mode, as of
    `--config <(envsubst ...)`, says nothing of the secret's own file; a file not there is named by its check)."""
    try:
        st = path.stat()
    except OSError:
        return None
    return stat.S_IMODE(st.st_mode) if stat.S_ISREG(st.st_mode) and st.st_mode & stat.S_IROTH else None


def _named(path: Path) -> tuple[str, Path]:
    """`path` as a warning names it, and the file a chmod must change: the file a link or `/dev/stdin` (a config
    given as `< file`) leads to (`chmod 600 /dev/stdin` would change the terminal, not the file)."""
    real = Path(os.path.realpath(path))
    return (str(path) if real == path else f"{path} ({real})"), real


def _chmod_hint(path: Path) -> str:
    return f"chmod 600 {path} (or 640 with the daemon's group)"


def exposed_file_warning(key: str, path: Path | None) -> str | None:
    """`key: PATH is readable by every user (mode 0644): chmod 600 PATH ...` for a secret file any local user can
    read (the daemon's and the hub's alike), else None."""
    mode = _world_readable_mode(path) if path is not None else None
    if mode is None:
        return None
    shown, real = _named(path)
    return f"{key}: {shown} is readable by every user (mode {mode:04o}): {_chmod_hint(real)}"


def exposed_config_warning(keys: list[str], config_path: Path | None) -> str | None:
    """The same words for the config file when it holds `keys`' secrets inline (a config without any may well be
    0644, as /etc files are)."""
    if not keys or config_path is None:
        return None
    mode = _world_readable_mode(config_path)
    if mode is None:
        return None
    what = "these secrets" if len(keys) > 1 else "this secret"
    shown, real = _named(config_path)
    return (f"{', '.join(keys)}: {shown} is readable by every user (mode {mode:04o}) and holds {what} inline: "
            f"{_chmod_hint(real)}")


def _free_bytes(directory: Path) -> int | None:
    """Bytes this user may still write on the file system of `directory` (or of its nearest existing parent)."""
    for place in (directory, *directory.parents):
        try:
            st = os.statvfs(place)
        except FileNotFoundError:
            continue
        except OSError:
            return None
        return st.f_bavail * st.f_frsize
    return None


def _store_above_free_space(config: Config) -> list[str]:
    """correlator.max_db_size (20 GiB by default) against the state disk: on a PMTA host /var/lib often shares a file
    system with PMTA's spool and logs, which a store that grows to its cap would fill."""
    if not config.correlator.enabled:
        return []
    state_dir = Path(config.state_dir).expanduser()
    free = _free_bytes(state_dir)
    if free is None:
        return []
    try:
        stored = (state_dir / "watchtower.db").stat().st_size
    except OSError:
        stored = 0
    cap = config.correlator.max_db_size
    if free + stored >= cap:
        return []
    return [f"correlator.max_db_size: {_shown_size(cap)}, but {state_dir}'s file system has {_shown_size(free)} free "
            f"(the store holds {_shown_size(stored)}): the store can fill it, and PMTA's spool and logs with it if "
            "they share it; lower max_db_size or move state_dir"]


def _shown_size(n: int) -> str:
    """`n` bytes as a size an operator reads at a glance: three figures at most, in the largest unit it fills."""
    for unit, scale in (("TiB", 2**40), ("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if n >= scale:
            value = n / scale
            return f"{value:.3g}{unit}" if value < 100 else f"{value:.0f}{unit}"
    return f"{n}B"


def basic_auth_warnings(users: dict[str, str]) -> list[str]:
    """`web.basic_auth_users` given a plain-text password, or bcrypt hashes of different costs (the daemon's and
    the hub's `web` alike). An unknown user costs a check at the highest cost: a user of a lower cost fails
    faster, so timing tells its name from an unknown one."""
    from exporter.webauth import bcrypt_cost, is_bcrypt

    out = [f"{key}: plain-text password; store a bcrypt hash instead" for key in plain_text_users(users)]
    costs = {user: bcrypt_cost(secret) for user, secret in users.items() if is_bcrypt(secret)}
    if len(set(costs.values())) > 1:
        top = max(costs.values())
        lower = ", ".join(f"{user} ({cost})" for user, cost in sorted(costs.items()) if cost < top)
        out.append(f"web.basic_auth_users: bcrypt costs differ ({lower} below {top}): a wrong password for those "
                   "users fails faster than for an unknown name, so their names can be told by timing; hash every "
                   "password at one cost")
    return out
