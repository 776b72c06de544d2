"""The hub's configuration: its own listener, where the daemons are, and how to reach them.

Kept apart from the daemon's Config (the hub tails nothing) but with the same `listen` and `web`
keys, so a hub is secured exactly like a daemon. Unknown keys are rejected by name.
"""

from __future__ import annotations

import ipaddress
import re
import unicodedata
from pathlib import Path
from typing import Any, Literal
from urllib.parse import SplitResult, urlsplit, urlunsplit

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from exporter.config import (
    ChunkSize,
    ConfigError,
    ConfigPath,
    Duration,
    HttpUrl,
    Listener,
    WebConfig,
    check_listen,
    read_config_document,
    unchecked_problem,
    validation_lines,
    validation_problems,
)

HUB_API_CONCURRENCY = 16
MAX_ANSWER_SIZE = 32 * 1024**2
"""Default cap of one host's answer: a page of 1,000 recipients' timelines is a few MiB."""


class _Strict(BaseModel):
    # hide_input_in_errors: a ValidationError's own text shows no value (a target URL with a password in it)
    model_config = ConfigDict(extra="forbid", frozen=True, hide_input_in_errors=True)


CREDENTIALS_HINT = "give them in hub.auth (username and password_file, or bearer_token_file), not in the URL"


def without_credentials(url: str, mask: str = "***@") -> str:
    """`url` (or a bare host:port) with any user name and password replaced by `mask`: what may be shown or logged
    of it (mask "": the URL to ask, its credentials given apart). A URL that parses keeps an `@` of its query; one
    that does not, or has an `@` in its path (a password holding `/`, `?` or `#`, unencoded, ends the host part
    early), is masked from `://` to its last `@`: a password is never shown, whatever it holds."""
    parts = _parsed(url if "://" in url else "http://" + url)
    if parts is not None and parts.username is not None:
        host = parts.netloc.rpartition("@")[2]
        shown = urlunsplit(parts._replace(netloc=mask + host if mask else host))
        return shown if "://" in url else shown.removeprefix("http://")
    if parts is not None and "@" not in url.split("?", 1)[0].split("#", 1)[0]:
        return url
    head, sep, rest = url.partition("://")
    body = rest if sep else head
    before_query = body.split("?", 1)[0].split("#", 1)[0]
    at = before_query.rfind("@") if "@" in before_query else body.rfind("@")  # else `?`/`#` in the password
    if at < 0:
        return url
    return (head + sep if sep else "") + mask + body[at + 1:]


def _parsed(url: str) -> SplitResult | None:
    """urlsplit of `url` when it is an URL with a host and a valid port, else None."""
    try:
        parts = urlsplit(url)
        _ = parts.port  # ValueError: a port that is not one (the rest of a password cut at `?` or `/`)
    except ValueError:
        return None
    return parts if parts.hostname else None


HOST_LABEL = re.compile(r"[A-Za-z0-9_](?:[A-Za-z0-9_-]*[A-Za-z0-9_])?")
"""One label of a host name as IDNA gives it (`_` too: container and compose service names hold it)."""


def port_text(parts: SplitResult) -> str | None:
    """The port as written (None: none given); urlsplit's `port` raises on a bad one without saying which."""
    host_port = parts.netloc.rpartition("@")[2]
    if host_port.startswith("["):
        host_port = host_port.partition("]")[2]
    _, sep, port = host_port.rpartition(":")
    return port if sep else None


def is_port(port: str) -> bool:
    """A port as written that a socket takes (`99999` passes httpx and fails in connect(), `\uff19` isdigit())."""
    return port.isascii() and port.isdigit() and 1 <= int(port) <= 65535


def is_host(host: str, bracketed: bool) -> bool:
    """An IP address (an IPv6 one only in brackets), or a name whose IDNA labels are letters, digits, `-` and `_`."""
    if bracketed:
        try:
            return ipaddress.ip_address(host.partition("%")[0]).version == 6
        except ValueError:
            return False
    try:
        ascii_name = host.encode("idna").decode("ascii")
    except UnicodeError:
        return False
    return all(HOST_LABEL.fullmatch(label) for label in ascii_name.removesuffix(".").split("."))


