"""A small async client for PMTA's HTTP management interface (/status, /queues, /vmtas, /domains).

Parsing is tolerant because most of the response shapes are undocumented (pmta-http-api.md §3, §5,
§7, §12): XML and JSON are first turned into the same nested dict/list tree, a repeated element may
come as one object or as a list, `paused` may be yes/no/true/false/0/1, `kb` is a float, and a
missing `<succ/>` (or a JSON status other than "success") is an error. The parser is chosen from the
format we asked for, never from Content-Type (old PMTA sends XML as text/html). Every failure is a
`PmtaApiError` whose `reason` is one of `API_ERROR_REASONS`, whatever the peer sends: bodies are
streamed against a size cap and decoded here a bounded step at a time (a huge or endless body, or a
decompression bomb, is refused once the cap is passed), a parser that gives up (deep nesting) or an XML DTD
(which PMTA never sends: refused before any entity is expanded) is a `parse` error, a redirect to another server is
`http_status`, and any transport failure (reset, truncated body, not HTTP at all) is `connect`. Every number read is
bounded to [0, MAX_NUMBER]: nothing downstream can overflow. The work of one parse is bounded too: an answer of more
than MAX_ELEMENTS elements is refused before it is parsed, and a listing keeps its first MAX_QUEUES queues.
"""

from __future__ import annotations

import asyncio
import functools
import ipaddress
import json
import logging
import math
import re
import ssl
import xml.etree.ElementTree as ET
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Literal
from urllib.parse import quote

import httpx

from exporter import __version__
from exporter.boundedfile import read_secret, secret_text
from exporter.config import PmtaApiConfig
from exporter.httpbody import ACCEPT_ENCODING, BodyProblem, read_capped
from exporter.redact import clip
from exporter.textrepair import may_need_repair, repair_tree
from exporter.tlstrust import default_trust

log = logging.getLogger("watchtower.pmta_api")

Reason = Literal["timeout", "connect", "http_status", "parse"]
API_ERROR_REASONS: tuple[Reason, ...] = ("timeout", "connect", "http_status", "parse")
MAX_BODY_BYTES = 16 * 1024 * 1024
"""Largest (decoded) response read. A bigger answer is a `parse` error, as is a smaller one of more than
MAX_ELEMENTS elements (16 MiB hold ~120,000 queues without events: the bytes alone do not bound a parse's work)."""
THREAD_PARSE_BYTES = 256 * 1024
"""Bodies larger than this are parsed off the event loop (`Offload`: the poller's own worker thread), XML fed in
FEED_BYTES pieces: one parse call holds the interpreter lock for its whole length (a 16 MiB queue list in one
`fromstring` stalled /metrics for ~1 s), pieces let the event loop in between."""
FEED_BYTES = 64 * 1024
MAX_ELEMENTS = 1_000_000
"""Most elements (XML: attributes too) or values (JSON) an answer may have; counted before parsing, from its bytes
(an upper bound: `<` that open no end tag, comment or declaration, and `="`; `[`, `{` and `,`, those in strings
too). A real listing is 50-65 bytes a count (a queue ~8 of them, ~50-60 with ten events whose texts hold commas):
MAX_BODY_BYTES of one stays under it (~5,000 queues with their events, ~120,000 without), and parses in ~1.5 s and
~150 MB at most. `<a/>` x 4 million (4 bytes a count) also fits MAX_BODY_BYTES and took 0.5 GB and 5-8 s, in a
thread no deadline can stop: past this it is a `parse` error (`TooManyElements`) and costs a count of its bytes.
250,000 refused real JSON listings of 4,500 queues with their events (regression review 2026-12-06)."""
MAX_QUEUES = 10_000
"""Queues read from one listing (PMTA lists the largest first; its default is 10): the others' recipients count as
unlisted (totalRcp less those read), as for any top-N listing; `QueueList.cut` says how many were left."""
LOG_CUT_FILTERS = 100
"""Queue filters remembered as warned about a listing past MAX_QUEUES (then DEBUG for every other)."""
Offload = Callable[[Callable[[], Any]], Awaitable[Any]]
"""Runs a parse off the event loop (`PmtaApiClient._page`); the poller's runs it on its own worker thread."""


