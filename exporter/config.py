"""The one configuration object: every key, default and validation rule lives here.

Loaded once by the CLI from YAML, validated with pydantic (unknown keys are rejected by name),
then handed whole to the daemon; the hot path only ever sees plain attributes copied out of it.
`docs/config.md` documents every key and `tests/test_docs.py` keeps the two in step.
"""

from __future__ import annotations

import math
import os
import re
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    Strict,
    ValidationError,
    field_validator,
    model_validator,
)

from exporter.boundedfile import PIPE_TIMEOUT, FileProblem, read_bounded, read_password
from exporter.textrepair import SURROGATE_PROBLEM, short_repr, shown_user, surrogate_paths
from exporter.yamllines import KeyLines, numbered
from exporter.yamlload import TOO_DEEP, UniqueKeyLoader
from exporter.yamlproblem import CONSTRUCTOR_ERRORS, unreadable_line, utf8_line_problem, value_problem, yaml_problem

RECORD_TYPES: tuple[str, ...] = ("d", "b", "t", "tq", "f", "rb", "rs", "r")
RECORD_ALIASES: dict[str, str] = {
    "delivery": "d",
    "bounce": "b",
    "transient": "t",
    "transient-queue": "tq",
    "feedback-loop": "f",
    "remote-bounce": "rb",
    "remote-status": "rs",
    "receipt": "r",
}
_RECORD_CHOICES = ", ".join(f"{code} ({alias})" for alias, code in RECORD_ALIASES.items())
"""Every record type as a bad `records` value's error lists it: `d (delivery), b (bounce), ...`."""

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d|w)?\s*$")
_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, "w": 604800.0, None: 1.0}
_SIZE = re.compile(r"^\s*(\d+)\s*([KMG]i?B?|B)?\s*$", re.IGNORECASE)


MAX_DURATION = 3650 * 86400.0
"""Longest duration any key takes (3650d): past it timestamps and SQLite integers overflow, and no setting needs it."""
MAX_CONFIG_BYTES = 1024**2
"""Largest config file read: configs are a few KiB, so a bigger file is the wrong file (a log, /dev/zero)."""


def parse_duration(value: Any) -> float:
    """Seconds from a number or a string such as `250ms`, `5s`, `10m`, `7d`; never inf or NaN (YAML's `.inf`)."""
    seconds: float | None = None
    if isinstance(value, int | float) and not isinstance(value, bool):
        try:
            seconds = float(value)
        except OverflowError:  # a whole number of 309+ digits: not a traceback naming no key
            raise ValueError(f"must be at most 3650d, got {_shown_number(value)}") from None
    elif isinstance(value, str):
        m = _DURATION.match(value)
        if m:
            seconds = float(m.group(1)) * _UNITS[m.group(2)]
            if math.isinf(seconds):  # digits too many for a float ('1e400' is inf): too long, not malformed
                raise ValueError(f"must be at most 3650d, got {_shown_number(value)}")
    if seconds is None or not math.isfinite(seconds):
        raise ValueError(f"invalid duration {value!r}: expected a finite number of seconds or e.g. 5s, 10m, 7d")
    return seconds


def _shown_number(value: Any) -> str:
    """`value` as an error quotes it, a number of hundreds of digits cut to its ends."""
    text = repr(value) if not isinstance(value, int) else str(value)
    return text if len(text) <= 40 else f"{text[:16]}...{text[-16:]} ({len(text)} characters)"


def parse_size(value: Any) -> int:
    """Bytes from a number or a string such as `512KiB`, `1MiB`, `2GB`."""
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, str):
        m = _SIZE.match(value)
        if m:
            unit = (m.group(2) or "B").upper().rstrip("B").rstrip("I")
            return int(m.group(1)) * {"": 1, "K": 1024, "M": 1024**2, "G": 1024**3}[unit]
    raise ValueError(f"invalid size {value!r}: expected bytes or e.g. 512KiB, 1MiB")


def _show_size(n: int) -> str:
    for unit, scale in (("GiB", 1024**3), ("MiB", 1024**2), ("KiB", 1024)):
        if n % scale == 0:
            return f"{n // scale}{unit}"
    return str(n)


def _duration(allow_zero: bool) -> Callable[[Any], float]:
    """A duration check: finite, within (0 or more / more than 0) .. MAX_DURATION, naming the value as written."""

    def check(value: Any) -> float:
        seconds = parse_duration(value)
        if seconds < 0 or (seconds == 0 and not allow_zero):
            raise ValueError(f"must be {'0 or more' if allow_zero else 'more than 0'}, got {value!r}")
        if seconds > MAX_DURATION:
            raise ValueError(f"must be at most 3650d, got {value!r}")
        return seconds

    return check


def _size(maximum: int, minimum: int = 1) -> Callable[[Any], int]:
    """A size check: at least `minimum` (more than 0) and at most `maximum` bytes (a read buffer of 50GiB is a
    MemoryError)."""

    def check(value: Any) -> int:
        size = parse_size(value)
        if size <= 0:
            raise ValueError(f"must be more than 0, got {value!r}")
        if size < minimum:
            raise ValueError(f"must be at least {_show_size(minimum)}, got {value!r}")
        if size > maximum:
            raise ValueError(f"must be at most {_show_size(maximum)}, got {value!r}")
        return size

    return check


Duration = Annotated[float, BeforeValidator(_duration(allow_zero=False))]
"""Seconds, more than 0 and finite: an interval or timeout where 0 would spin or never wait."""
DurationOrZero = Annotated[float, BeforeValidator(_duration(allow_zero=True))]
"""Seconds where 0 has a meaning (rescan on every poll, no wait, no fallback window)."""
Count = Annotated[int, Strict()]
"""A whole number: a boolean is refused, not taken as 1 or 0 (pydantic's lax int read `max_senders: yes` as 1)."""
Size = Annotated[int, BeforeValidator(_size(2**53))]
ChunkSize = Annotated[int, BeforeValidator(_size(256 * 1024**2))]
"""A read buffer: held in memory per read, so bounded (256MiB)."""
MIN_DB_SIZE = 64 * 1024**2
DbSize = Annotated[int, BeforeValidator(_size(2**53, MIN_DB_SIZE))]
"""A state DB size cap: an empty store is already hundreds of KiB, so a bare `20` (bytes, not GiB) would prune every
timeline as soon as it is written, silently."""


class PathProblem(ValueError):
    """A path key's problem; `valueless` says it without the value, for a `*_file` key whose value may be the secret
    itself pasted into the wrong key (a password, a PEM block): the reason stays, the value is not shown."""

    def __init__(self, text: str, valueless: str) -> None:
        super().__init__(text)
        self.valueless = valueless


