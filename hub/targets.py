"""Which daemons the hub asks: a static list, Prometheus file_sd files, a Prometheus job's targets.

Dynamic sources are re-read at most every `refresh_interval`, lazily on a request; when a source
cannot be read the last good list stays in use (and the problem is logged once per change), so a
Prometheus restart never empties the hub.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit, urlunsplit

import httpx
import yaml

from exporter.boundedfile import PIPE_TIMEOUT, read_bounded
from exporter.config import TOO_DEEP
from exporter.httpbody import ACCEPT_ENCODING, BodyProblem, read_capped
from exporter.textrepair import SURROGATE_PROBLEM, first_surrogate_path, short_repr
from exporter.tlstrust import default_trust
from exporter.yamlproblem import utf8_line_problem
from hub.config import (
    CREDENTIALS_HINT,
    HubSection,
    PrometheusSource,
    address_problem,
    invisible_problem,
    without_credentials,
)
from hub.threads import off_loop

log = logging.getLogger(__name__)

MAX_REMEMBERED = 10_000
"""Targets whose names are kept after they leave the targets (to name them in missing_hosts)."""
MAX_FILE_SD_BYTES = 4 * 1024**2
"""Largest file_sd file read: 10,000 targets take well under 1 MiB; /dev/zero named by mistake stops here."""
FILE_SD_GIVE = "a Prometheus file_sd file (JSON or YAML)"
MAX_FILE_SD_TARGETS = 50_000
"""Most target entries one file_sd file may list (the same host:port twice counts twice): 4 MiB of short entries
held some 250,000, each a Target, before the targets are deduplicated."""
ALIAS_REFUSED = ("a YAML alias (*{anchor}): file_sd files are read without aliases (each is a copy of what it names: "
                 "a few KB became a million targets); write the targets out")


class _AliasInFile(ValueError):
    """A YAML alias met while composing a file_sd file: `line` (from 1) and its anchor's name."""

    def __init__(self, line: int, anchor: str) -> None:
        super().__init__(f"line {line}: {ALIAS_REFUSED.format(anchor=anchor)}")


class _NoAliasLoader(yaml.SafeLoader):
    """PyYAML's safe loader, refusing an alias when it meets one (before anything is copied): a 36 KB file of one
    anchored list of 1,000 targets aliased 1,000 times expanded to 1,001,000 targets."""

    def compose_node(self, parent: Any, index: Any) -> Any:
        if self.check_event(yaml.AliasEvent):
            event = self.peek_event()
            anchor = event.anchor if len(event.anchor) <= 40 else event.anchor[:37] + "..."  # (letters, digits, -, _)
            raise _AliasInFile(event.start_mark.line + 1, anchor)
        return super().compose_node(parent, index)


@dataclass(frozen=True, order=True)
class Target:
    name: str
    url: str


def _name_of(url: str) -> str:
    """host:port of a target URL (the URL itself when it has none, or is no URL)."""
    try:
        netloc = urlsplit(url).netloc
    except ValueError:
        return url
    return netloc.rpartition("@")[2] or url


def default_target(url: str) -> Target:
    """A target known by its URL only: named by its host:port."""
    return Target(_name_of(url), url)


def _retrieved(task: asyncio.Future[None]) -> None:
    """Its error read (each waiting request raises it too): one whose first caller was cancelled is not also logged
    as 'never retrieved'."""
    if not task.cancelled():
        task.exception()


def canonical_url(url: str) -> str:
    """One spelling of a daemon's base URL: scheme and host in lower case, the port as a number (`:09469` is
    `:9469`), no trailing `/` or empty `?`. Targets are told apart by URL: each spelling of one daemon was a host
    of its own, asked once per spelling, its items listed as many times. (A query or fragment is refused by the
    config; a URL that does not parse is left for its check to name.)"""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        return url.rstrip("/")
    host = parts.hostname
    if not host or "@" in parts.netloc:
        return url.rstrip("/")
    host = f"[{host}]" if ":" in host else host
    netloc = host if port is None else f"{host}:{port}"
    return urlunsplit((parts.scheme.lower(), netloc, parts.path.rstrip("/"), parts.query, parts.fragment))


