"""Recipient domain + remote MX host -> mailbox provider (the bounded `isp` label).

Resolution order: the exact recipient-domain table, then MX-host suffix rules applied to PMTA's
`dsnMta` (which catches Google Workspace / Microsoft 365 custom domains without any DNS of our
own), then `other`. A domain placed by its MX is remembered, so later records for it that carry no
`dsnMta` (a deferral on connect) get the same provider. An MTA named the DSN way (`dns; host`) loses its
type prefix. A report's reporting MTA (`classify_reporter`) is also looked up in the domain table.
The tables are data: `isps.yaml`.
"""

from __future__ import annotations

import re
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from exporter.boundedfile import read_bounded
from exporter.textrepair import short_repr
from exporter.yamlload import TOO_DEEP, UniqueKeyCLoader
from exporter.yamlproblem import CONSTRUCTOR_ERRORS, utf8_problem, value_problem, yaml_problem

OTHER = "other"

# The closed set of provider names, in dashboard order. Tables may use a subset, never more.
ISP_NAMES: tuple[str, ...] = (
    "gmail",
    "google_workspace",
    "yahoo",
    "microsoft",
    "office365",
    "apple",
    "comcast",
    "gmx",
    "mailru",
    "yandex",
    "orange",
    OTHER,
)

_CACHE_LIMIT = 65_536  # per dict; cleared (not LRU-evicted) when full: one O(1) check per insert
_HOST = re.compile(r"^[a-z0-9_](?:[a-z0-9_.-]*[a-z0-9])?$")
_MTA_TYPE = re.compile(r"^[a-z][a-z0-9-]*\s*;\s*")
"""The `mta-name-type;` of an MTA named the DSN / ARF way (RFC 3464 Remote-MTA, RFC 5965 Reporting-MTA):
`dns; hotmail.com` (pmta-formats.md §1.2, §3.3)."""


def mta_host(mta: str) -> str:
    """The host of an MTA as PMTA logs it: `host (ip)`, a bare host, or `dns; host`; lower case, no dot at the end."""
    host = mta.partition("(")[0].strip().lower()
    return _MTA_TYPE.sub("", host).rstrip(".")


MAX_TABLE_BYTES = 4 << 20
"""Largest classification table read (the shipped ones are 6 and 22 KB): a SIGHUP reload read the named file whole,
and a path swapped for /dev/zero grew the daemon to 20 GB."""


def read_yaml(path: Path | None, shipped: str) -> tuple[str, Any]:
    """(name for error messages, parsed YAML) of `path`, or of the file shipped in this package.

    Every failure is a ValueError `NAME: what` in one line: check-config and a SIGHUP reload show it as is."""
    if path is None:
        name = f"exporter/classify/{shipped}"
        text = resources.files("exporter.classify").joinpath(shipped).read_text(encoding="utf-8")
    else:
        name = str(path)
        try:  # a FIFO is not waited for (a SIGHUP reload runs on the event loop), /dev/zero is cut at the cap
            raw = read_bounded(path, MAX_TABLE_BYTES, "a YAML classification table", "a classification table",
                               pipe_timeout=0)
        except OSError as exc:
            raise ValueError(f"{name}: cannot read: {exc.strerror or exc}") from exc
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise ValueError(f"{name}: {utf8_problem(raw, exc)}") from None
    try:
        loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader) if path is None else UniqueKeyCLoader  # (the shipped
        # tables are known good: their start-up cost stays libyaml's alone)
        return name, yaml.load(text, Loader=loader)  # noqa: S506 - SafeLoader and a subclass of it
    except yaml.YAMLError as exc:
        raise ValueError(f"{name}: {yaml_problem(exc, text)}") from exc
    except CONSTRUCTOR_ERRORS as exc:  # a constructor's, not a YAMLError
        raise ValueError(f"{name}: {value_problem(exc)}") from None
    except RecursionError:  # nesting (or a chain of merges) deeper than Python's recursion limit
        raise ValueError(f"{name}: not valid YAML: {TOO_DEEP}") from None