def check_path(value: Any) -> Path:
    """One rule for every path key: absolute after `~` expansion, so check-config and `run` see the same file
    whatever the working directory (a relative state_dir once meant `.`, chmodded 0700)."""
    if isinstance(value, Path):
        text = str(value)
    elif isinstance(value, str):
        text = value
    else:
        raise ValueError(f"expected a path (a string), got {value!r}")
    if not text.strip():
        raise ValueError("empty path; give an absolute path such as /var/lib/watchtower")
    if "\x00" in text:
        raise PathProblem(f"{text!r} contains a NUL byte", "the value given contains a NUL byte")
    expanded = expand_home(text)
    if expanded.startswith("~"):
        raise PathProblem(f"{text!r}: cannot expand {text.split('/')[0]} (no such user)",
                          "the value given: cannot expand its ~user part (no such user)")
    if not os.path.isabs(expanded):
        why = "is a relative path; give an absolute path (or ~/...): the daemon's working directory is not the " \
              "config file's"
        raise PathProblem(f"{text!r} {why}", f"the value given {why}")
    return Path(expanded)


ConfigPath = Annotated[Path, BeforeValidator(check_path)]


def expand_home(text: str) -> str:
    """`text` with a leading `~` or `~/` expanded, as os.path.expanduser does, except from a HOME that is set but
    empty or relative: `HOME= watchtower ...` made `~/state` read as `/state`, silently."""
    if text == "~" or text.startswith("~/"):
        home = os.environ.get("HOME")
        if home is not None and not os.path.isabs(home):
            raise ValueError(f"{short_repr(text)}: HOME is {short_repr(home)}, not an absolute path, so ~ cannot be "
                             "expanded; set HOME or give an absolute path")
    return os.path.expanduser(text)


def _check_glob(pattern: str) -> str:
    """A source glob, `~` expanded as for every path key, that can match what the operator meant."""
    expanded = expand_home(pattern) if pattern.startswith("~") else pattern
    problem = glob_problem(expanded)
    if problem:
        raise ValueError(f"{short_repr(pattern)}: {problem}")  # (cut: a pattern far longer than a path)
    return expanded


SourceGlob = Annotated[str, AfterValidator(_check_glob)]


def check_http_url(value: str) -> str:
    """An http(s) URL with a host and a valid port: anything else fails at every poll, not at startup."""
    try:
        parts = urlsplit(value)
        port = parts.port
    except ValueError as exc:
        raise ValueError(f"{value!r}: {'invalid port' if 'Port' in str(exc) else exc}") from None
    if parts.scheme not in ("http", "https"):
        raise ValueError(f"{value!r}: expected an http:// or https:// URL such as https://127.0.0.1:8080")
    if not parts.hostname:
        raise ValueError(f"{value!r}: no host")
    if port == 0:
        raise ValueError(f"{value!r}: invalid port")
    return value


HttpUrl = Annotated[str, AfterValidator(check_http_url)]


class _Strict(BaseModel):
    # hide_input_in_errors: a ValidationError's own text (a traceback at debug level) shows no value, a password's
    # included; the problem lines are written by describe_error, which never shows a secret key's
    model_config = ConfigDict(extra="forbid", frozen=True, hide_input_in_errors=True)


_WILDCARD = re.compile(r"[*?\[]")


def default_label(pattern: str) -> str:
    """The file name of a glob up to its first wildcard, without trailing separators or extension:
    `acct-*.csv`, `acct.csv`, `acct_[0-9]*.csv`, `acct.csv.*` all give `acct`; `*.csv` gives ''."""
    name = pattern.rsplit("/", 1)[-1]
    m = _WILDCARD.search(name)
    literal = name[: m.start()] if m else name
    stem = literal.rstrip("-_.")
    if m is None or literal.endswith("."):  # the literal part ends with the file's extension: drop it
        stem = os.path.splitext(stem)[0].rstrip("-_.")
    return stem


class SourceConfig(_Strict):
    """One family of accounting files, e.g. every `acct-*.csv` PMTA writes for one `<acct-file>`."""

    paths: list[SourceGlob] = Field(
        min_length=1, description="Glob patterns of the accounting files PMTA writes: absolute paths, e.g. "
        "`/var/log/pmta/acct-*.csv`. CSV (a header line first) or PMTA's JSON form (one object per record, e.g. "
        "`/var/log/pmta/acct-*.json`), told apart per file by its first non-blank line (once: kept across "
        "restarts). A match whose first bytes are "
        "compressed (gzip, bzip2, xz, zstd: logrotate's `compress`), or whose header line ends in a lone CR (old Mac "
        "line endings), is named once in the log and not read. A file two sources' globs match is read for the "
        "first source listed only, with its `records` (the later source reads none of it). Where the later source "
        "keeps a record type the first does not, those records are read by no source: `check-config`, `run` and "
        "`oneshot` refuse two sources given the same glob so (exit 2); globs that share some files only (`*.csv` "
        "beside `acct-*.csv`) are a warning naming the types such a file may lose (what it holds is not known). "
        "Read such files with one source keeping every type wanted (`records: [d, b]`)."
    )
    name: str | None = Field(
        default=None,
        description="Label value for self-metrics; unique. Defaults to the first glob's file name up to its first "
        "wildcard, without separators or extension (`/var/log/pmta/acct-*.csv` and `/x/acct.csv` give `acct`); "
        "required when that leaves nothing (`*.csv`). Renaming a source keeps its files' read positions (they were "
        "read for the old name); a file whose glob moves to another configured source resumes there too when that "
        "source keeps no record type the old one did not, else it is read again for it (records of types both "
        "keep are then counted again: a WARNING says so).",
    )
    moved_to: list[SourceGlob] = Field(
        default_factory=list,
        description="Glob patterns of where PMTA's `move-to` puts this source's closed files (e.g. "
        "`/var/log/pmta/archive/acct-*.csv`). Files there are not followed as new, except one that no checkpoint "
        "names, that is no copy of a file read before, and that PMTA created and moved there unseen (between two "
        "scans, or while the daemon was down): it is read whole, once. The daemon looks there when one of its "
        "directories changes (with a wildcard in the directory part, each directory it matches) and at a restart. "
        "They are searched at a "
        "start for a file that was being read when the daemon stopped and has left the globs since: found by its "
        "identity (device, inode and first bytes), or as a copy with its first bytes (moved to another file system), "
        "it is read from where reading stopped to its end. The correlator process searches them too, for a file whose "
        "recorded path no longer names it. The directory a file was read in is always searched as well (a file "
        "renamed in place). `watchtower oneshot` reads them as it reads `paths`: a backfill counts the moved files.",
    )
    records: list[str] | None = Field(
        default=None,
        description="Record types this source feeds, each a code or its long alias, in lower case: "
        + ", ".join(f"`{code}` ({alias})" for alias, code in RECORD_ALIASES.items())
        + "; others are skipped so a record PMTA writes to two files is counted once. Unset: all "
        "types (an empty list is an error). A file two sources' globs match is read for the first source listed only "
        "(see `paths`): give a set of files one source keeping every type wanted there (`records: [d, b]`; a source "
        "of `d` and another of `b` given the same glob is a config error).",
    )

    @field_validator("records")
    @classmethod
    def _known_types(cls, value: list[str] | None) -> list[str] | None:
        if value is None:
            return None
        if not value:
            raise ValueError("empty list; leave records out to accept every record type")
        out = []
        for item in value:
            code = RECORD_ALIASES.get(item, item)
            if code not in RECORD_TYPES:
                raise ValueError(f"unknown record type {item!r}; expected one of {_RECORD_CHOICES}: a code or its "
                                 "alias, in lower case")
            out.append(code)
        return out

    @model_validator(mode="after")
    def _has_label(self) -> SourceConfig:
        if not self.label:
            raise ValueError(f"cannot derive a name from {self.paths[0]!r} (nothing before the wildcard); set name")
        return self

    @property
    def label(self) -> str:
        """The `source` label value: `name`, or the stem of the first glob (default_label)."""
        return self.name or default_label(self.paths[0])