class PmtaApiError(Exception):
    def __init__(self, reason: Reason, message: str) -> None:
        super().__init__(message)
        self.reason = reason


class TooManyElements(PmtaApiError):
    """An answer past MAX_ELEMENTS: refused unparsed (`_page` names the path it came from)."""

    def __init__(self, count: int) -> None:
        super().__init__("parse", f"more than {MAX_ELEMENTS:,} elements (up to {count:,}), more than any answer "
                                  "watchtower reads: refused unparsed (a listing holds http-default-max-items "
                                  "queues, 10 by default)")


class PmtaApiConfigError(PmtaApiError):
    """A `pmta.*` setting the client cannot use (a CA file that is not PEM, a key file that is not UTF-8 or is
    gone, a URL httpx refuses): the operator's to fix, not a bug, so never a traceback. The message starts with
    the key. Counted as `connect`: no request could be made."""

    def __init__(self, key: str, message: str) -> None:
        super().__init__("connect", f"pmta.{key}: {message}")
        self.key = key


def _why(exc: BaseException) -> str:
    """An OS or decoding error in a few words (`[Errno 2] No such file...` -> `No such file or directory`)."""
    if isinstance(exc, OSError) and exc.strerror and not isinstance(exc, ssl.SSLError):
        return exc.strerror
    return f"{type(exc).__name__}: {exc}"


@dataclass(frozen=True, slots=True)
class QueueInfo:
    name: str
    """`domain/vmta` as PMTA prints it."""
    rcp: int | None
    """None when PMTA gave no count (missing, `n/a`, negative, absurd): its VMTA's listing cannot be summed
    (`QueuePoller._snapshot` serves that VMTA no gauge this poll, as when its query fails; never a 0)."""
    kb: float
    conn: int
    paused: bool
    mode: str
    retry_time: str = ""

    @property
    def domain(self) -> str:
        return self.name.partition("/")[0]

    @property
    def vmta(self) -> str:
        return self.name.partition("/")[2]

    @property
    def backoff(self) -> bool:
        return self.mode.strip().lower() == "backoff"


@dataclass(frozen=True, slots=True)
class QueueList:
    queues: list[QueueInfo]
    total_rcp: int | None = None
    """`totalRcp` of the listing: recipients in every queue matching the request, not only those shown."""
    total_queues: int | None = None
    cut: int = 0
    """Queues listed past MAX_QUEUES, not read: their recipients are among the unlisted ones."""


@dataclass(frozen=True, slots=True)
class VmtaInfo:
    name: str
    rcp: int
    kb: float = 0.0
    conn: int = 0
    dom: int = 0


@dataclass(frozen=True, slots=True)
class DomainInfo:
    name: str
    rcp: int
    kb: float = 0.0
    conn: int = 0


@dataclass(frozen=True, slots=True)
class QueueTotals:
    """A /status queue type's totals; None where PMTA gave no number (missing, `n/a`, negative): no series, rather
    than a 0 the stall alert would read as an empty queue."""

    rcp: int | None
    dom: int | None
    kb: float | None


@dataclass(frozen=True, slots=True)
class StatusInfo:
    version: str = ""
    queue: dict[str, QueueTotals] = field(default_factory=dict)
    """Per delivery type (smtp, pipe, discard, file, alias, bounceProcessor, ...)."""
    conn_in: int | None = None
    conn_out: int | None = None
    spool_files: int | None = None
    state: str = ""

    @property
    def smtp_rcp(self) -> int | None:
        q = self.queue.get("smtp")
        return q.rcp if q is not None else None


# --- value coercion --------------------------------------------------------------------------------
MAX_NUMBER = 1e12
"""The largest count or amount read from PMTA (recipients, domains, connections, files, kb): a trillion recipients
or a petabyte of spool is more than any PMTA holds. Past it (a 400-digit `rcp`, `<kb>1e306</kb>`), or below 0, a
value is no number: bounded here, nothing downstream (sums, kb x 1024, ratios) can overflow or go negative."""