def static_targets(section: HubSection) -> list[Target]:
    """hub.targets, one per daemon (the first of several spellings of its URL)."""
    out: dict[str, Target] = {}
    for t in section.targets:  # (no credentials in them: the config refuses those)
        url = canonical_url(t.url)
        if url in out:
            log.warning("hub.targets: %s is %s again (the daemon is asked once, as %r)", t.url, url, out[url].name)
            continue
        out[url] = Target(t.name or _name_of(url), url)
    return list(out.values())


def read_file_sd(path: Path, scheme: str, pipe_timeout: float = PIPE_TIMEOUT) -> list[Target]:
    """Targets of one file_sd file: `[{"targets": ["host:port"], "labels": {...}}]` in JSON or YAML. Read bounded
    (exporter.boundedfile: a FIFO nobody writes to, /dev/zero); ValueError naming the file, and the group and target
    that no request could reach (checked as hub.targets are: one such target made every route a 500)."""
    raw = read_bounded(path, MAX_FILE_SD_BYTES, FILE_SD_GIVE, "a file_sd target list", pipe_timeout)
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ValueError(f"{path}: {utf8_line_problem(raw, exc)}") from None
    try:
        data: Any = json.loads(text) if path.suffix == ".json" else yaml.load(text, Loader=_NoAliasLoader)  # noqa: S506
    except RecursionError:  # json and PyYAML's composer recurse once per level of nesting
        raise ValueError(f"{path}: {TOO_DEEP}") from None
    except _AliasInFile as exc:
        raise ValueError(f"{path}: {exc}") from None
    if not isinstance(data, list):
        raise ValueError(f"{path}: expected a list of target groups")
    broken = first_surrogate_path(data)  # (the first only: a path per hit of a 4 MiB file nested deep was GBs)
    if broken is not None:  # a target's name is shown in every answer: it must encode
        raise ValueError(f"{path}: {broken}: {SURROGATE_PROBLEM}")
    out: list[Target] = []
    checked: dict[str, Target] = {}  # each distinct host:port checked once
    for i, group in enumerate(data):
        if not isinstance(group, dict) or not isinstance(group.get("targets"), list):
            raise ValueError(f"{path}: group {i}: expected a mapping with a `targets` list")
        if len(out) + len(group["targets"]) > MAX_FILE_SD_TARGETS:
            raise ValueError(f"{path}: group {i}: more than {MAX_FILE_SD_TARGETS:,} target entries in one file_sd "
                             "file; split the targets over several files")
        for hostport in group["targets"]:
            if isinstance(hostport, str) and hostport in checked:
                out.append(checked[hostport])
                continue
            if not isinstance(hostport, str):  # a number or an aliased list: named, not written out whole
                raise ValueError(f"{path}: group {i}: target {short_repr(hostport)} is not a host:port string")
            if "@" in hostport:  # its URL would be shown in answers and logged, password included
                raise ValueError(f"{path}: group {i}: target {without_credentials(hostport)} carries a "
                                 f"user name or password: {CREDENTIALS_HINT}")
            if problem := _hostport_problem(hostport, scheme):
                raise ValueError(f"{path}: group {i}: target {short_repr(hostport)}{problem}")
            checked[hostport] = Target(hostport, canonical_url(f"{scheme}://{hostport}"))
            out.append(checked[hostport])
    return out


def _hostport_problem(hostport: str, scheme: str) -> str | None:
    """Why a file_sd target is no `host[:port]` a request can reach (the rest of its line), or None."""
    try:
        parts = urlsplit(f"{scheme}://{hostport}")
    except ValueError:  # brackets that hold no IPv6 address
        return ": its host part is not a host name or IP address"
    if parts.netloc != hostport or not parts.hostname:
        return " is not a host:port (no scheme, path or query: hub.scheme gives the scheme)"
    problem = address_problem(parts) or invisible_problem(hostport)
    return f": {problem}" if problem else None