def check_keys(name: str, where: str, data: Any, allowed: set[str], required: set[str]) -> dict[str, Any]:
    """`data` as a mapping with only `allowed` keys and all `required` ones, else ValueError."""
    if not isinstance(data, dict):
        raise ValueError(f"{name}: {where}: expected a mapping, got {type(data).__name__}")
    unknown = sorted(str(k) for k in data if k not in allowed)
    if unknown:
        raise ValueError(f"{name}: {where}: unknown key(s) {unknown} (allowed: {sorted(allowed)})")
    missing = sorted(required - data.keys())
    if missing:
        raise ValueError(f"{name}: {where}: missing key(s) {missing}")
    return data


TABLE_VERSION = 1
"""The one table format this code reads; a table written for another would be misread, not refused, if unchecked."""


def check_version(name: str, data: dict[str, Any]) -> None:
    """A table's `version`, when given, must be the one this code reads (an integer, not a string or a bool)."""
    version = data.get("version", TABLE_VERSION)
    if type(version) is not int or version != TABLE_VERSION:
        raise ValueError(f"{name}: version: {version!r} is not a table version this watchtower reads ({TABLE_VERSION})")


def _hosts(name: str, where: str, value: Any) -> list[str]:
    """Lower-cased host names from a YAML list; `*.x` / `.x` mean the same as `x` (suffix match)."""
    if value is None:
        return []
    if not isinstance(value, list):
        raise ValueError(f"{name}: {where}: expected a list of names")
    out = []
    for item in value:
        host = item.strip().lower().removeprefix("*.").removeprefix(".").rstrip(".") if isinstance(item, str) else ""
        if "." not in host or not _HOST.match(host):  # (an aliased list is not written out whole to say so)
            raise ValueError(f"{name}: {where}: bad entry {short_repr(item)} (expected a name such as example.com)")
        out.append(host)
    return out


LONGEST_NAME = 253
"""Characters of the longest DNS name (RFC 1035): no listed domain or MX suffix is longer."""


def bare_domain(domain: str) -> str:
    """A recipient domain as the tables list it: lowercase, without the root's `.`, nor the `>` an address logged in
    angle brackets leaves after its `@` (`<bob@gmail.com>`)."""
    return domain.lower().strip().rstrip(".>").rstrip()