class TailConfig(_Strict):
    start_position: Literal["beginning", "end"] = Field(
        default="end",
        description="Where to start in files that already exist the very first time the daemon runs "
        "(no state yet). Files found later, and every file after the first run, are read from byte 0. Files "
        "already in `moved_to` at the first run are not read (with `beginning` a WARNING counts them; "
        "`watchtower oneshot` does). "
        "With `end`, a file the first run cannot read yet (permissions) is read from where it ended then once it "
        "can be, and a log directory it cannot list yet has the files found there once it can be started at "
        "their ends (a WARNING names each).",
    )
    poll_interval: Duration = Field(
        default=0.25, description="How often followed files are checked for growth (a stat each; cheap)."
    )
    rescan_interval: DurationOrZero = Field(
        default=5.0, description="How often the globs are re-evaluated (0: at every poll). A file that left the globs "
        "is read on until it has not grown for this long (a writer may still hold it), then retired.")
    chunk_bytes: ChunkSize = Field(default=4 * 1024 * 1024, description="Largest read from one file at a time.")
    checkpoint_interval: Duration = Field(
        default=1.0, description="How often offsets and counters are committed to the state database."
    )
    idle_close_after: Duration = Field(
        default=300.0, description="Close the descriptor of a file that has not grown for this long."
    )
    forget_after: Duration = Field(
        default=14 * 86400.0,
        description="Drop the checkpoint of a file that has been gone from every glob for this long.",
    )
    max_open_files: Count = Field(
        default=128, ge=1,
        description="Most accounting files held open at once. To open another, a file read to its end is closed "
        "first, else one still being written; a file with bytes unread that no longer grows (a backlog, a file "
        "rotated away) keeps its descriptor until drained, and the new one waits its turn. Lowered to half of what "
        "the process's open-file limit leaves past 32 descriptors (a WARNING says so): `LimitNOFILE` of at least "
        "2 x this + 32 keeps it.",
    )
    max_pending_rows: Count = Field(
        default=20_000, ge=1000,
        description="With `correlator.worker: thread`: rows read and held in memory for the correlator; past it "
        "the correlator's backlog is kept as file ranges and read again from the files (the metrics never wait), "
        "and while commits fail reading pauses (memory stays bounded). The process worker holds no rows: its "
        "child reads the files itself.",
    )
    shutdown_timeout: DurationOrZero = Field(
        default=3.0,
        description="On SIGTERM, time allowed to commit what was read; the rest is read again at the next start "
        "(0: no wait).",
    )


class ClassifyConfig(_Strict):
    isp_file: ConfigPath | None = Field(
        default=None, description="YAML that replaces the shipped ISP table (recipient domains, MX suffixes)."
    )
    replies_file: ConfigPath | None = Field(
        default=None, description="YAML that replaces the shipped SMTP reply classification rules."
    )


def check_sender_domain(value: str) -> str:
    """A `labels.senders` entry as records are compared with it: the MAIL FROM domain after the last `@`,
    lowercased (exporter/aggregate.py). Spaces around it, a leading `@` and a trailing dot are dropped; what still
    cannot equal such a domain (an address, a space, a wildcard, a list in one string) is refused: it never matched,
    and every record went to sender="other", silently."""
    domain = value.strip().lower().removeprefix("@").removesuffix(".").strip()
    if not domain:
        raise ValueError("empty: give a sending domain such as example.com")
    if "@" in domain:
        raise ValueError(f"{value!r} is an address, not a domain: give the part after the '@'")
    if any(ch.isspace() or ch in ",;" for ch in domain):
        raise ValueError(f"{value!r} holds a space, ',' or ';': one domain per entry")
    if any(ch in "*?[]" for ch in domain):
        raise ValueError(f"{value!r} holds a wildcard: entries are whole domains, compared exactly")
    return domain


SenderDomain = Annotated[str, AfterValidator(check_sender_domain)]


class LabelsConfig(_Strict):
    senders: list[SenderDomain] = Field(
        default_factory=list,
        description="Sending domains (MAIL FROM domain) kept as the `sender` label; others become `other`. "
        "When empty, the first `max_senders` distinct domains seen are kept. Compared as records are: the part "
        "after the address's last `@`, in lower case (spaces around an entry, a leading `@` and a trailing dot are "
        "dropped); an entry that still is no domain (an address, a space, a wildcard) is an error.",
    )
    max_senders: Count = Field(default=20, ge=0, description="Cap on auto-admitted `sender` values.")
    max_vmtas: Count = Field(
        default=2000, ge=1, description="Cap on distinct `vmta` values, shared by the record series and the queue "
        "gauges (a VMTA is named in both or neither); beyond it new VMTAs become `overflow`, as does a name longer "
        "than 256 characters whatever the cap."
    )
    max_pools: Count = Field(
        default=200, ge=1, description="Cap on distinct `vmta_pool` values; beyond it `overflow`, as for a name "
        "longer than 256 characters."
    )

    @field_validator("senders")
    @classmethod
    def _once_each(cls, value: list[str]) -> list[str]:
        """`Example.com` and `example.com` are one sender once written as compared: listed once."""
        return list(dict.fromkeys(value))