def to_int(value: Any, default: int = 0) -> int:
    """A count in [0, MAX_NUMBER]; anything else (`1e400`, `-5`, `nan`, a dict) is `default`."""
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, int):
        return value if 0 <= value <= MAX_NUMBER else default
    number = to_float(value, math.nan)
    return int(number) if math.isfinite(number) else default


def _amount(value: Any) -> float | None:
    """An amount PMTA gave, or None (missing, not a number, out of range): to_float's NaN default is no amount."""
    number = to_float(value, math.nan)
    return None if math.isnan(number) else number


def _count(value: Any) -> int | None:
    amount = _amount(value)
    return None if amount is None else int(amount)


def to_float(value: Any, default: float = 0.0) -> float:
    """A float in [0, MAX_NUMBER]; `inf`, `nan`, a negative or absurd number and unparsable text are `default` (a
    gauge must never be inf/NaN, and no sum of them may overflow)."""
    if isinstance(value, bool):
        return float(value)
    number: float
    if isinstance(value, int | float):
        try:
            number = float(value)
        except OverflowError:  # an int with hundreds of digits
            return default
    elif isinstance(value, str):
        try:
            number = float(value.strip().replace(",", ""))
        except ValueError:
            return default
    else:
        return default
    return number if 0 <= number <= MAX_NUMBER else default


def to_bool(value: Any) -> bool:
    """yes/no, true/false, 1/0, on/off, in any case; anything else is False."""
    if isinstance(value, bool):
        return value
    if isinstance(value, int | float):
        return value != 0
    if isinstance(value, str):
        return value.strip().lower() in ("yes", "y", "true", "1", "on", "paused")
    return False


def to_str(value: Any) -> str:
    if value is None or isinstance(value, dict | list):
        return ""
    return str(value).strip()


def as_list(value: Any) -> list[Any]:
    if value is None:
        return []
    return value if isinstance(value, list) else [value]


# --- envelopes -----------------------------------------------------------------------------------
def _element_tree(elem: ET.Element) -> Any:
    """An element's children as a dict (a repeated tag becomes a list); a leaf is its text."""
    children = list(elem)
    if not children:
        return (elem.text or "").strip()
    out: dict[str, Any] = {}
    for child in children:
        value = _element_tree(child)
        if child.tag in out:
            prev = out[child.tag]
            if isinstance(prev, _Repeated):
                prev.append(value)
            else:
                out[child.tag] = _Repeated([prev, value])
        else:
            out[child.tag] = value
    return {k: list(v) if isinstance(v, _Repeated) else v for k, v in out.items()}


class _Repeated(list):  # type: ignore[type-arg]
    """Marks lists built from repeated XML elements (as opposed to a leaf that happens to be a list)."""


def parse_envelope(body: bytes, fmt: str) -> Any:
    """The `data` part of a response, as nested dicts/lists/strings; PmtaApiError("parse") otherwise (TooManyElements
    past MAX_ELEMENTS, before any parsing)."""
    count = _json_values(body) if fmt == "json" else _xml_elements(body)
    if count > MAX_ELEMENTS:
        raise TooManyElements(count)
    try:
        return _json_envelope(body) if fmt == "json" else _xml_envelope(body)
    except RecursionError:  # PMTA's answers are a few levels deep: this one is not an answer, and not our bug
        raise PmtaApiError("parse", f"{fmt.upper()} nested deeper than Python's recursion limit") from None


def _xml_elements(body: bytes) -> int:
    """At least the number of elements and attributes of an XML body: an element opens with a `<` that starts no end
    tag (`</`), comment, CDATA or declaration (`<!`) nor processing instruction (`<?`); an attribute holds `="` or
    `='` (one start tag of 1.4 million attributes parsed ~10 s, counted as one element). A count of bytes: no
    parse, no memory."""
    elements = body.count(b"<") - body.count(b"</") - body.count(b"<!") - body.count(b"<?")
    return elements + body.count(b'="') + body.count(b"='")