def parse_prometheus_targets(body: Any, job: str, scheme: str = "http", skipped: list[str] | None = None,
                             ) -> list[Target]:
    """Active targets of `job` from a Prometheus /api/v1/targets answer, named by their instance label, as
    `scheme://host:port` (hub.scheme, as file_sd's: the scrape URL's own scheme sent hub.auth's credential in clear
    text to a target Prometheus scrapes over http under `scheme: https`); ValueError naming the first place the
    answer is not that shape (a proxy's page, another API). A target whose instance label or scrape URL holds a lone
    surrogate is left out (its name is in every answer, which could not be encoded: every route was a 500), and
    said in `skipped` (logged when None)."""
    out = []
    for i, t in enumerate(_active_targets(body)):
        where = f"data.activeTargets.{i}"
        labels = _shaped(_shaped(t, dict, where).get("labels", {}), dict, where + ".labels")
        for name in ("job", "instance"):
            if labels.get(name) is not None:
                _shaped(labels[name], str, f"{where}.labels.{name}")
        scrape_url = _shaped(t.get("scrapeUrl", ""), str, where + ".scrapeUrl")
        if labels.get("job") != job:
            continue
        named = (("labels.instance", labels.get("instance")), ("scrapeUrl", scrape_url))
        broken = next(((name, value) for name, value in named if first_surrogate_path(value) is not None), None)
        if broken is not None:
            _skip(f"{where} skipped: {broken[0]} {short_repr(broken[1])} {NOT_TEXT}", skipped)
            continue
        parts = urlsplit(scrape_url)
        hostport = parts.netloc.rpartition("@")[2]  # a password Prometheus scrapes with is not shown: hub.auth
        if not hostport:
            continue
        invisible = invisible_problem(hostport, offset=scrape_url.find(hostport, len(parts.scheme)))
        if invisible is not None:  # (a hub cursor names a host by its URL, and refuses one that does not show as is)
            _skip(f"{where} skipped: scrapeUrl {short_repr(scrape_url)}: {invisible}", skipped)
            continue
        out.append(Target(labels.get("instance") or hostport, canonical_url(f"{scheme}://{hostport}")))
    return out


def _skip(why: str, skipped: list[str] | None) -> None:
    if skipped is None:
        log.warning("prometheus targets: %s", why)
    else:
        skipped.append(why)


NOT_TEXT = "holds a lone surrogate (\\ud800-\\udfff), which is not text"

_KINDS = {dict: "a mapping", list: "a list", str: "a string"}


def _active_targets(body: Any) -> list[Any]:
    data = _shaped(_shaped(body, dict, "the answer").get("data"), dict, "data")
    return _shaped(data.get("activeTargets"), list, "data.activeTargets")  # type: ignore[no-any-return]


def _some(targets: list[Target], job: str) -> list[Target]:
    """A job's targets, refused (ValueError: the last good list stays, a warning says why) when there are none: a
    misspelled `job`, or a Prometheus just restarted that has not loaded its targets yet, emptied the hub silently."""
    if not targets:
        raise ValueError(f"no active target of job {job!r} (a misspelled job, or a Prometheus that has not loaded its "
                         "targets yet?)")
    return targets


class NotTargets(ValueError):
    """A Prometheus answer that is JSON but no /api/v1/targets answer: said as it is (no exception name)."""


def _shaped(value: Any, kind: type, where: str) -> Any:
    if not isinstance(value, kind):
        raise NotTargets(f"not a Prometheus /api/v1/targets answer: {where} is not {_KINDS[kind]}")
    return value


def _parsed_targets(raw: bytes, job: str, scheme: str, skipped: list[str]) -> list[Target]:
    """parse_prometheus_targets of an answer's bytes (on a hub work thread: it may be MiBs of JSON)."""
    return parse_prometheus_targets(json.loads(raw), job, scheme, skipped)


def _url_auth(url: str) -> httpx.BasicAuth | None:
    """The credentials of a Prometheus URL (`http://user:pass@prometheus:9090`) as basic auth, so the URL asked,
    and any error naming it, carries none."""
    parts = urlsplit(url)
    if parts.username is None:
        return None
    return httpx.BasicAuth(unquote(parts.username), unquote(parts.password or ""))