class MetricsConfig(_Strict):
    delay_buckets: list[DurationOrZero] = Field(
        # 1 min to 6 h in steps of at most x3 (14400 = PmtaQueueOldMessages' 4 h); 9 bounds keep the
        # reference deployment under bench/cardinality.py's 50,000 series.
        default_factory=lambda: [10.0, 60.0, 120.0, 300.0, 900.0, 2700.0, 7200.0, 14400.0, 21600.0],
        min_length=1,
        description="Upper bounds (seconds) of `pmta_delivery_delay_seconds` and `pmta_deferral_age_seconds`; +Inf "
        "is implied. Keep a bound >= 14400: `PmtaQueueOldMessages` counts deferrals past the smallest such "
        "bound (4 h), and cannot fire without one. Changing it restarts both histograms from 0 at the next start "
        "(a warning says so; Prometheus reads it as a counter reset): counts kept per bucket of other bounds would "
        "read as other delays.",
    )

    @field_validator("delay_buckets")
    @classmethod
    def _sorted(cls, value: list[float]) -> list[float]:
        if sorted(set(value)) != value:
            raise ValueError("buckets must be strictly increasing")
        return value


class PmtaApiConfig(_Strict):
    url: HttpUrl | None = Field(
        default=None,
        description="Base URL of PMTA's HTTP management interface, e.g. https://127.0.0.1:8080, without a user or "
        "password (username/password_file) and without a query or fragment (the API's paths, /status, /queues, are "
        "appended to it); reached directly (HTTP_PROXY and the other proxy variables are ignored; "
        "SSL_CERT_FILE and SSL_CERT_DIR still name the CAs trusted without `ca_file`). A redirect is followed only "
        "on this origin or to https on the same host (PMTA 5's `http-redirect-to-https`); one to another server is "
        "refused and counted as `http_status`, naming where it pointed. Unset: no queue gauges, and the other pmta "
        "keys the file sets have no effect (a warning names them at `check-config` and at start).",
    )
    poll_interval: Duration = Field(default=15.0, description="Time between polls of the management API.")
    timeout: Duration = Field(default=5.0, description="Timeout of one HTTP request to PMTA.")
    poll_deadline: Duration = Field(
        default=10.0, gt=0,
        description="Bound on one whole poll, every per-VMTA request included; a VMTA not read by then has no "
        "queue gauges until a later poll reads it.",
    )
    api_key: str | None = Field(default=None, description="Sent as the X-API-Key header (PMTA 5).")
    api_key_file: ConfigPath | None = Field(default=None, description="File holding the API key (surrounding "
                                            "whitespace and a UTF-8 byte order mark are dropped).")
    username: str | None = Field(
        default=None, description="HTTP basic auth user (a proxy in front of PMTA); no `:` (basic auth splits user "
        "and password at the first one).")
    password: str | None = Field(
        default=None, description="HTTP basic auth password (prefer password_file); needs username.")
    password_file: ConfigPath | None = Field(
        default=None, description="File holding the basic auth password (its first line, up to a line feed; a "
        "UTF-8 byte order mark is dropped; keep it 0600); needs username.")
    verify_tls: bool = Field(default=True, description="Verify PMTA's certificate (PMTA 5 self-signs).")
    ca_file: ConfigPath | None = Field(default=None, description="CA bundle to verify PMTA's certificate with.")
    format: Literal["xml", "json"] = Field(default="xml", description="Response format asked of PMTA.")
    per_vmta_queries: bool = Field(
        default=True,
        description="Ask /queues?queue=*/VMTA for every VMTA so queues beyond PMTA's top-N are seen.",
    )
    max_backoff: DurationOrZero = Field(
        default=300.0, description="Longest wait between failing polls (0: no backoff).")

    @field_validator("url")
    @classmethod
    def _no_credentials_in_url(cls, url: str | None) -> str | None:
        """httpx would send them as basic auth, and the URL is logged with every change of the API's state."""
        if url is not None and "@" in urlsplit(str(url)).netloc:
            raise ValueError("carries a user name or password: give them as pmta.username and pmta.password_file "
                             "(a URL's are logged with it)")
        return url

    @field_validator("url")
    @classmethod
    def _base_url_alone(cls, url: str | None) -> str | None:
        """The API's paths are appended to the URL: after a query or fragment every request URL was malformed
        (`/pmta?site=a/status?format=xml`), as the hub refuses for its targets. Not shown: a query may hold a token."""
        if url is not None and ("?" in url or "#" in url):
            raise ValueError("has a query or fragment (`?...` or `#...`): the API's paths (/status, /queues, ...) are "
                             "appended to this base URL, so every request URL would be malformed; give the base URL "
                             "alone, e.g. https://127.0.0.1:8080 or http://proxy.example/pmta")
        return url

    @field_validator("username")
    @classmethod
    def _basic_auth_user(cls, user: str | None) -> str | None:
        """As web.basic_auth_users: PMTA (or the proxy in front of it) would read another user name."""
        if user is not None and ":" in user:
            raise ValueError("a user name cannot hold ':' (HTTP basic auth splits user and password at the first ':')")
        return user

    @model_validator(mode="after")
    def _one_secret_source(self) -> PmtaApiConfig:
        """A secret given twice is ambiguous: which one wins would be a guess, so neither does. A password
        without a user was never sent (basic auth needs both): refused rather than ignored."""
        both = [f"set {a} or {a}_file, not both" for a in ("password", "api_key")
                if getattr(self, a) is not None and getattr(self, f"{a}_file") is not None]
        if both:
            raise ValueError("; ".join(both))
        if not self.username and (self.password is not None or self.password_file is not None):
            raise ValueError("password and password_file need username (HTTP basic auth sends both)")
        return self

    def resolved_password(self) -> str | None:
        """The basic auth password, read from password_file when that is set (raises OSError if unreadable)."""
        if self.password_file is not None:
            return read_password(self.password_file)  # a FIFO never hangs a poll, /dev/zero is never read
        return self.password