def _json_values(body: bytes) -> int:
    """At least the number of values of a JSON body: past the first, a value opens an array or object, or follows a
    `,` (what strings hold is counted too: an upper bound)."""
    return 1 + body.count(b"[") + body.count(b"{") + body.count(b",")


_NOT_IN_XML = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f]")
"""Control characters XML 1.0 forbids even as references."""


def _lenient(body: bytes) -> str:
    """The body with what strict parsers refuse made harmless: bytes that are not UTF-8 replaced (U+FFFD) and
    control characters dropped. PMTA copies remote servers' replies into event texts as they came."""
    return _NOT_IN_XML.sub("", body.decode("utf-8", "replace"))


class _NoDtd(ET.TreeBuilder):
    """A tree builder that refuses a DTD at its first bytes: expat calls `doctype` when `<!DOCTYPE` opens, before it
    reads one entity declaration. PMTA never sends a DTD; an internal entity referenced a few million times stays
    under expat's amplification limit yet expands 8 MiB into gigabytes, in a parse no deadline can cancel."""

    def doctype(self, name: str, pubid: str | None, system: str | None) -> None:
        raise PmtaApiError("parse", f"a DTD (<!DOCTYPE {name[:40]} ...>), which PMTA never sends: refused unexpanded")


def _xml_root(body: bytes | str) -> ET.Element:
    """The parsed body, fed in FEED_BYTES pieces (the lock is released between two pieces); PmtaApiError("parse") on a
    DTD. Without one, the work and memory are linear in the body, itself capped at MAX_BODY_BYTES."""
    parser = ET.XMLParser(target=_NoDtd())
    for start in range(0, len(body), FEED_BYTES):
        parser.feed(body[start : start + FEED_BYTES])
    return parser.close()


def _head(body: bytes) -> str:
    """The first characters of an answer quoted in an error, cut where no address loses its `@` (exporter/redact.py:
    the log handler redacts the line later, and a local part without its `@` would pass)."""
    return repr(clip(body[:4096].decode("utf-8", "replace"), 60))


def _xml_envelope(body: bytes) -> Any:
    try:
        root = _xml_root(body)
    except ET.ParseError as exc:
        try:  # a bad byte or control character in one text: only that text pays (tried only after a failure)
            root = _xml_root(_lenient(body))
        except ET.ParseError:
            raise PmtaApiError("parse", f"not XML: {exc} (starts {_head(body)})") from exc
    if root.tag != "rsp":
        raise PmtaApiError("parse", f"unexpected XML root <{root.tag}>, expected <rsp>")
    if root.find("succ") is None:
        detail = clip(" ".join(t.strip() for t in root.itertext() if t.strip()), 200)
        raise PmtaApiError("parse", f"PMTA did not report success (no <succ/>): {detail or 'no detail'}")
    data = root.find("data")
    return _element_tree(data) if data is not None else {}


def _json_envelope(body: bytes) -> Any:
    try:
        obj = json.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        try:  # as for XML: a bad byte or a raw control character in one string costs that string
            obj = json.loads(body.decode("utf-8", "replace"), strict=False)
        except ValueError:
            raise PmtaApiError("parse", f"not JSON: {exc} (starts {_head(body)})") from exc
    if not isinstance(obj, dict):
        raise PmtaApiError("parse", "JSON response is not an object")
    if may_need_repair(body):  # an escaped lone surrogate or NUL: no label can carry it (textrepair)
        obj = repair_tree(obj)
    status = obj.get("status", "success" if "data" in obj else None)
    if not isinstance(status, str) or status.lower() != "success" or "data" not in obj:
        message = clip(to_str(obj.get("message")) or json.dumps(obj.get("errors", "")), 200)
        raise PmtaApiError("parse", f"PMTA did not report success (status {status!r}): {message or 'no detail'}")
    return obj["data"]


def find_items(data: Any, key: str) -> list[dict[str, Any]]:
    """The repeated `key` elements of a listing: under `key` or `key`+s (object or list), one level
    down, or failing that the first list of objects that have a `name`."""
    return _find_listing(data, key)[0]