def _unique_names(targets: list[Target]) -> list[Target]:
    """A name picks the host a timeline is asked of (`?host=`): targets that share one (relabelled Prometheus
    instances, two static entries) are named by their host:port instead, or their URL if that is shared too."""
    def shared(ts: list[Target]) -> set[str]:
        return {n for n, count in Counter(t.name for t in ts).items() if count > 1}

    twice = shared(targets)
    out = [Target(_name_of(t.url), t.url) if t.name in twice else t for t in targets]
    twice = shared(out)
    return [Target(t.url, t.url) if t.name in twice else t for t in out]


class TargetSet:
    """The current targets, deduplicated by URL and sorted by name (a stable order for merges)."""

    def __init__(self, section: HubSection, clock: Any = time.monotonic) -> None:
        self.section = section
        self.clock = clock
        self.static = static_targets(section)
        self._dynamic: dict[str, list[Target]] = {}
        self._errors: dict[str, str] = {}
        self._skipped: dict[str, set[str]] = {}
        self._fresh_at: float | None = None
        self._seen: dict[str, Target] = {}
        self._first: asyncio.Future[None] | None = None
        """The first refresh, which requests arriving meanwhile wait for: before it ends nothing is discovered yet."""
        self._refreshing = False
        """A refresh is under way: a request due for another meanwhile answers from the last lists. A refresh slower
        than refresh_interval (a pipe waited for hub.timeout, a slow Prometheus) was started again by every request
        due meanwhile, each holding a work thread, and one started earlier finishing last overwrote a newer list."""
        self._by_pool = True
        """Ask Prometheus for the job's scrape pool (until it shows it cannot say: `_prometheus_targets`)."""

    @property
    def dynamic(self) -> bool:
        return bool(self.section.file_sd or self.section.prometheus)

    async def current(self) -> list[Target]:
        if self.dynamic and not self._refreshing and (
                self._fresh_at is None or self.clock() - self._fresh_at >= self.section.refresh_interval):
            self._fresh_at = self.clock()
            if self._first is None:  # shielded: a request cancelled meanwhile does not cancel it for the others
                self._first = asyncio.ensure_future(self._refresh())
                self._first.add_done_callback(_retrieved)
                await asyncio.shield(self._first)
            else:  # a later one: requests meanwhile answer from the last lists
                await self._refresh()
        elif self._first is not None and not self._first.done():
            await asyncio.shield(self._first)
        seen: dict[str, Target] = {}
        for t in [*self.static, *(t for ts in self._dynamic.values() for t in ts)]:
            seen.setdefault(t.url, t)
        out = sorted(_unique_names(list(seen.values())))
        self._remember(out)
        return out

    def named(self, url: str) -> Target:
        """The target of `url` as it was last among the targets (a cursor names a host that left by its URL)."""
        return self._seen.get(url) or default_target(url)

    def _remember(self, targets: list[Target]) -> None:
        for t in targets:
            self._seen.pop(t.url, None)
            self._seen[t.url] = t
        while len(self._seen) > MAX_REMEMBERED:  # the oldest first
            del self._seen[next(iter(self._seen))]

    async def _refresh(self) -> None:
        self._refreshing = True
        try:
            for path in self.section.file_sd:
                await self._read_file_sd(path)
            if self.section.prometheus is not None:
                await self._read_prometheus(self.section.prometheus)
        finally:
            self._refreshing = False
            self._fresh_at = self.clock()  # the interval counts from the lists read, not from the start of the read

    async def _read_prometheus(self, prom: PrometheusSource) -> None:
        key = f"prometheus {without_credentials(prom.url)} job {prom.job}"
        timeout = self.section.timeout
        skipped: list[str] = []
        try:  # on the request path: bounded as a daemon's answer is (a Prometheus that drips its answer)
            found = await asyncio.wait_for(self._prometheus_targets(prom, skipped), timeout)
        except TimeoutError:
            self._failed(key, f"timed out after {timeout:.3g}s")
            return
        except NotTargets as exc:
            self._failed(key, str(exc))
            return
        except (httpx.HTTPError, httpx.InvalidURL, BodyProblem, ValueError, RecursionError, OSError) as exc:
            self._failed(key, f"{type(exc).__name__}: {exc}")  # OSError: an SSL_CERT_FILE that is no CA bundle
            return
        self._update(key, lambda: _some(found, prom.job))
        self._say_skipped(key, skipped)

    async def _prometheus_targets(self, prom: PrometheusSource, skipped: list[str]) -> list[Target]:
        """The job's active targets, kept by `job` label: among `prometheus.scrape_pool`'s (`scrapePool`, Prometheus
        2.42+; a big Prometheus's whole list may not fit hub.max_answer_size) when one is set, else among every
        job's (the daemons may sit in several pools relabelled to one job: asking the pool named as the job left
        the others out). A Prometheus answering 400 to `scrapePool` is asked for every target from then on."""
        if prom.scrape_pool is not None and self._by_pool:
            try:
                return await self._asked(prom, skipped, pool=prom.scrape_pool)
            except httpx.HTTPStatusError as exc:
                if exc.response.status_code != 400:
                    raise
                self._not_by_pool(prom, "it answers 400 to scrapePool")
            skipped.clear()
        return await self._asked(prom, skipped, pool=None)

    def _not_by_pool(self, prom: PrometheusSource, why: str) -> None:
        self._by_pool = False
        log.info("prometheus %s: %s; asking it for every active target", without_credentials(prom.url), why)

    async def _asked(self, prom: PrometheusSource, skipped: list[str], pool: str | None) -> list[Target]:
        """The job's targets of one /api/v1/targets answer, parsed on a hub work thread (up to hub.max_answer_size
        of JSON: ~0.5 s of the event loop, every request waiting)."""
        raw = await self._ask_prometheus(prom, pool)
        return await off_loop(_parsed_targets, raw, prom.job, self.section.scheme, skipped)

    async def _read_file_sd(self, path: Path) -> None:
        """Read on one of the hub's work threads (hub.threads), a pipe waited for at most hub.timeout: on the request
        path, and the event loop serves the other requests meanwhile."""
        try:
            found = await off_loop(read_file_sd, path, self.section.scheme, self.section.timeout)
        except (OSError, ValueError, yaml.YAMLError) as exc:
            self._failed(str(path), str(exc))
            return
        self._update(str(path), lambda: found)

    async def _ask_prometheus(self, prom: PrometheusSource, pool: str | None) -> bytes:
        """Its /api/v1/targets answer (of scrape pool `pool` only, if given), read under hub.max_answer_size; asked
        directly, as the daemons are (trust_env=False: an HTTP_PROXY set for other programs is not this hub's way to
        its Prometheus)."""
        url = without_credentials(prom.url, mask="").rstrip("/") + "/api/v1/targets"
        params = {"state": "active", **({"scrapePool": pool} if pool is not None else {})}
        async with httpx.AsyncClient(timeout=self.section.timeout, auth=_url_auth(prom.url), trust_env=False,
                                     verify=default_trust() if url.lower().startswith("https:") else True,
                                     headers={"accept-encoding": ACCEPT_ENCODING}) as client, \
                client.stream("GET", url, params=params) as resp:
            resp.raise_for_status()
            return await read_capped(resp, self.section.max_answer_size)

    def _update(self, key: str, read: Any) -> None:
        try:
            self._dynamic[key] = read()
            if self._errors.pop(key, None) is not None:
                log.info("targets from %s readable again", key)
        except (OSError, ValueError, yaml.YAMLError) as exc:
            self._failed(key, str(exc))

    def _say_skipped(self, key: str, skipped: list[str]) -> None:
        """A warning per target a source's list leaves out, once while it is left out (not at every refresh)."""
        before = self._skipped.get(key, set())
        for why in skipped:
            if why not in before:
                log.warning("targets from %s: %s", key, why)
        self._skipped[key] = set(skipped)

    def undiscovered(self) -> list[str]:
        """`source: why` of each discovery source not read once since the start (none of its targets known): the
        503 of a hub with no target says discovery failed, not that nothing is configured. No secret: a source is
        named without credentials, and why it failed is the hub's own text."""
        return [f"{key}: {why}" for key, why in self._errors.items() if key not in self._dynamic]

    def _failed(self, key: str, why: str) -> None:
        if self._errors.get(key) != why:
            log.warning("cannot read targets from %s (keeping the last list): %s", key, why)
        self._errors[key] = why