class CorrelatorConfig(_Strict):
    enabled: bool = Field(default=True, description="Store per-message timelines in SQLite, served by /api/v1 and "
                          "the /ui pages. Off, the other correlator keys the file sets have no effect (a warning names "
                          "them at `check-config` and at start), except hash_recipients.")
    retention: Duration = Field(default=7 * 86400.0, description="Keep a timeline until its latest event is this old.")
    max_db_size: DbSize = Field(
        default=20 * 1024**3,
        description="Bytes in use in the state DB above which the oldest data is pruned, whatever its age: queue "
        "events and flow buckets by time, timelines earliest stored first, none while older queue events are left "
        "(checked every 5 s; every 1 s while over it; a cap that pruning cannot reach is logged and shown in "
        "/healthz `problems`). At least 64MiB. A target, not a hard bound: a "
        "backfill faster than pruning (1 s of deletes a second) goes past it for a while (2x at 64MiB in a review), "
        "and the file keeps its largest size (freed pages are reused, not given back), plus a -wal of up to 64MiB. "
        "`check-config` and `run` warn when it is above what the state_dir's file system has free (plus what the "
        "store holds): keep state_dir off the file system of PMTA's spool.",
    )
    fallback_window: DurationOrZero = Field(
        default=7 * 86400.0,
        description="How far back an FBL/remote-bounce record without id is matched on rcpt + orig (0: never).",
    )
    hash_recipients: bool = Field(
        default=False, description="Store recipients as HMAC-SHA256; lookups by address still work. Also removes "
        "the local part of every address from the log lines and /healthz's problems, with the correlator off too. "
        "Turned on over "
        "a store of plain timelines: let in (a WARNING; those keep their address until pruned and are no longer "
        "found by address, docs/security.md). Turned off over a store of hashed timelines: refused (`check-config` "
        "and `run` exit 2) rather than storing addresses in clear beside them; set it back, or start a new store "
        "(another state_dir). A store holding no timeline takes either."
    )
    hmac_key_file: ConfigPath | None = Field(
        default=None, description="Key for hash_recipients (32 bytes or more: a shorter one is warned of); default "
        "`<state_dir>/correlator-hmac.key`, created 0600 on the first start. Back it up and move it with the state: a "
        "store keyed with it refuses another key, or none, and, while it holds timelines, hash_recipients off "
        "(`check-config` and `run` exit 2)."
    )
    max_flow_senders: Count = Field(default=20, ge=1, le=999, description=(
        "Senders shown in /api/v1/flows; rest `other`. At most 999: a hub refuses a host's flows with more sender "
        "nodes than 1,000, `other` included."))
    worker: Literal["thread", "process"] = Field(
        default="process",
        description="Where timelines are written: `process` (a child process of its own, with its own interpreter "
        "lock, reading the files from its positions in the state database; restarted if it dies) or `thread` (the "
        "state writer thread of the daemon: one process, ~150 MB less resident memory). Measured on 2 cores at "
        "20k records/s appended: `process` keeps up or nearly (timeline lag 2-3 s over 600 s, a 1 s checkpoint "
        "interval included), `thread` stores ~19k records/s and falls behind until the rate drops.",
    )
    grafana_url: HttpUrl = Field(
        default="http://localhost:3000", description="Grafana base URL the /ui pages link VMTA drill-downs to."
    )
    stall_timeout: Duration = Field(
        default=120.0,
        description="With `worker: process`: how long the correlator process may store nothing while it is behind "
        "(`/healthz` `commit_backlog_bytes` above 0) before the daemon calls it stalled: `/healthz` 503 with a "
        "problem naming its pid (and the lock it waits for, if it does), `watchtower_correlator_stalled` 1 and one "
        "ERROR; cleared, with an INFO, once it stores again. A process stopped (SIGSTOP), hung, or waiting for the "
        "lock of a predecessor that does not exit. A slow one that advances, or an idle one, never trips it; it "
        "is not restarted (nothing is lost: it resumes from its positions). Keep it well above the longest slice "
        "(tens of seconds on a slow disk): a few seconds can trip on one long slice.",
    )


class WebConfig(_Strict):
    tls_cert_file: ConfigPath | None = Field(default=None, description="Serve HTTPS with this certificate (PEM). "
                                             "Or `--web.config.file`: node_exporter's web config file gives this "
                                             "key, tls_key_file and basic_auth_users (docs/security.md).")
    tls_key_file: ConfigPath | None = Field(default=None, description="Key for tls_cert_file (PEM); both or neither.")
    basic_auth_users: dict[str, str] = Field(
        default_factory=dict,
        description="user: bcrypt hash (`$2b$...`, as node_exporter's web-config; make one with "
        "`htpasswd -nbBC 10 '' PASSWORD | cut -c2-`) required on every route when set. A value that starts like "
        "a bcrypt hash (`$2a$`, `$2b$`, `$2y$`, `$2x$` and a cost) must be a whole hash bcrypt can check (an error "
        "naming the user otherwise: one cut short when pasted is never a plain password), of cost 04 to 14 (each "
        "step doubles a login's work: ~1 s at 14); any other value is taken as a plain password (discouraged).",
    )
    max_connections: Count = Field(
        default=512, ge=8,
        description="Open HTTP connections kept at most; past it the longest-idle one is closed (with none idle, "
        "the one whose answer has been in flight longest, past 5 s). Also held "
        "below the process's open-file limit so sockets never starve the tailer and the database.",
    )
    header_timeout: Duration = Field(
        default=10.0, description="Close a connection that has not sent a complete request head this long after it "
        "opened, or after the first byte of its next request on a keep-alive connection (an idle keep-alive "
        "connection is closed after keep_alive_timeout)."
    )
    keep_alive_timeout: DurationOrZero = Field(
        default=5.0, description="Close a keep-alive connection idle for this long after a response (0: no keep-alive)."
    )
    send_timeout: Duration = Field(
        default=30.0, gt=0,
        description="Reset a connection whose answer makes no progress for this long (the client does not read "
        "it): clients that send requests and never read the answers cannot hold connections.",
    )
    api_max_concurrency: Count = Field(
        default=2, ge=1, description="/api/v1 requests served at once; others wait up to api_queue_timeout."
    )
    api_queue_timeout: DurationOrZero = Field(
        default=2.0, description="How long an /api/v1 request waits for a slot before a 503 answer (0: no wait)."
    )
    api_query_timeout: Duration = Field(
        default=5.0, description="Time budget of one /api/v1 query; past it the query is interrupted (503)."
    )
    allowed_hosts: list[str] = Field(
        default_factory=list,
        description="Host names (no port; an IPv6 address in brackets) the listener answers to besides the "
        "loopback ones (`localhost`, `127.x.x.x`, `[::1]`) and the `listen` host, compared case-insensitively with "
        "the `Host` header of each request, whose port is ignored. On a loopback `listen` (the default) a request "
        "naming any other host is refused `421` before auth and any route, so a web page in a local browser cannot "
        "point its own DNS name at 127.0.0.1 and read the API (DNS rebinding); list here a name a reverse proxy "
        "forwards (`proxy_set_header Host $host`) or another name of 127.0.0.1 your tools use. Off loopback every "
        "`Host` is answered unless this is set; then only these, the `listen` host and the loopback names are. "
        "A request without `Host` (HTTP/1.0) is answered.",
    )

    @field_validator("allowed_hosts")
    @classmethod
    def _host_names(cls, names: list[str]) -> list[str]:
        """Each name as a `Host` header's host is compared (exporter.http.HostCheck): lower case, no final dot, an
        IPv6 address bracketed and compressed. A port, URL or wildcard would never match: an error naming it."""
        import ipaddress

        canonical = []
        for text in names:
            name = text.strip().lower()
            inner = name[1:-1] if name.startswith("[") and name.endswith("]") else name
            try:
                address = ipaddress.ip_address(inner)
            except ValueError:
                address = None
            if address is not None:
                canonical.append(f"[{address.compressed}]" if address.version == 6 else address.compressed)
                continue
            name = name.removesuffix(".")
            if not re.fullmatch(r"[a-z0-9_]([a-z0-9_-]*[a-z0-9_])?(\.[a-z0-9_]([a-z0-9_-]*[a-z0-9_])?)*", name):
                why = ("no port: the port of Host is not compared" if ":" in name and not name.startswith("[")
                       else "a host name (letters, digits, '-', '.'; an IDN in its xn-- form), an IPv4 address or an "
                       "IPv6 address in brackets, no port, scheme, path or wildcard")
                raise ValueError(f"{short_repr(text)}: {why}")
            canonical.append(name)
        return canonical

    @field_validator("basic_auth_users")
    @classmethod
    def _users_who_can_log_in(cls, users: dict[str, str]) -> dict[str, str]:
        problems = users_problems(users)
        if problems:
            raise ValueError("; ".join(problems))
        return users

    @model_validator(mode="after")
    def _cert_and_key(self) -> WebConfig:
        if self.tls_cert_file is not None and self.tls_key_file is None:
            raise ValueError("tls_cert_file is set but tls_key_file is not (set both, or neither)")
        if self.tls_key_file is not None and self.tls_cert_file is None:
            raise ValueError("tls_key_file is set but tls_cert_file is not (set both, or neither)")
        return self