def address_problem(parts: SplitResult) -> str | None:
    """Why no request can reach the host part of a parsed daemon URL (a port outside 1-65535, a host that is no host
    name or IP address), or None. httpx takes `h:99999`: the socket layer then raises OverflowError on every request,
    so static and file_sd targets are checked alike, when they are read."""
    port = port_text(parts)
    if port is not None and not is_port(port):
        return f"the port must be a number from 1 to 65535, got {port!r}"
    host = parts.hostname or ""
    if not is_host(host, bracketed=parts.netloc.rpartition("@")[2].startswith("[")):
        return f"{host!r} is not a host name or IP address"
    return None


def invisible_problem(text: str, offset: int = 0) -> str | None:
    """Why a target's host:port or URL cannot be a target: a character text answers and pages show escaped (a control
    or invisible format character: soft hyphen, zero-width space, joiners, word joiner, BOM; IDNA maps most of them to
    nothing, so the host resolves), named with its position from 1 (plus `offset`). A hub cursor names a host by its
    URL and refuses one that would not show as it is: every page after the first was a 400 for the whole fleet."""
    from correlator.render import safe  # (not at import: the config is read before the rest)

    at = next((i for i, c in enumerate(text) if safe(c) != c), None)
    if at is None:
        return None
    char = text[at]
    name = unicodedata.name(char, "a control character")
    return (f"character {at + 1 + offset} is U+{ord(char):04X} ({name}), an invisible character (pasted from a web "
            "page?): remove it")


def _kind(value: Any) -> str:
    """What a wrong value is, without echoing it (it may hold a password)."""
    kinds = {bool: "true/false", int: "a number", float: "a number", list: "a list", type(None): "nothing"}
    return kinds.get(type(value), type(value).__name__)


def credentials_problem(url: str) -> str | None:
    """A target URL is shown in every answer (`missing_hosts`) and put in cursors: it carries no password, and a
    daemon's base URL has no `@` anywhere (one is a password's rest)."""
    if "@" not in url:
        return None
    return f"{without_credentials(url)} carries a user name or password: {CREDENTIALS_HINT}"


def url_problem(url: str) -> str | None:
    """A daemon or Prometheus base URL: a `host:port` (as file_sd lists targets) is not one, nor another scheme; a
    port or host no request can reach is named as such (`http://h:0`, `http://h h:1` were accepted, every
    request then failing). Static targets are checked as the config is read (every item's problem listed, as one
    carrying credentials is); the Prometheus URL by the hub's preflight."""
    shown = without_credentials(url)
    http = url.partition("://")[0].lower() in ("http", "https")
    try:
        parts = urlsplit(url)
    except ValueError:  # brackets that hold no IPv6 address (its words may quote the password: not shown)
        parts = None
    if not http or parts is not None and not parts.hostname:
        return f"{shown!r} is not an http:// or https:// URL"
    if parts is None:
        return f"{shown!r}: its host part is not a host name or IP address"
    port = port_text(parts)
    if port is not None and not is_port(port) and "@" in url:
        # a password holding `/`, `?` or `#` ends the host part early: its start reads as the port
        return (f"{shown!r}: the port is not a number from 1 to 65535 (a user name or password holding "
                "'/', '?' or '#' must be percent-encoded, and is better in hub.auth)")
    problem = address_problem(parts)
    if problem is None and (parts.query or parts.fragment):  # the routes' paths would be appended after them
        problem = "a daemon's base URL has no query or fragment"
    problem = problem or invisible_problem(url)
    return f"{shown!r}: {problem}" if problem else None