def _find_listing(data: Any, key: str) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """`find_items`' items, and the object they were found in: the listing's own fields (totalRcp, title) are next
    to its items, straight under `data` or one level down (pmta-http-api.md §5.2 leaves it open)."""
    if isinstance(data, list):
        return [x for x in data if isinstance(x, dict)], {}
    if not isinstance(data, dict):
        return [], {}
    for k in (key, key + "s"):
        if k in data:
            inner = data[k]
            if isinstance(inner, dict) and "name" not in inner and (key in inner or key + "s" in inner):
                return _find_listing(inner, key)
            return [x for x in as_list(inner) if isinstance(x, dict)], data
    for value in data.values():
        if isinstance(value, list) and value and all(isinstance(x, dict) and "name" in x for x in value):
            return value, data
    if "name" in data and "rcp" in data:
        return [data], {}
    return [], data


def _list_field(data: Any, holder: dict[str, Any], key: str, name: str) -> int | None:
    """A list-level count (`totalRcp`) next to the items, else straight under `data`, else in an item-less wrapper
    (`data.queues` of an empty listing); None when none is a count (0 would say the listing is whole)."""
    places = [holder, data]
    if isinstance(data, dict):
        places += [data.get(key + "s"), data.get(key)]
    for place in places:
        if isinstance(place, dict) and name in place:
            return _count(place[name])
    return None


# --- pages ---------------------------------------------------------------------------------------
def parse_status(body: bytes, fmt: str) -> StatusInfo:
    data = parse_envelope(body, fmt)
    if not isinstance(data, dict) or not isinstance(data.get("status"), dict):
        raise PmtaApiError("parse", "/status without a <status> element")
    st = data["status"]
    mta = data.get("mta") if isinstance(data.get("mta"), dict) else {}
    product = mta.get("product") if isinstance(mta.get("product"), dict) else {}
    queue = {}
    for qtype, totals in (st.get("queue") or {}).items() if isinstance(st.get("queue"), dict) else ():
        if isinstance(totals, dict):
            queue[qtype] = QueueTotals(_count(totals.get("rcp")), _count(totals.get("dom")), _amount(totals.get("kb")))
    conn = st.get("conn") if isinstance(st.get("conn"), dict) else {}
    spool = st.get("spool") if isinstance(st.get("spool"), dict) else {}
    files = spool.get("files") if isinstance(spool.get("files"), dict) else {}

    def cur(direction: str) -> int | None:
        c = conn.get(direction)
        return _count(c.get("cur")) if isinstance(c, dict) else None  # no number: no series, never a 0

    return StatusInfo(
        version=to_str(product.get("version")),
        queue=queue,
        conn_in=cur("smtpIn"),
        conn_out=cur("smtpOut"),
        spool_files=_count(files.get("inUse")),
        state=to_str(st.get("status")),
    )


def parse_queues(body: bytes, fmt: str) -> QueueList:
    """A queue listing: its first MAX_QUEUES queues (`cut`: how many more it had) and its totals, read next to the
    queues or straight under `data` (either placement, XML or JSON)."""
    data = parse_envelope(body, fmt)
    items, holder = _find_listing(data, "queue")
    queues = []
    cut = 0
    for item in items:
        name = to_str(item.get("name"))
        if not name:
            continue
        if len(queues) >= MAX_QUEUES:
            cut += 1
            continue
        queues.append(QueueInfo(name=name, rcp=_count(item.get("rcp")), kb=to_float(item.get("kb")),
                                conn=to_int(item.get("conn")), paused=to_bool(item.get("paused")),
                                mode=to_str(item.get("mode")) or "normal", retry_time=to_str(item.get("retryTime"))))
    return QueueList(queues, _list_field(data, holder, "queue", "totalRcp"),
                     _list_field(data, holder, "queue", "totalQueuesWithRcp"), cut)


def parse_vmtas(body: bytes, fmt: str) -> list[VmtaInfo]:
    return [VmtaInfo(name=to_str(v.get("name")), rcp=to_int(v.get("rcp")), kb=to_float(v.get("kb")),
                     conn=to_int(v.get("conn")), dom=to_int(v.get("dom")))
            for v in find_items(parse_envelope(body, fmt), "vmta") if to_str(v.get("name"))]