def users_problems(users: dict[str, str]) -> list[str]:
    """Why a user of `basic_auth_users` (the config's or --web.config.file's) could never log in: a mistake to say at
    start, not a 401 for ever (the secret unsaid)."""
    from exporter.webauth import MAX_BCRYPT_COST, bcrypt_cost, bcrypt_problem, is_bcrypt

    problems = []
    for user, secret in users.items():
        if not user or ":" in user:
            problems.append(f"user {shown_user(user)!r}: a user name cannot hold ':' or be empty (HTTP basic auth "
                            "splits user and password at the first ':')")
        elif not secret.strip():
            problems.append(f"user {user!r}: an empty password: anyone could log in as it; give a bcrypt hash")
        elif is_bcrypt(secret) and (why := bcrypt_problem(secret)) is not None:
            if MAX_BCRYPT_COST < bcrypt_cost(secret) <= 31:  # checkable, but too slow to be let in
                problems.append(f"user {user!r}: bcrypt {why}")
            else:
                problems.append(f"user {user!r}: bcrypt cannot check this hash ({why}): nobody could log in as it")
    return problems


def check_listen(value: str) -> str:
    """`host:port`, `[v6]:port` or `:port` (loopback); the same rule for the daemon and the hub."""
    if "://" in value:
        raise ValueError(f"{value!r}: listen is host:port, not a URL (e.g. 127.0.0.1:9469)")
    host, sep, port = value.rpartition(":")
    if not sep:
        raise ValueError(f"expected host:port, got {value!r}")
    if not (port.isascii() and port.isdigit()) or int(port) > 65535:  # isdigit() alone takes '²' and full-width '９'
        raise ValueError(f"expected host:port, got {value!r} (the port is a number from 0 to 65535, in ASCII digits)")
    if ":" in host and not (host.startswith("[") and host.endswith("]")):
        raise ValueError(f"write an IPv6 address in brackets, e.g. [::1]:9469, got {value!r}")
    return value


class Listener:
    """Bind address and port of a model with a `listen` field (the daemon's and the hub's config)."""

    listen: str

    @property
    def listen_host(self) -> str:
        """The bind address; a bare `:port` is loopback, so nothing is exposed unless asked for by name."""
        return self.listen.rpartition(":")[0].strip("[]") or "127.0.0.1"

    @property
    def listen_port(self) -> int:
        return int(self.listen.rpartition(":")[2])


class Config(_Strict, Listener):
    """The whole daemon configuration (`watchtower check-config` validates exactly this)."""

    sources: list[SourceConfig] = Field(min_length=1, description="The accounting file families to follow.")
    state_dir: ConfigPath = Field(
        description="Directory of the state database (offsets, counters, timelines); one daemon per directory "
        "(`watchtower.lock`: a second daemon exits 1).")
    listen: str = Field(
        default="127.0.0.1:9469",
        description="host:port of the HTTP listener serving /metrics and the API. A bare `:port` means "
        "loopback (127.0.0.1); other hosts must be named: `0.0.0.0:9469` (IPv4), `[::]:9469` (IPv6 and IPv4) or an "
        "address of this host (one it does not have is a config error to `check-config`; `run` waits 30 s for it "
        "to be assigned, then exits 1). Port 0 binds a free port the kernel picks (for tests and benchmarks): the "
        "daemon logs it at start (`listening on HOST:PORT`), and `healthcheck`, which takes the port from this key, "
        "cannot find it (it asks port 0 and reports unhealthy).",
    )
    tail: TailConfig = Field(default_factory=TailConfig)
    classify: ClassifyConfig = Field(default_factory=ClassifyConfig)
    labels: LabelsConfig = Field(default_factory=LabelsConfig)
    metrics: MetricsConfig = Field(default_factory=MetricsConfig)
    pmta: PmtaApiConfig = Field(default_factory=PmtaApiConfig)
    correlator: CorrelatorConfig = Field(default_factory=CorrelatorConfig)
    web: WebConfig = Field(default_factory=WebConfig)
    log_level: Literal["debug", "info", "warning", "error"] = Field(default="info", description="Log verbosity.")
    log_format: Literal["text", "json"] = Field(
        default="text", description="`text` lines, or one JSON object per line (uvicorn's logs too)."
    )

    @model_validator(mode="before")
    @classmethod
    def _empty_sections(cls, data: Any) -> Any:
        """A section left empty (`pmta:` with its keys commented out) is YAML null: take it as the defaults."""
        if not isinstance(data, dict):
            return data
        empty = [k for k in _SECTIONS if k in data and data[k] is None]
        return {**data, **dict.fromkeys(empty, {})} if empty else data

    @field_validator("listen")
    @classmethod
    def _host_port(cls, value: str) -> str:
        return check_listen(value)

    @field_validator("sources")
    @classmethod
    def _unique_names(cls, value: list[SourceConfig]) -> list[SourceConfig]:
        uses = Counter(s.label for s in value)  # (list.count per name: 24 s for 190k aliases of one source)
        dupes = sorted(name for name, n in uses.items() if n > 1)
        if dupes:
            raise ValueError(f"source names must be unique; repeated: {', '.join(dupes)}")
        return value