class StaticTarget(_Strict):
    """A daemon: written as its base URL, or as a mapping {url, name}."""

    url: str = Field(description="Daemon base URL, e.g. http://pmta-1:9469.")
    name: str | None = Field(default=None, description="Host name shown in answers; default the URL's host:port.")
    @model_validator(mode="wrap")
    @classmethod
    def _url_or_mapping(cls, data: Any, handler: Any) -> StaticTarget:
        """One type for both forms, so an error names the item's key (`hub.targets.0.nam: unknown key`), not
        pydantic's union members (`hub.targets.0.str: ...` plus `hub.targets.0.StaticTarget.nam: ...`)."""
        if isinstance(data, str):  # its problem named `hub.targets.N`, a mapping's `hub.targets.N.url`
            if problem := credentials_problem(data) or url_problem(data):
                raise ValueError(problem)
            return handler({"url": data})  # type: ignore[no-any-return]
        if not isinstance(data, dict | StaticTarget):
            raise ValueError(f"expected a daemon URL or a mapping {{url, name}}, got {_kind(data)}")
        return handler(data)  # type: ignore[no-any-return]

    @field_validator("url")
    @classmethod
    def _usable_url(cls, value: str) -> str:
        if problem := credentials_problem(value) or url_problem(value):
            raise ValueError(problem)
        return value


class PrometheusSource(_Strict):
    url: str = Field(description="Prometheus base URL; the hub reads its /api/v1/targets.")
    job: str = Field(description="Scrape job whose active targets are the daemons.")
    scrape_pool: str | None = Field(default=None, description=(
        "Ask Prometheus (2.42+) for this scrape pool's active targets only (`scrapePool`, a scrape config's "
        "`job_name`), kept by `job` label: other jobs' targets then do not count against hub.max_answer_size. "
        "Default: every active target is read (the daemons may sit in several scrape pools, relabelled to one "
        "`job`). A Prometheus answering 400 to it is asked for every target from then on."))

    @field_validator("url")
    @classmethod
    def _credentials_in_the_host_part(cls, url: str) -> str:
        """Its credentials, if any, are sent as basic auth: they must be where a URL puts them. A password holding
        `/`, `?` or `#` unencoded ends the host part early: refused (masked), not asked of another host."""
        parts = _parsed(url)
        before_query = url.split("?", 1)[0].split("#", 1)[0]
        if "@" in before_query and (parts is None or parts.username is None):
            raise ValueError(f"{without_credentials(url)}: an `@` outside the host part; percent-encode the password "
                             "(`/` as %2F, `?` as %3F, `#` as %23)")
        return url


class AuthConfig(_Strict):
    username: str | None = Field(default=None, description="Basic auth user sent to the daemons.")
    password_file: ConfigPath | None = Field(default=None, description="File holding the basic auth password (its "
                                             "first line, up to a line feed; a UTF-8 byte order mark is dropped).")
    bearer_token_file: ConfigPath | None = Field(default=None, description="File holding a bearer token (instead).")

    @model_validator(mode="after")
    def _one_scheme(self) -> AuthConfig:
        if self.bearer_token_file and (self.username or self.password_file):
            raise ValueError("use either username/password_file or bearer_token_file, not both")
        if bool(self.username) != bool(self.password_file):
            raise ValueError("username and password_file go together")
        return self


class TlsClientConfig(_Strict):
    ca_file: ConfigPath | None = Field(default=None, description="CA bundle to verify the daemons' certificates.")
    cert_file: ConfigPath | None = Field(default=None, description="Client certificate (mutual TLS).")
    key_file: ConfigPath | None = Field(default=None, description="Key of cert_file.")
    insecure_skip_verify: bool = Field(default=False, description="Do not verify the daemons' certificates.")

    @model_validator(mode="after")
    def _key_with_cert(self) -> TlsClientConfig:
        if self.key_file is not None and self.cert_file is None:  # (cert_file alone may hold its key)
            raise ValueError("key_file is set but cert_file is not (the client certificate it is the key of)")
        return self