def parse_domains(body: bytes, fmt: str) -> list[DomainInfo]:
    return [DomainInfo(name=to_str(d.get("name")), rcp=to_int(d.get("rcp")), kb=to_float(d.get("kb")),
                       conn=to_int(d.get("conn")))
            for d in find_items(parse_envelope(body, fmt), "domain") if to_str(d.get("name"))]


# --- HTTP ----------------------------------------------------------------------------------------
def _verify(config: PmtaApiConfig) -> bool | ssl.SSLContext:
    """pmta.ca_file's CAs, else the default ones (SSL_CERT_FILE / SSL_CERT_DIR still count: exporter/tlstrust.py), or
    no verification (verify_tls false)."""
    if config.ca_file is not None:
        try:  # ssl.SSLError (not PEM) is an OSError too
            return ssl.create_default_context(cafile=str(config.ca_file))
        except (OSError, ValueError) as exc:
            raise PmtaApiConfigError("ca_file", f"{config.ca_file} is not a usable CA bundle: {_why(exc)}") from exc
    if not config.verify_tls:
        return False
    try:  # an http:// URL too: PMTA 5 redirects it to https by default, and that leg trusts what the host trusts
        return default_trust()
    except (OSError, ValueError) as exc:  # an SSL_CERT_FILE that is no CA bundle
        if not str(config.url or "").lower().startswith("https:"):
            return True  # plain http: a stale SSL_CERT_FILE (a conda environment's) must not stop its polls
        raise PmtaApiConfigError("verify_tls", f"the CA certificates SSL_CERT_FILE or SSL_CERT_DIR names are not "
                                 f"usable: {_why(exc)}") from exc


def read_api_key(config: PmtaApiConfig) -> str | None:
    if config.api_key:
        return _header_safe(config.api_key, "api_key")
    if config.api_key_file is not None:
        try:  # a regular file of a few KiB, as at start: one swapped for /dev/zero or a FIFO never eats or hangs a poll
            key = secret_text(read_secret(config.api_key_file)).strip()
        except (OSError, UnicodeDecodeError) as exc:
            raise PmtaApiConfigError("api_key_file", f"cannot read api_key_file {config.api_key_file}: "
                                                     f"{_why(exc)}") from exc
        if not key:  # emptied since the start (checked then): no poll goes out without the key it was set up with
            raise PmtaApiConfigError("api_key_file", f"api_key_file {config.api_key_file} is empty")
        return _header_safe(key, "api_key_file")
    return None