_SECTIONS = tuple(k for k, f in Config.model_fields.items() if isinstance(f.annotation, type)
                  and issubclass(f.annotation, BaseModel))


class ConfigError(Exception):
    """Every problem found in a config file, each with its key path."""

    def __init__(self, path: str, problems: list[str], lines: list[int | None] | None = None):
        self.path = path
        self.problems = problems
        self.lines = lines or [None] * len(problems)
        """The line of the file each problem's key is written on (None: not known), beside `problems`."""
        super().__init__(f"{path}: " + "; ".join(problems))


def invalid_config_report(path: str | Path, problems: list[str], lines: list[int | None] | None = None) -> str:
    """What `check-config`, `run`, `oneshot` and `hub` print for a config they refuse: the file, then every problem
    on a line of its own with the line of the file its key is written on when known."""
    return "".join([f"{printable(str(path))}: invalid configuration\n",
                    *(f"  {problem}\n" for problem in numbered(problems, lines))])


def glob_problem(pattern: str) -> str | None:
    """Why a source glob can never match what the operator meant, or None when it is usable."""
    if not pattern.strip():
        return "empty pattern"
    if "\x00" in pattern:
        return "contains a NUL byte"
    if len(pattern) > MAX_SHOWN_PATH:  # (a warning per alias of it wrote it out whole: review 2026-12-07)
        return f"{len(pattern):,} characters: longer than any path this system opens ({MAX_SHOWN_PATH:,})"
    if not pattern.startswith("/"):
        return "must be an absolute path or ~/... (the daemon's working directory is not the log directory)"
    if pattern.endswith("/"):
        return "names a directory; add a file pattern such as acct-*.csv"
    depth = 0
    for ch in pattern:
        if ch == "[":
            depth += 1
        elif ch == "]" and depth:
            depth -= 1
    if depth:
        return "unclosed '[' in the pattern"
    if "**" in pattern:
        return "'**' is not supported (patterns are matched one directory level at a time)"
    return None


CONFIG_PIPE_TIMEOUT = PIPE_TIMEOUT
"""Longest wait for a piped config (`--config <(envsubst < tmpl)`, /dev/stdin) to be written to its end."""


def read_config_bytes(path: str | Path) -> bytes:
    """The bytes of a config file of at most MAX_CONFIG_BYTES (exporter.boundedfile: a regular file, or a pipe or
    character device read to its end, as container set-ups pipe configs in). ConfigError for anything else (OSError
    if unreadable)."""
    try:
        return read_bounded(path, MAX_CONFIG_BYTES, "the YAML config file", "a config file", CONFIG_PIPE_TIMEOUT)
    except FileProblem as exc:
        raise ConfigError(str(path), [str(exc)]) from None


_EMPTY = "the file is empty: a config is a YAML mapping of keys"
_NO_KEYS = "the file holds no keys (only comments or blank lines): a config is a YAML mapping of keys"


def _composed_and_built(text: str) -> tuple[Any, yaml.Node | None]:
    """What `yaml.load` builds, and the node tree it built it from (which keeps each key's line)."""
    loader = UniqueKeyLoader(text)
    try:
        root = loader.get_single_node()
        return (loader.construct_document(root) if root is not None else None), root
    finally:
        loader.dispose()


def read_config_document(path: str | Path, empty_ok: bool = False) -> tuple[dict[str, Any], KeyLines]:
    """The top-level mapping of a YAML config file (the daemon's, the hub's, a --web.config.file), ConfigError naming
    the line; and where each of its keys is written (for the problems found later). `empty_ok`: a file of no keys is
    an empty mapping (a web config file's defaults), not an error."""
    raw = read_config_bytes(path)
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(str(path), [utf8_line_problem(raw, exc)]) from None
    try:
        data, root = _composed_and_built(text)
    except yaml.YAMLError as exc:
        raise ConfigError(str(path), [yaml_problem(exc, text)]) from None
    except CONSTRUCTOR_ERRORS as exc:  # a constructor's (an impossible date, `!!timestamp x`), not a YAMLError
        raise ConfigError(str(path), [value_problem(exc)], [unreadable_line(text)]) from None
    except RecursionError:  # PyYAML's pure-Python composer recurses once per level of nesting
        raise ConfigError(str(path), [f"not valid YAML: {TOO_DEEP}"]) from None
    if data is None and empty_ok:
        return {}, KeyLines(None)
    if data is None:  # nothing but blanks, comments or `---` (or /dev/null)
        raise ConfigError(str(path), [_EMPTY if not text.strip() else _NO_KEYS])
    if not isinstance(data, dict):
        raise ConfigError(str(path), ["top level must be a mapping of keys"])
    broken = surrogate_paths(data)
    if broken:  # a label, a log line or the state database would fail to encode it, far from here
        raise ConfigError(str(path), [f"{where}: {SURROGATE_PROBLEM}" for where in broken])
    return data, KeyLines(root, text)


def load_config(path: str | Path, overrides: dict[str, Any] | None = None,
                web_config_file: Path | None = None) -> Config:
    """Read and validate a YAML config file; raise ConfigError listing every problem, with the line each problem's
    key is written on (`ConfigError.lines`; none with `overrides`). `web_config_file`: `--web.config.file`, the
    listener's TLS and users from node_exporter's web config format (exporter.webconfigfile; its own problems name
    it: `ConfigError.path`)."""
    data, key_lines = read_config_document(path)
    if overrides:  # the data is no longer the file's: no line is told
        data.update(overrides)
        key_lines = KeyLines(None)
    try:
        config = config_from_dict(data, source=str(path))
    except ConfigError as exc:
        if isinstance(exc.__cause__, ValidationError):
            exc.lines = validation_lines(exc.__cause__, key_lines)
        raise
    if web_config_file is None:
        return config
    from exporter.webconfigfile import with_web_config_file

    return with_web_config_file(config, web_config_file)


def validation_lines(exc: ValidationError, key_lines: KeyLines) -> list[int | None]:
    """The line of each of validation_problems' problems (one an error, in order), from the error's key path."""
    return [key_lines.line_of(err["loc"], err["type"] == "invalid_key") for err in exc.errors()]


