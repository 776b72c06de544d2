"""Mailbox providers as the simulator sees them: domains, MX hosts, FBL, queue limits, healthy noise.

Provider names are the exporter's `isp` label values, so ground truth lines up with the metrics.
Mix presets follow isp-responses.md §4.1 (US B2C default; EU and DE variants). Long-tail and
hosted (Workspace / Microsoft 365) domains live under the reserved `.example` TLD.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True)
class Mx:
    host: str
    ip: str

    @property
    def dsn_mta(self) -> str:
        return f"{self.host} ({self.ip})"


@dataclass(frozen=True, slots=True)
class Provider:
    name: str
    domains: tuple[tuple[str, float], ...]
    mx: tuple[Mx, ...] = ()
    """Shared MX hosts; empty means one generated host per domain (see `mx_for`)."""
    mx_pattern: str = ""
    """`{dash}` = domain with dots as dashes, `{domain}` = the domain; used when `mx` is empty."""
    fbl: bool = False
    fbl_user_agent: str = ""
    fbl_reporting_mta: str = ""
    esmtp: str = "PIPELINING,SIZE,8BITMIME,STARTTLS,ENHANCEDSTATUSCODES"
    max_rate: float = 10.0
    """Recipients attempted per second by one queue (domain/vmta) in normal mode."""
    max_conn: int = 5
    transient: float = 0.02
    """Chance that a healthy attempt is deferred anyway, using one of `transient_replies`."""
    transient_replies: tuple[tuple[str, float], ...] = (("generic.busy", 1.0),)
    ok: str = "generic.ok"
    user_unknown: str = "generic.user_unknown"
    mailbox_full: str = "generic.mailbox_full"
    content_block: str = "generic.content"
    remote_bounce: float = 0.0
    """Chance that an accepted message bounces later (an `rb` record)."""
    remote_status: float = 0.0
    """Chance that an accepted message gets a DSN later (an `rs` record: a delay, sometimes a success)."""
    fbl_hidden_rcpt: float = 0.0
    """Chance that an FBL report carries no recipient (Hotmail/JMRP hides it, pmta-formats.md §1.2, §3.3)."""
    dead_domains: tuple[str, ...] = field(default=())
    """Domains without MX: PMTA bounces them itself with 5.1.2 and no dsnMta."""


_GOOGLE_MX = (Mx("gmail-smtp-in.l.google.com", "142.250.1.27"), Mx("alt1.gmail-smtp-in.l.google.com", "142.250.153.27"),
              Mx("alt2.gmail-smtp-in.l.google.com", "142.250.152.26"))
_ASPMX = (Mx("aspmx.l.google.com", "142.250.102.27"), Mx("alt1.aspmx.l.google.com", "142.251.9.26"))
_YAHOO_MX = (Mx("mta5.am0.yahoodns.net", "67.195.204.72"), Mx("mta6.am0.yahoodns.net", "98.136.96.74"),
             Mx("mta7.am0.yahoodns.net", "67.195.228.106"))
_APPLE_MX = (Mx("mx01.mail.icloud.com", "17.57.155.23"), Mx("mx02.mail.icloud.com", "17.56.9.30"))
_COMCAST_MX = (Mx("mx2c1.comcast.net", "96.102.18.149"), Mx("mx1a1.comcast.net", "96.103.145.164"))

_TAIL_WORDS = ("north", "blue", "river", "stone", "maple", "cedar", "harbor", "summit", "prairie", "coast",
               "valley", "pine", "lake", "iron", "silver", "meadow", "bright", "oak", "elm", "granite")
_TAIL_KINDS = ("mail", "net", "works", "group", "labs", "media", "co", "online", "tel", "home")


def _long_tail(n: int = 150) -> tuple[tuple[str, float], ...]:
    out = []
    for i in range(n):
        word = _TAIL_WORDS[i % len(_TAIL_WORDS)]
        kind = _TAIL_KINDS[(i // len(_TAIL_WORDS)) % len(_TAIL_KINDS)]
        out.append((f"{word}{kind}{i // 200 or ''}.example", 1.0 / (1 + i) ** 0.7))  # Zipf-ish weights
    return tuple(out)


PROVIDERS: dict[str, Provider] = {
    p.name: p
    for p in (
        Provider("gmail", (("gmail.com", 0.97), ("googlemail.com", 0.03)), mx=_GOOGLE_MX, max_rate=25, max_conn=5,
                 transient=0.01, transient_replies=(("gmail.temp_system", 0.6), ("gmail.recipient_rate", 0.4)),
                 ok="gmail.ok", user_unknown="gmail.user_unknown", mailbox_full="gmail.mailbox_full",
                 content_block="gmail.content", esmtp="SIZE,8BITMIME,STARTTLS,ENHANCEDSTATUSCODES,PIPELINING,"
                 "CHUNKING,SMTPUTF8"),
        Provider("google_workspace", tuple((d, 1.0) for d in ("northwind-traders.example", "fabrikam-labs.example",
                 "adventure-works.example", "wingtip-toys.example")), mx=_ASPMX, max_rate=10,
                 transient=0.01, transient_replies=(("gmail.temp_system", 1.0),), ok="gmail.ok",
                 user_unknown="gmail.user_unknown", mailbox_full="gmail.mailbox_full", content_block="gmail.content",
                 esmtp="SIZE,8BITMIME,STARTTLS,ENHANCEDSTATUSCODES,PIPELINING,CHUNKING,SMTPUTF8"),
        Provider("yahoo", (("yahoo.com", 0.62), ("aol.com", 0.18), ("ymail.com", 0.04), ("att.net", 0.08),
                 ("sbcglobal.net", 0.05), ("rocketmail.com", 0.03)), mx=_YAHOO_MX, max_rate=15, max_conn=10,
                 fbl=True, fbl_user_agent="Yahoo!-Mail-Feedback/2.0", fbl_reporting_mta="dns; mta.yahoo.com",
                 transient=0.06, transient_replies=(("yahoo.busy", 0.7), ("yahoo.max_per_conn", 0.3)),
                 ok="yahoo.ok", user_unknown="yahoo.user_unknown", mailbox_full="yahoo.mailbox_full",
                 content_block="yahoo.content", esmtp="PIPELINING,SIZE,8BITMIME,STARTTLS"),
        Provider("microsoft", (("outlook.com", 0.35), ("hotmail.com", 0.45), ("live.com", 0.15), ("msn.com", 0.05)),
                 mx_pattern="{dash}.olc.protection.outlook.com", max_rate=15, fbl=True,
                 fbl_user_agent="Microsoft JMRP", fbl_reporting_mta="dns; hotmail.com", fbl_hidden_rcpt=0.5,
                 transient=0.015, transient_replies=(("microsoft.busy", 1.0),), ok="microsoft.ok",
                 user_unknown="microsoft.user_unknown", mailbox_full="microsoft.mailbox_full",
                 content_block="microsoft.content",
                 esmtp="SIZE,PIPELINING,DSN,ENHANCEDSTATUSCODES,STARTTLS,8BITMIME,BINARYMIME,CHUNKING,SMTPUTF8"),
        Provider("office365", tuple((d, 1.0) for d in ("contoso-corp.example", "litware-inc.example",
                 "tailspin-air.example", "proseware.example", "woodgrove-bank.example")),
                 mx_pattern="{dash}.mail.protection.outlook.com", max_rate=10, transient=0.01,
                 transient_replies=(("microsoft.busy", 1.0),), ok="microsoft.ok",
                 user_unknown="microsoft.user_unknown", mailbox_full="microsoft.mailbox_full",
                 content_block="microsoft.content", remote_bounce=0.002, remote_status=0.002,
                 esmtp="SIZE,PIPELINING,DSN,ENHANCEDSTATUSCODES,STARTTLS,8BITMIME,BINARYMIME,CHUNKING,SMTPUTF8"),
        Provider("apple", (("icloud.com", 0.8), ("me.com", 0.15), ("mac.com", 0.05)), mx=_APPLE_MX, max_rate=8,
                 transient=0.01, transient_replies=(("apple.excessive_volume", 1.0),), ok="apple.ok",
                 user_unknown="apple.user_unknown", mailbox_full="apple.mailbox_full", content_block="apple.content"),
        Provider("comcast", (("comcast.net", 1.0),), mx=_COMCAST_MX, max_rate=10, max_conn=25, fbl=True,
                 fbl_user_agent="Comcast Feedback Loop", fbl_reporting_mta="dns; comcast.net",
                 transient=0.02, transient_replies=(("comcast.throttled", 1.0),), ok="comcast.ok",
                 user_unknown="comcast.user_unknown", mailbox_full="generic.mailbox_full",
                 content_block="generic.content"),
        Provider("gmx", (("gmx.de", 0.4), ("gmx.net", 0.2), ("web.de", 0.4)), mx_pattern="mx00.{domain}",
                 max_rate=5, max_conn=4, transient=0.03, transient_replies=(("gmx.rate", 1.0),), ok="generic.ok",
                 user_unknown="gmx.user_unknown"),
        Provider("mailru", (("mail.ru", 0.8), ("bk.ru", 0.2)), mx=(Mx("mxs.mail.ru", "94.100.180.31"),),
                 transient=0.03),
        Provider("yandex", (("yandex.ru", 1.0),), mx=(Mx("mx.yandex.ru", "77.88.21.249"),), transient=0.02),
        Provider("orange", (("orange.fr", 0.7), ("wanadoo.fr", 0.3)), mx=(Mx("smtp-in.orange.fr", "80.12.242.10"),),
                 transient=0.04),
        Provider("other", _long_tail(), mx_pattern="mx1.{domain}", transient=0.03, remote_bounce=0.003,
                 remote_status=0.003,
                 transient_replies=(("generic.busy", 0.5), ("generic.greylist", 0.5)),
                 dead_domains=("gmal.example", "yahooo.example", "hotmial.example")),
    )
}

MIXES: dict[str, dict[str, float]] = {
    "us_b2c": {"gmail": 0.45, "yahoo": 0.20, "microsoft": 0.12, "apple": 0.04, "comcast": 0.02,
               "google_workspace": 0.04, "office365": 0.05, "gmx": 0.01, "orange": 0.005, "mailru": 0.005,
               "yandex": 0.005, "other": 0.055},
    "eu": {"gmail": 0.33, "microsoft": 0.23, "yahoo": 0.18, "apple": 0.04, "google_workspace": 0.04,
           "office365": 0.05, "gmx": 0.03, "orange": 0.04, "other": 0.06},
    "de": {"gmx": 0.40, "gmail": 0.15, "microsoft": 0.08, "yahoo": 0.05, "office365": 0.04, "apple": 0.02,
           "other": 0.26},
}


def mx_for(provider: Provider, domain: str) -> tuple[Mx, ...]:
    """MX hosts for a domain; per-domain hosts get a stable address in 203.0.113.0/24 or 52.101.x."""
    if provider.mx:
        return provider.mx
    host = provider.mx_pattern.format(dash=domain.replace(".", "-"), domain=domain)
    h = zlib.crc32(domain.encode())
    if "outlook.com" in host:
        return (Mx(host, f"52.101.{h % 200 + 1}.{(h >> 8) % 250 + 1}"),)
    return (Mx(host, f"203.0.113.{h % 250 + 1}"),)


def provider_of_domain() -> dict[str, str]:
    """domain -> provider name for every domain the simulator can produce (tests pass it as isp_of_domain)."""
    out = {}
    for p in PROVIDERS.values():
        for d, _ in p.domains:
            out[d] = p.name
        for d in p.dead_domains:
            out[d] = p.name
    return out