def is_loopback_host(host: str) -> bool:
    """`localhost` or a loopback address (no name lookup: a secret's way is judged by what the URL says)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _header_safe(key: str, where: str) -> str:
    """An HTTP header carries visible ASCII only (PMTA's keys are letters, digits and `_`): say which setting holds
    the character, and where, without printing the secret."""
    for pos, char in enumerate(key, start=1):
        if not "!" <= char <= "~":
            raise PmtaApiConfigError(where, f"the key has a character an HTTP header cannot carry at position {pos} "
                                            "(PMTA's API keys are letters, digits and _)")
    return key


def _password(config: PmtaApiConfig) -> str:
    try:
        password = config.resolved_password() or ""
    except (OSError, UnicodeDecodeError) as exc:
        raise PmtaApiConfigError("password_file", f"cannot read password_file {config.password_file}: "
                                                  f"{_why(exc)}") from exc
    if config.password_file is not None and not password.strip():  # emptied since the start: no request goes out
        # with an empty password (the review's capture server got `mon:`)
        raise PmtaApiConfigError("password_file", f"password_file {config.password_file} holds no password on its "
                                                  "first line")
    return password


def _origin(url: httpx.URL) -> str:
    """`scheme://host[:port]` of a URL: no credentials, path or query (safe to log)."""
    host = f"[{url.host}]" if ":" in url.host else url.host
    return f"{url.scheme}://{host}" + (f":{url.port}" if url.port is not None else "")


class PmtaApiClient:
    """`async with PmtaApiClient(config) as api: await api.status()`; one pooled httpx client."""

    def __init__(self, config: PmtaApiConfig, transport: httpx.AsyncBaseTransport | None = None) -> None:
        if not config.url:
            raise ValueError("pmta.url is not set")
        self.config = config
        self.format = config.format
        self.max_body = MAX_BODY_BYTES
        self._cut_logged: set[str | None] = set()
        """The queue filters whose listing passed MAX_QUEUES, already warned about."""
        headers = {"User-Agent": f"pmta-watchtower/{__version__}", "Accept-Encoding": ACCEPT_ENCODING}
        key = read_api_key(config)
        if key:
            headers["X-API-Key"] = key
        auth = httpx.BasicAuth(config.username, _password(config)) if config.username else None
        verify = _verify(config)
        try:
            self._client = httpx.AsyncClient(
                base_url=config.url.rstrip("/"), headers=headers, auth=auth, timeout=httpx.Timeout(config.timeout),
                verify=verify, follow_redirects=True, transport=transport,
                trust_env=False,  # PMTA's API is next to the daemon: never through an HTTP_PROXY of the host
                limits=httpx.Limits(max_connections=8, max_keepalive_connections=4),
                event_hooks={"request": [self._key_stays_home], "response": [self._redirect_stays_home]},
            )
            base = self._client.base_url
            self._home = (base.scheme, base.host, base.port)
            if (key or auth) and base.scheme == "http" and not is_loopback_host(base.host):
                log.warning("pmta.url %s is plain http: the %s crosses the network in clear text on every poll "
                            "(PMTA 5 serves https)", self._client.base_url, "API key" if key else "password")
        except (httpx.InvalidURL, ValueError, TypeError) as exc:  # a URL httpx cannot parse (`http://[::1`)
            raise PmtaApiConfigError("url", f"{config.url!r} is not a usable URL: {_why(exc)}") from exc

    def refresh_secrets(self) -> None:
        """Read `api_key_file` and `password_file` again (each poll): a rotated secret is used at the next poll,
        not after a restart. Raises PmtaApiConfigError when one cannot be read."""
        key = read_api_key(self.config)
        if key:
            self._client.headers["X-API-Key"] = key
        else:
            self._client.headers.pop("X-API-Key", None)
        if self.config.username:
            self._client.auth = httpx.BasicAuth(self.config.username, _password(self.config))

    def _is_home(self, url: httpx.URL) -> bool:
        """pmta.url's origin (scheme, host and port), or https on its host: PMTA 5 redirects http there by default."""
        scheme, host, port = self._home
        return (url.scheme, url.host, url.port) == (scheme, host, port) or \
            (url.host == host and scheme == "http" and url.scheme == "https")

    async def _key_stays_home(self, request: httpx.Request) -> None:
        """The X-API-Key grants admin: it goes home only (`_is_home`). httpx strips Authorization on a redirect to
        another origin, not a custom header. (`_redirect_stays_home` refuses those redirects anyway.)"""
        if not self._is_home(request.url):
            request.headers.pop("X-API-Key", None)

    async def _redirect_stays_home(self, response: httpx.Response) -> None:
        """A redirect is followed home only (`_is_home`): another server's answer must not be served as PMTA's. The
        message names the target's origin, never its user:password or path."""
        if not response.has_redirect_location:
            return
        target = response.request.url.join(response.headers["location"])
        if not self._is_home(target):
            raise PmtaApiError("http_status", f"GET {response.request.url.path}: HTTP {response.status_code} redirects "
                                              f"to another server, {_origin(target)}: not followed (pmta.url must "
                                              "name PMTA itself)")

    async def get(self, path: str, queue: str | None = None) -> bytes:
        """Raw body of `path?format=...` (`queue` is sent unescaped: `*` and `/` are legal in a query).

        `pmta.timeout` bounds the whole exchange, body included (httpx's own timeouts are per read, so
        a body trickled one byte at a time would never trip them)."""
        url = f"{path}?format={self.format}"
        if queue is not None:
            url += "&queue=" + quote(queue, safe="*/@.-_{}")
        try:
            async with asyncio.timeout(self.config.timeout or None):
                return await self._fetch(path, url)
        except PmtaApiError:
            raise
        except (httpx.TimeoutException, TimeoutError) as exc:
            raise PmtaApiError("timeout", f"GET {path}: no answer within {self.config.timeout:g}s") from exc
        except httpx.DecodingError as exc:
            raise PmtaApiError("parse", f"GET {path}: undecodable body: {exc}") from exc
        except Exception as exc:  # httpx.HTTPError, InvalidURL, ssl/OS errors: the exchange failed
            raise PmtaApiError("connect", f"GET {path}: {type(exc).__name__}: {exc}") from exc

    async def _fetch(self, path: str, url: str) -> bytes:
        async with self._client.stream("GET", url) as resp:
            if resp.status_code != 200:  # the body of an error page is never read
                hint = " (access refused: allow this host with http-access ... monitor, or set an api_key)" \
                    if resp.status_code == 403 else ""
                raise PmtaApiError("http_status", f"GET {path}: HTTP {resp.status_code}{hint}")
            declared = resp.headers.get("content-length", "")
            if declared.isdigit() and int(declared) > self.max_body:
                raise PmtaApiError("parse", f"GET {path}: response announces {declared} bytes, "
                                            f"more than the {self.max_body}-byte cap")
            try:
                return bytes(await read_capped(resp, self.max_body, setting="the cap on a PMTA answer"))
            except BodyProblem as exc:
                raise PmtaApiError("parse", f"GET {path}: {exc}") from None

    async def _page(self, path: str, parse: Any, queue: str | None = None, offload: Offload | None = None) -> Any:
        """`path`'s answer, parsed: past THREAD_PARSE_BYTES by `offload` (default: asyncio's thread pool; the poller
        passes its own worker, so /metrics never waits behind a parse)."""
        body = await self.get(path, queue)
        try:
            if len(body) > THREAD_PARSE_BYTES:
                return await (offload or asyncio.to_thread)(functools.partial(parse, body, self.format))
            return parse(body, self.format)
        except TooManyElements as exc:
            raise PmtaApiError("parse", f"GET {path}: {exc}") from None
        except PmtaApiError:
            raise
        except Exception as exc:  # RecursionError on deep nesting, MemoryError, a shape we did not foresee
            raise PmtaApiError("parse", f"GET {path}: unusable {self.format.upper()}: "
                                        f"{type(exc).__name__}: {clip(str(exc), 200)}") from exc

    async def status(self, offload: Offload | None = None) -> StatusInfo:
        return await self._page("/status", parse_status, offload=offload)  # type: ignore[no-any-return]

    async def queues(self, queue: str | None = None, offload: Offload | None = None) -> QueueList:
        listing: QueueList = await self._page("/queues", parse_queues, queue, offload)
        if listing.cut:
            self._log_cut(queue, listing)
        return listing

    def _log_cut(self, queue: str | None, listing: QueueList) -> None:
        """A listing past MAX_QUEUES: a warning the first time for its filter (of the first LOG_CUT_FILTERS), then
        DEBUG (a poll every few seconds would repeat it)."""
        where = "GET /queues" + ("" if queue is None else f" (queue={clip(queue, 80)})")
        first = queue not in self._cut_logged and len(self._cut_logged) < LOG_CUT_FILTERS
        if first:
            self._cut_logged.add(queue)
        log.log(logging.WARNING if first else logging.DEBUG,
                "%s: %d queues listed, only the first %d are read (MAX_QUEUES); the recipients of the other %d "
                "count as unlisted", where, len(listing.queues) + listing.cut, len(listing.queues), listing.cut)

    async def vmtas(self, offload: Offload | None = None) -> list[VmtaInfo]:
        return await self._page("/vmtas", parse_vmtas, offload=offload)  # type: ignore[no-any-return]

    async def domains(self, offload: Offload | None = None) -> list[DomainInfo]:
        return await self._page("/domains", parse_domains, offload=offload)  # type: ignore[no-any-return]

    async def aclose(self) -> None:
        await self._client.aclose()

    async def __aenter__(self) -> PmtaApiClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()