def _short(value: Any) -> str:
    return short_repr(value)


_NOT_SCALARS = frozenset({"extra_forbidden", "model_type", "model_attributes_type", "dict_type", "list_type",
                          "tuple_type", "set_type"})
YAML_BOOL_HINT = " (YAML reads an unquoted yes, no, on, off, true or false as a boolean: quote the word)"
"""Said of a boolean where a config key wants something else: `log_level: off` is False to YAML."""


_SECRET_KEY = re.compile(r"password|passwd|secret|token|api_?key|(?:^|_)key(?:_|$)|basic_auth_users", re.IGNORECASE)
"""Keys naming a secret: pmta.password, pmta.api_key, web.basic_auth_users (every user's), and the `*_file` keys
that name a secret's file (pmta.password_file, pmta.api_key_file, correlator.hmac_key_file, web.tls_key_file, the
hub's password_file, bearer_token_file and cursor_key_file)."""
NUMBER_NOT_STRING = "a number, not a string: quote it in the YAML"


def is_secret_key(loc: tuple[Any, ...], given: Any = None) -> bool:
    """Whether an error at `loc` (pydantic's key path) must not show the value `given`. An absolute or `~` path given
    to a `*_file` key is shown, as the checks of the file itself show it (`... does not exist`): a path is not the
    secret, the file's content is. Any other value there may be the secret pasted into the wrong key (a password, a
    token, a PEM block, an unquoted number): not shown (a relative path's problem says why without it)."""
    named = [part for part in loc if isinstance(part, str) and _SECRET_KEY.search(part)]
    return bool(named) and not (_looks_like_a_path(given) and all(part.endswith("_file") for part in named))


MAX_SHOWN_PATH = 4096
"""Longest `*_file` value shown as a path (PATH_MAX)."""


def _looks_like_a_path(value: Any) -> bool:
    """An absolute or `~` path of one printable line without blanks: what no password, token or key looks like."""
    return isinstance(value, str) and value.startswith(("/", "~")) and len(value) <= MAX_SHOWN_PATH \
        and value.isprintable() and not any(c.isspace() for c in value)


def _kind(value: Any) -> str:
    """What a value is, without showing it."""
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    kinds = ((str, "a string"), (list, "a list"), (tuple, "a list"), (dict, "a mapping"), (type(None), "nothing"))
    return next((name for kind, name in kinds if isinstance(value, kind)), "a value of another kind")


def _unsaid(text: str, given: Any) -> str:
    """Our own message for a secret key's value, the value taken out (of a mapping such as basic_auth_users, its
    values: the user names are said); if any part of it is still there (a message that quotes a piece of it), only
    that the value is not usable."""
    said = "the value given" if isinstance(given, str) else _kind(given)
    values = list(given.values()) if isinstance(given, dict) else list(given) if isinstance(given, list) else [given]
    secrets = [str(v) for v in values if isinstance(v, str | int | float) and not isinstance(v, bool)]
    for shown in (repr(given), _short(given), *(v for v in secrets if len(v) >= 3)):  # not `.` in every sentence
        text = re.sub(rf"(?<![\w.]){re.escape(shown)}(?![\w])", lambda _m: said, text)
    if any(piece in text for v in secrets for piece in re.split(r"[\s/~]+", v) if len(piece) >= 3):
        return "not a usable value (not shown: this key may hold a secret)"
    return text


def describe_error(err: Any) -> str:
    """One pydantic error as an operator reads it: our own message, or pydantic's without its internals
    (`Value error, `, model class names), naming the value given (of a key that may hold a secret only what it
    is: a number, a list, ...), and why YAML made it a boolean or a number when the key wants something else."""
    kind, given = err["type"], err.get("input")
    secret = is_secret_key(tuple(err.get("loc", ())), given)
    shown = _kind(given) if secret else _short(given)
    if kind == "extra_forbidden":
        return "unknown key"
    if kind == "missing":
        return "required key missing"
    if kind == "string_type" and secret and isinstance(given, int | float) and not isinstance(given, bool):
        return NUMBER_NOT_STRING
    if kind == "value_error":
        error = err["ctx"]["error"]
        text = error.valueless if secret and isinstance(error, PathProblem) else str(error)
        text = _unsaid(text, given) if secret and not isinstance(error, PathProblem) else text
    elif kind in ("model_type", "model_attributes_type", "dict_type"):
        text = f"expected a section (a mapping of keys), got {shown}"
    elif kind == "literal_error":
        text = f"expected one of {err['ctx']['expected']}, got {shown}"
    elif ", got " in err["msg"]:  # pydantic's own words say what it got (`got a number with a fractional part`)
        text = err["msg"].replace("Input should be", "expected") + ("" if secret else f" ({shown})")
    else:
        text = f"{err['msg'].replace('Input should be', 'expected')}, got {shown}"
    if isinstance(given, bool) and kind not in _NOT_SCALARS:  # quoting the word makes no section or list
        return text + YAML_BOOL_HINT
    if kind == "string_type" and isinstance(given, int | float):
        return text + f' (YAML reads it as a number: quote it, e.g. "{":" if err["loc"][-1:] == ("listen",) else ""}' \
            f'{given}")'
    return text


def config_from_dict(data: dict[str, Any], source: str = "<config>") -> Config:
    """Validate a parsed config; raise ConfigError with one `key.path: problem` line per problem."""
    try:
        return Config.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(source, validation_problems(exc)) from exc
    except (ArithmeticError, TypeError) as exc:  # a check that raised what pydantic does not catch:
        raise ConfigError(source, [unchecked_problem(exc)]) from None  # one line, never a traceback


def unchecked_problem(exc: Exception) -> str:
    """A value a check could not take (a number too large for a float): one line, its key not known."""
    return f"a value could not be checked ({type(exc).__name__}: {exc}); is a number far too large?"


def validation_problems(exc: ValidationError) -> list[str]:
    """One `key.path: problem` line per error, each key's control characters escaped (a key `"a\\nb"` is one
    line, not two), each key up to its first `:` (`shown_user`: a basic-auth user pasted with its password, under
    `basic_auth_users` or, indented wrong, anywhere: what follows the `:` is never shown)."""
    return [f"{printable('.'.join(shown_user(str(p)) for p in err['loc'])) or '(top level)'}: {describe_error(err)}"
            for err in exc.errors()]


def printable(text: str) -> str:
    """`text` with its control characters (a newline, an escape sequence) shown escaped, as repr() shows them."""
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() or c == " " else repr(c)[1:-1] for c in text)