class IspClassifier:
    """Maps (recipient domain, dsnMta) to one of `VALUES`. Built once; `classify` is the hot path."""

    VALUES: tuple[str, ...] = ISP_NAMES
    """The closed set this table can return (always ends with `other`); the class default is the full set."""

    def __init__(self, domains: dict[str, str], mx_suffixes: dict[str, str], date: str = "", source: str = ""):
        for isp in (*domains.values(), *mx_suffixes.values()):
            if isp not in ISP_NAMES:
                raise ValueError(f"{source or 'IspClassifier'}: unknown provider {isp!r}")
        present = {*domains.values(), *mx_suffixes.values(), OTHER}
        self.VALUES = tuple(n for n in ISP_NAMES if n in present)
        self.date = date
        self.source = source
        self._domains = dict(domains)
        self._suffixes = dict(mx_suffixes)
        self._mx_cache: dict[str, str] = {}
        self._reporter_cache: dict[str, str] = {}
        self._learned: dict[str, str] = {}

    @classmethod
    def load(cls, path: Path | None = None) -> IspClassifier:
        """Read and validate an ISP table (None -> the shipped isps.yaml)."""
        name, data = read_yaml(path, "isps.yaml")
        data = check_keys(name, "top level", data, {"version", "date", "providers"}, {"date", "providers"})
        check_version(name, data)
        providers = data["providers"]
        if not isinstance(providers, dict) or not providers:
            raise ValueError(f"{name}: providers: expected a non-empty mapping of provider -> tables")
        domains: dict[str, str] = {}
        suffixes: dict[str, str] = {}
        for isp, spec in providers.items():
            where = f"providers.{isp}"
            if isp not in ISP_NAMES:
                raise ValueError(f"{name}: {where}: unknown provider {isp!r} (allowed: {', '.join(ISP_NAMES)})")
            spec = check_keys(name, where, spec or {}, {"domains", "mx_suffixes", "note"}, set())
            for table, key in ((domains, "domains"), (suffixes, "mx_suffixes")):
                for host in _hosts(name, f"{where}.{key}", spec.get(key)):
                    if table.get(host, isp) != isp:
                        raise ValueError(f"{name}: {where}.{key}: {host!r} is already listed for {table[host]!r}")
                    table[host] = isp
        return cls(domains, suffixes, date=str(data["date"]), source=name)

    def classify(self, domain: str, dsn_mta: str = "") -> str:
        """Provider of a recipient domain (any case, may be ''), using `dsnMta` when the table misses."""
        isp = self._domains.get(domain)
        if isp is not None:
            return isp
        dom = bare_domain(domain)
        isp = self._domains.get(dom)
        if isp is not None:
            return isp
        learned = self._learned
        if not dsn_mta:
            return learned.get(dom, OTHER)
        isp = self._mx_cache.get(dsn_mta) or self._resolve_mx(dsn_mta)
        if dom:
            if isp != OTHER:
                if learned.get(dom) != isp:
                    if len(learned) >= _CACHE_LIMIT:
                        learned.clear()
                    learned[dom] = isp
            elif dom in learned:  # the domain moved away from a known provider
                del learned[dom]
        return isp

    def known(self, domain: str, dsn_mta: str = "") -> str | None:
        """`classify(domain, dsn_mta)` when the answer does not depend on what earlier records taught
        (a listed domain, or a non-empty dsnMta), else None; learns nothing, so any thread may ask."""
        isp = self._domains.get(domain)
        if isp is None:
            isp = self._domains.get(bare_domain(domain))
        if isp is not None:
            return isp
        if not dsn_mta:
            return None  # the domain's learned MX decides: only the reader in file order may ask
        return self.classify_mx(dsn_mta)

    def classify_rcpt(self, rcpt: str, dsn_mta: str = "") -> str:
        """Provider of a recipient address such as `user@Example.COM` (or `<user@example.com>`)."""
        domain = rcpt.rpartition("@")[2]
        if domain.endswith(">"):
            domain = domain[:-1]
        return self.classify(domain, dsn_mta)

    def classify_mx(self, dsn_mta: str) -> str:
        """Provider of a remote MTA as PMTA logs it: `host (ip)`, a bare host, or ''."""
        if not dsn_mta:
            return OTHER
        return self._mx_cache.get(dsn_mta) or self._resolve_mx(dsn_mta)

    def classify_reporter(self, reporting_mta: str) -> str:
        """Provider of the MTA that sent a report (an FBL's `reportingMta`, e.g. `dns; hotmail.com`).

        A reporter is named by the provider's own domain more often than by an MX host (Hotmail hides the
        recipient and reports as `dns; hotmail.com`, pmta-formats.md §1.2, §3.3), so unlike a dsnMta it is
        looked up in the domain table too: suffixes longest first, at each the domain table, then the MX
        suffixes. Learns nothing: a reporter says nothing about a recipient domain's MX."""
        if not reporting_mta:
            return OTHER
        isp = self._reporter_cache.get(reporting_mta)
        if isp is None:
            isp = self._walk(mta_host(reporting_mta), self._domains, self._suffixes)
            if len(self._reporter_cache) >= _CACHE_LIMIT:
                self._reporter_cache.clear()
            self._reporter_cache[reporting_mta] = isp
        return isp

    @staticmethod
    def _walk(host: str, *tables: dict[str, str]) -> str:
        """The provider of `host`'s longest suffix (on label boundaries) listed in any of `tables`, the
        earlier table first at equal length; `other` when none is. Only the suffixes of at most a DNS name's length
        are looked up: a crafted host of 100,000 labels cost a lookup and a copy per label (quadratic)."""
        if len(host) > LONGEST_NAME:
            cut = host.find(".", len(host) - LONGEST_NAME - 1)
            host = host[cut + 1 :] if cut >= 0 else ""
        while host:
            for table in tables:
                found = table.get(host)
                if found is not None:
                    return found
            host = host.partition(".")[2]
        return OTHER

    def _resolve_mx(self, dsn_mta: str) -> str:
        # the MX suffixes only, longest first: gmail-smtp-in.l.google.com before google.com
        isp = self._walk(mta_host(dsn_mta), self._suffixes)
        if len(self._mx_cache) >= _CACHE_LIMIT:
            self._mx_cache.clear()
        self._mx_cache[dsn_mta] = isp
        return isp