class HubSection(_Strict):
    targets: list[StaticTarget] = Field(
        default_factory=list, description="Daemon base URLs (strings, or mappings {url, name}); no credentials in them "
        "(hub.auth).")
    file_sd: list[ConfigPath] = Field(
        default_factory=list, description="Prometheus file_sd files (JSON or YAML); targets are host:port."
    )
    prometheus: PrometheusSource | None = Field(default=None, description="Ask a Prometheus for a job's targets.")
    scheme: Literal["http", "https"] = Field(default="http", description="Scheme for file_sd/Prometheus targets.")
    refresh_interval: Duration = Field(default=30.0, description="How often file_sd/Prometheus targets are re-read.")
    timeout: Duration = Field(default=2.0, gt=0, description="Per-host timeout of one request.")
    max_answer_size: ChunkSize = Field(
        default=MAX_ANSWER_SIZE, description="Largest answer read from one host, counted unzipped (at most 256MiB); "
        "a bigger one makes that host a missing host.")
    cursor_key_file: ConfigPath | None = Field(default=None, description=(
        "File holding a secret (any bytes, at least 16) that keys the fingerprint a cursor carries of its search (so "
        "no cursor gives back the recipient searched). Give every hub behind one address the same file: their "
        "cursors then stay valid across hubs and restarts. Default: a key drawn at each start (a restarted hub "
        "answers older cursors 400)."))
    auth: AuthConfig = Field(default_factory=AuthConfig)
    tls: TlsClientConfig = Field(default_factory=TlsClientConfig)

    @model_validator(mode="after")
    def _some_source(self) -> HubSection:
        if not (self.targets or self.file_sd or self.prometheus):
            raise ValueError("give at least one of targets, file_sd, prometheus")
        return self


class PagesConfig(_Strict):
    grafana_url: HttpUrl = Field(default="http://localhost:3000", description="Grafana base URL for drill-down links.")


class HubConfig(_Strict, Listener):
    """The whole `watchtower hub` configuration."""

    listen: str = Field(default="127.0.0.1:9470", description="host:port of the hub's listener.")
    hub: HubSection
    web: WebConfig = Field(
        default_factory=lambda: WebConfig(api_max_concurrency=HUB_API_CONCURRENCY),
        description="Listener settings as the daemon's `web`; api_max_concurrency defaults to 16 (fan-out waits "
        "on the network, not on a disk).",
    )
    pages: PagesConfig = Field(default_factory=PagesConfig)
    log_level: Literal["debug", "info", "warning", "error"] = Field(default="info", description="Log verbosity.")
    log_format: Literal["text", "json"] = Field(default="text", description="`text` lines or JSON lines.")

    @model_validator(mode="before")
    @classmethod
    def _empty_sections(cls, data: Any) -> Any:
        """A section left empty (`web:` with its keys commented out) is YAML null: its defaults, as on the daemon
        (exporter.config.Config._empty_sections); a bare `hub:` then names the source it needs."""
        if not isinstance(data, dict):
            return data
        empty = [k for k in _SECTIONS if k in data and data[k] is None]
        return {**data, **dict.fromkeys(empty, {})} if empty else data

    @field_validator("web", mode="before")
    @classmethod
    def _web_defaults(cls, value: Any) -> Any:
        if isinstance(value, dict):
            return {"api_max_concurrency": HUB_API_CONCURRENCY, **value}
        return value

    @field_validator("listen")
    @classmethod
    def _host_port(cls, value: str) -> str:
        return check_listen(value)


_SECTIONS = tuple(k for k, f in HubConfig.model_fields.items() if isinstance(f.annotation, type)
                  and issubclass(f.annotation, BaseModel))
"""hub, web, pages: the keys whose value is a mapping of keys."""


def load_hub_config(path: str | Path, web_config_file: Path | None = None) -> HubConfig:
    """Read and validate a hub YAML file as the daemon's is read (a regular file, one-line errors naming the key, and
    the line it is written on: `ConfigError.lines`); `web_config_file` as the daemon's (exporter.webconfigfile)."""
    data, key_lines = read_config_document(path)
    try:
        config = HubConfig.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(str(path), validation_problems(exc), validation_lines(exc, key_lines)) from exc
    except (ArithmeticError, TypeError) as exc:  # a check that raised what pydantic does not catch
        raise ConfigError(str(path), [unchecked_problem(exc)]) from None
    if web_config_file is None:
        return config
    from exporter.webconfigfile import with_web_config_file

    return with_web_config_file(config, web_config_file)
