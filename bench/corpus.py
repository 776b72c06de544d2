"""A realistic PMTA accounting corpus for the whole-process benchmarks (bench_e2e.py, bench_daemon.py).

Shaped like a stock install with a feedback-loop and a bounce processor (acct + diag + fbl + bounce files, see
/work/shared/reference/pmta-formats.md) and varied the way real traffic is, because that is what makes
classification keys nearly unique and what the correlator has to link:
* recipients over ~4,000 domains, Zipf-like: the big mailbox providers (Gmail, Yahoo/AOL/AT&T, Microsoft, Apple,
  Comcast, GMX/WEB.DE, Orange, T-Online, Mail.ru, Yandex, ...) take ~84% of the mail, a long tail of small
  domains the rest, each with its own MX (its own server, a shared hoster) or hosted at Google Workspace,
  Microsoft 365, Mimecast, Proofpoint or Barracuda; a few typo domains without MX (PMTA's own bad-domain bounces);
* `dsnMta` carries the MX host *and its IP*, and the IP of a big provider varies per connection;
* replies per provider and server kind (21 success, 71 deferral and 72 bounce texts; the bounces in all 17 of
  PMTA's bounce categories, bad-domain from the typo domains) with the ids providers put in them: Gmail's
  `s142si14934335lfe.256 - gsmtp`, Microsoft's host names and InternalIds, Mimecast references, Postfix and Exim
  queue ids, the recipient address; PMTA's own connection errors (`ETIMEDOUT in connection to ...`), expiries;
* t records (recipient deferrals) and tq records (queue-wide: throttling on connect) in the diag file;
* f records (ARF complaints) only from providers with a feedback loop, rb records (asynchronous bounces from
  the recipient's internal server, mostly corporate domains) in a bounce file, both by Message-Id and rcpt;
* 200 VMTAs in 10 pools with skewed (log-normal) shares of the traffic;
* every acct line carries a `header_Message-Id`, a jobId and an envId, so the correlator links;
* one file is written with CRLF line ends, and one record's dsnDiag holds an invalid UTF-8 byte
  (`Empf\\xe4nger unbekannt`, a latin-1 reply from a German MX).

Deterministic: the same parameters (and GENERATOR_VERSION) give the same bytes on the same day (the records start
two days before the day they are written, to stay within the correlator's retention). `make_corpus` writes
`manifest.json` next to the files: the parameters, the generator version and what was written (records per type).

Run alone to write a corpus: `python bench/corpus.py DIR [--lines N] [--complaint-rate R]`.
"""

from __future__ import annotations

import argparse
import functools
import itertools
import json
import random
import re
import time
from collections.abc import Callable
from pathlib import Path

from simulator.replies import dsn_status

GENERATOR_VERSION = 2
"""Bump whenever the same parameters would write other bytes (bench_e2e.py regenerates a corpus whose manifest
names another version). 1: the 11-domain corpus before the long tail; 2: long tail, rb records, skewed VMTAs."""

ACCT_HEADER = (
    "type,timeLogged,timeQueued,orig,rcpt,orcpt,dsnAction,dsnStatus,dsnDiag,dsnMta,bounceCat,srcType,srcMta,"
    "dlvType,dlvSourceIp,dlvDestinationIp,dlvEsmtpAvailable,dlvSize,vmta,jobId,envId,queue,vmtaPool,"
    "header_Message-Id"
)
DIAG_HEADER = (
    "type,timeLogged,timeQueued,orig,rcpt,dsnAction,dsnStatus,dsnDiag,dsnMta,bounceCat,dlvSourceIp,"
    "dlvDestinationIp,vmta,jobId,envId,queue,vmtaPool"
)
FBL_HEADER = "type,timeLogged,orig,rcpt,feedbackType,userAgent,reportingMta,header_Message-Id"
RB_HEADER = ("type,timeLogged,orig,rcpt,dsnAction,dsnStatus,dsnDiag,dsnMta,bounceCat,dsnReportingMta,rcvSourceIp,"
             "header_Message-Id")
"""rb: the DSN fields (pmta-formats.md §1.2: UNCERTAIN there, the simulator's choice) plus the Message-Id of the
bounced message, which a bounce processor's record-fields can name (`record-fields rb *,header_Message-Id`)."""
HEADERS = {"acct": ACCT_HEADER, "diag": DIAG_HEADER, "fbl": FBL_HEADER, "bounce": RB_HEADER}
"""Each file kind's header, by the file name's prefix (`bounce-*.csv` holds the rb records)."""
RECORDS = {"acct": ("d", "b"), "diag": ("t", "tq"), "fbl": ("f",), "bounce": ("rb",)}
"""The record types each file kind holds (a source's `records` in a watchtower config)."""
DAY = "2026-11-25"

# dsnStatus texts (PMTA writes the enhanced code and RFC 3463's description): the simulator's
status = dsn_status


# --- recipient domains ----------------------------------------------------------------------------------------
# Big providers: (family, [(domain, weight, MX host or None)], [(MX host, IP prefix)]). A domain's own MX host
# (third field) overrides the family's hosts. Weights are % of messages (US/EU B2C mix, isp-responses.md §4.1).
_BIG: list[tuple[str, list[tuple[str, float, str | None]], list[tuple[str, str]]]] = [
    ("gmail", [("gmail.com", 38.0, None), ("googlemail.com", 0.6, None)],
     [("gmail-smtp-in.l.google.com", "142.250"), ("alt1.gmail-smtp-in.l.google.com", "142.251"),
      ("alt2.gmail-smtp-in.l.google.com", "172.253")]),
    ("yahoo", [("yahoo.com", 10.5, None), ("aol.com", 3.2, "mx-aol.mail.gm0.yahoodns.net"), ("ymail.com", 0.5, None),
               ("rocketmail.com", 0.2, None), ("att.net", 1.1, "mx-att.mail.am0.yahoodns.net"),
               ("sbcglobal.net", 0.8, "mx-att.mail.am0.yahoodns.net"),
               ("bellsouth.net", 0.5, "mx-att.mail.am0.yahoodns.net"), ("verizon.net", 0.6,
                                                                         "mx-aol.mail.gm0.yahoodns.net"),
               ("yahoo.co.uk", 0.6, "mx-eu.mail.am0.yahoodns.net"), ("yahoo.fr", 0.4, "mx-eu.mail.am0.yahoodns.net")],
     [("mta5.am0.yahoodns.net", "67.195"), ("mta6.am0.yahoodns.net", "98.136"), ("mta7.am0.yahoodns.net", "67.195")]),
    ("microsoft", [("hotmail.com", 7.0, None), ("outlook.com", 3.4, None), ("live.com", 1.5, None),
                   ("msn.com", 0.6, None), ("hotmail.co.uk", 0.5, None), ("hotmail.fr", 0.4, None),
                   ("live.fr", 0.3, None), ("outlook.de", 0.2, None)], []),  # {dash}.olc.protection.outlook.com
    ("apple", [("icloud.com", 3.2, None), ("me.com", 0.6, None), ("mac.com", 0.2, None)],
     [("mx01.mail.icloud.com", "17.57"), ("mx02.mail.icloud.com", "17.56")]),
    ("comcast", [("comcast.net", 1.8, None)], [("mx1a1.comcast.net", "96.103"), ("mx2c1.comcast.net", "96.102")]),
    ("gmx", [("gmx.de", 1.0, "mx00.gmx.net"), ("web.de", 1.0, "mx-ha03.web.de"), ("gmx.net", 0.4, "mx00.gmx.net"),
             ("gmx.com", 0.2, "mx00.gmx.com"), ("mail.com", 0.2, "mx00.mail.com")], [("mx01.gmx.net", "212.227")]),
    ("orange", [("orange.fr", 0.7, None), ("wanadoo.fr", 0.3, None)], [("smtp-in.orange.fr", "80.12")]),
    ("tonline", [("t-online.de", 0.6, None)], [("mx00.t-online.de", "194.25"), ("mx03.t-online.de", "194.25")]),
    ("mailru", [("mail.ru", 0.5, None), ("bk.ru", 0.1, None), ("inbox.ru", 0.1, None), ("list.ru", 0.1, None)],
     [("mxs.mail.ru", "94.100"), ("mx3.mail.ru", "217.69")]),
    ("yandex", [("yandex.ru", 0.4, None), ("ya.ru", 0.05, None)], [("mx.yandex.ru", "77.88")]),
    ("postfix", [("free.fr", 0.2, "mx1.free.fr"), ("laposte.net", 0.15, "smtp-in.laposte.net"),
                 ("libero.it", 0.2, "smtp-in.libero.it"), ("wp.pl", 0.2, "mx.wp.pl"), ("o2.pl", 0.1, "mx.o2.pl"),
                 ("seznam.cz", 0.15, "mx1.seznam.cz"), ("btinternet.com", 0.2, "mx.bt.lon5.cpcloud.co.uk")],
     [("mx.example-isp.net", "185.70")]),
    ("qq", [("qq.com", 0.2, "mx1.qq.com"), ("163.com", 0.1, "163mx01.mxmail.netease.com")], [("mx2.qq.com", "183.3")]),
]
_DEAD = [("gmial.com", 0.06), ("gmai.com", 0.05), ("hotmial.com", 0.04), ("yaho.com", 0.03), ("yahooo.com", 0.02),
         ("outlok.com", 0.02), ("iclod.com", 0.01), ("gnail.com", 0.02)]
"""Typo domains without MX: PMTA bounces them itself (bad-domain, no dsnMta, no reply)."""
TAIL_DOMAINS = 4000
TAIL_SHARE = 15.5
"""% of messages to the long tail (Zipf, exponent TAIL_ZIPF over the TAIL_DOMAINS domains by rank)."""
TAIL_ZIPF = 1.05
_HOSTING = [("own", 0.30), ("hoster", 0.16), ("workspace", 0.22), ("m365", 0.20), ("mimecast", 0.05),
            ("proofpoint", 0.04), ("barracuda", 0.02), ("dead", 0.01)]
"""How a long-tail domain receives mail: its own server (Postfix, Exim or Exchange), a shared hoster's MX, Google
Workspace, Microsoft 365, a filtering gateway; a few (ranked past 300) have no MX at all."""
_HOSTERS = [("mx00.ionos.de", "217.72", "postfix"), ("mx1.mail.ovh.net", "188.165", "postfix"),
            ("smtp.secureserver.net", "68.178", "postfix"), ("mx1.emailsrvr.com", "146.20", "postfix"),
            ("mx.zoho.com", "204.141", "postfix"), ("mx1.privateemail.com", "198.54", "postfix")]
_SYLLABLES = ("al", "an", "ar", "bel", "ber", "bri", "ca", "cor", "da", "del", "dor", "el", "fa", "fen", "gar", "ha",
              "hol", "in", "kal", "ken", "la", "lin", "lo", "ma", "mer", "mon", "na", "nor", "ol", "pa", "per", "ra",
              "ren", "ro", "sa", "sel", "ston", "ta", "ter", "tor", "va", "ven", "wel", "win", "za")
_WORDS = ("dental", "law", "build", "design", "foods", "tech", "health", "energy", "media", "travel", "homes",
          "partners", "group", "labs", "clinic", "school", "studio", "logistics", "finance", "farms", "motors",
          "print", "sports", "consult", "auto", "insure", "realty", "pharma", "works", "net")
_TLDS = [("com", 45), ("net", 6), ("org", 6), ("de", 9), ("co.uk", 7), ("fr", 5), ("nl", 4), ("it", 3), ("es", 3),
         ("com.au", 2), ("ca", 3), ("io", 2), ("us", 2), ("edu", 2), ("ch", 1), ("se", 1), ("pl", 1), ("be", 1)]


class Domain:
    """A recipient domain: where its mail goes and whose replies it gets."""

    __slots__ = ("name", "family", "mx", "ips", "fbl")

    def __init__(self, name: str, family: str, mx: list[tuple[str, str]], fixed_ips: bool = False,
                 fbl: tuple[str, str] | None = None) -> None:
        self.name = name
        self.family = family
        """Whose replies: gmail, workspace, yahoo, microsoft, m365, apple, comcast, gmx, orange, tonline, mailru,
        yandex, qq, mimecast, proofpoint, barracuda, postfix, exim, exchange; `dead`: no MX."""
        self.mx = mx
        """(host, IP prefix of two octets - the IP varies per connection - or a whole IP when `fixed_ips`)."""
        self.ips = fixed_ips
        self.fbl = fbl
        """(User-Agent, Reporting-MTA) of its feedback loop; None: it sends no ARF reports (Gmail, Apple, ...)."""


_FBL = {"yahoo": ("Yahoo!-Mail-Feedback/2.0", "dns; mta.yahoo.com"), "microsoft": ("Hotmail FBL", "dns; hotmail.com"),
        "comcast": ("Comcast Feedback Loop", "dns; comcast.net"), "mailru": ("Mail.Ru FBL/1.0", "dns; mail.ru"),
        "yandex": ("Yandex FBL", "dns; yandex.ru")}


def _tail_name(rng: random.Random, taken: set[str]) -> str:
    while True:
        stem = "".join(rng.choice(_SYLLABLES) for _ in range(rng.choice((2, 2, 3))))
        if rng.random() < 0.5:
            stem += ("-" if rng.random() < 0.4 else "") + rng.choice(_WORDS)
        name = f"{stem}.{rng.choices([t for t, _ in _TLDS], weights=[w for _, w in _TLDS])[0]}"
        if name not in taken:
            taken.add(name)
            return name


@functools.lru_cache(maxsize=1)
def domains() -> tuple[list[Domain], list[float]]:
    """Every recipient domain with its cumulative weight (fixed: the same universe whatever the corpus seed)."""
    rng = random.Random(20261125)
    out: list[tuple[Domain, float]] = []
    for family, members, hosts in _BIG:
        for name, weight, own in members:
            if family == "microsoft":
                mx = [(name.replace(".", "-") + ".olc.protection.outlook.com", "52.101")]
            else:
                mx = [(own, hosts[0][1])] if own else hosts
            out.append((Domain(name, family, mx, fbl=_FBL.get(family)), weight))
    out += [(Domain(name, "dead", []), weight) for name, weight in _DEAD]
    taken = {d.name for d, _ in out}
    harmonic = sum(1 / k ** TAIL_ZIPF for k in range(1, TAIL_DOMAINS + 1))
    for rank in range(1, TAIL_DOMAINS + 1):
        name = _tail_name(rng, taken)
        kind = rng.choices([k for k, _ in _HOSTING], weights=[w for _, w in _HOSTING])[0]
        if kind == "dead" and rank <= 300:
            kind = "own"
        ip = f"{rng.choice((38, 45, 64, 74, 81, 85, 91, 104, 149, 162, 185, 193, 194, 209, 212, 213))}." \
             f"{rng.randrange(256)}.{rng.randrange(256)}."
        if kind == "own":
            server = rng.choices(("postfix", "exim", "exchange"), weights=(55, 25, 20))[0]
            host = rng.choice(("mx1.{d}", "mail.{d}", "mx.{d}", "smtp.{d}", "mx01.{d}")).format(d=name)
            mx = [(host, ip + str(rng.randrange(2, 250)))]
            if rng.random() < 0.4:
                second = host.replace("1.", "2.", 1) if "1." in host else "mx2." + name
                mx.append((second, ip + str(rng.randrange(2, 250))))
            domain = Domain(name, server, mx, fixed_ips=True)
        elif kind == "hoster":
            host, prefix, server = rng.choice(_HOSTERS)
            domain = Domain(name, server, [(host, prefix)])
        elif kind == "workspace":
            domain = Domain(name, "workspace", [("aspmx.l.google.com", "142.250"),
                                                ("alt1.aspmx.l.google.com", "142.251")])
        elif kind == "m365":
            domain = Domain(name, "m365", [(name.replace(".", "-") + ".mail.protection.outlook.com", "52.101")])
        elif kind == "mimecast":
            region = rng.choice(("us", "eu", "uk", "au"))
            domain = Domain(name, "mimecast", [(f"{region}-smtp-inbound-1.mimecast.com", "205.139"),
                                               (f"{region}-smtp-inbound-2.mimecast.com", "207.211")])
        elif kind == "proofpoint":
            domain = Domain(name, "proofpoint", [(f"mx0a-00{rng.randrange(10**6):06d}.pphosted.com", "148.163"),
                                                 (f"mx0b-00{rng.randrange(10**6):06d}.pphosted.com", "148.163")])
        elif kind == "barracuda":
            domain = Domain(name, "barracuda", [(f"d{rng.randrange(10**6):06d}a.ess.barracudanetworks.com",
                                                 "209.222")])
        else:
            domain = Domain(name, "dead", [])
        out.append((domain, TAIL_SHARE / harmonic / rank ** TAIL_ZIPF))
    return [d for d, _ in out], list(itertools.accumulate(w for _, w in out))


@functools.lru_cache(maxsize=1)
def fbl_share() -> float:
    """The share of messages that go to a provider with a feedback loop (what a complaint rate is scaled by)."""
    doms, cum = domains()
    weights = [b - a for a, b in zip([0.0, *cum], cum, strict=False)]
    return sum(w for d, w in zip(doms, weights, strict=True) if d.fbl) / cum[-1]


VMTAS = 200
POOLS = 10


@functools.lru_cache(maxsize=1)
def vmta_weights() -> list[float]:
    """Cumulative shares of the 200 VMTAs: log-normal, the busiest carrying ~20x the median (warm IPs, IPs still
    warming up, a few dedicated to transactional mail)."""
    rng = random.Random(2027)
    return list(itertools.accumulate(rng.lognormvariate(0.0, 1.1) for _ in range(VMTAS)))


# --- replies --------------------------------------------------------------------------------------------------
# Templates fill {src} (sending IP), {rcpt}, {user}, {dom} (recipient domain), {sender}, {sdom} (sending domain),
# {mx} {ip} (MX host and address), {mid} (Message-Id) and per-message ids drawn on demand: {gid} (Gmail), {q}
# (10 hex), {pq} (Postfix long queue id), {exim}, {msft} (an Exchange Online host), {iid}, {mc} (Mimecast), {pp}
# (Proofpoint), {ts}, {n} (small number), {hex}, {cc} (a Comcast host), {yh} (a Yahoo host), {yx} (a Yandex id).
_G = " {gid} - gsmtp"
_MS = " [{msft}]"
_MC = "https://community.mimecast.com/docs/DOC-1369#{code} [{mc}]"
SUCCESS: dict[str, list[str]] = {
    "gmail": ["smtp;250 2.0.0 OK  {ts}" + _G],
    "yahoo": ["smtp;250 ok dirdel", "smtp;250 ok dirdel 1/0"],
    "microsoft": ["smtp;250 2.6.0 {mid} [InternalId={iid}, Hostname={msft}] {size} bytes in 0.{n}, {kbs} KB/sec "
                  "Queued mail for delivery -> 250 2.1.5"],
    "m365": ["smtp;250 2.6.0 {mid} [InternalId={iid}, Hostname={msft}] {size} bytes in 0.{n}, {kbs} KB/sec "
             "Queued mail for delivery"],
    "apple": ["smtp;250 2.0.0 Ok: queued as {q}"],
    "comcast": ["smtp;250 2.0.0 {cid} mail accepted for delivery"],
    "gmx": ["smtp;250 Requested mail action okay, completed: id=1M{cid}-1{hex}"],
    "orange": ["smtp;250 2.0.0 {cid} mail accepted for delivery"],
    "tonline": ["smtp;250 2.0.0 Message accepted. ({hex})"],
    "mailru": ["smtp;250 OK id={exim}"],
    "yandex": ["smtp;250 2.0.0 Ok: queued on mail-nwsmtp-mxfront-production-main-{n}.vla.yp-c.yandex.net {ts}-{yx}"],
    "qq": ["smtp;250 OK: queued as.", "smtp;250 Mail OK queued as mx{n}"],
    "mimecast": ["smtp;250 2.0.0 Ok {ts}-{mc}"],
    "proofpoint": ["smtp;250 2.0.0 {pp} Message accepted for delivery"],
    "barracuda": ["smtp;250 Ok: queued as {q}"],
    "postfix": ["smtp;250 2.0.0 Ok: queued as {pq}", "smtp;250 2.0.0 Ok: queued as {q}"],
    "exim": ["smtp;250 OK id={exim}"],
    "exchange": ["smtp;250 2.6.0 {mid} [InternalId={iid}, Hostname=EXCH0{n1}.{dom}] Queued mail for delivery"],
}
SUCCESS["workspace"] = SUCCESS["gmail"]

_NETWORK: list[tuple[str, str, bool]] = [
    ("4.4.1", "ETIMEDOUT in connection to {dom} ({ip})", True),
    ("4.4.1", "ECONNREFUSED connecting to {dom} ({ip})", True),
    ("4.4.2", "EDISCON in connection to {dom} ({ip})", True),
    ("4.4.1", "smtp;421 4.4.1 Connection timed out", True),
]
"""PMTA's own connection failures (pmta-formats.md §4.1): any host, no `smtp;` before PMTA's own text."""
TRANSIENT: dict[str, list[tuple[str, str, bool]]] = {  # (enhanced code, dsnDiag, queue-wide)
    "gmail": [
        ("4.7.28", "smtp;421-4.7.28 [{src}      15] Gmail has detected an unusual rate of unsolicited mail originating "
         "from your IP address. To protect our users from spam, mail sent from your IP address has been temporarily "
         "rate limited. For more information, go to 421 4.7.28 https://support.google.com/mail/?p=UnsolicitedRateLimi"
         "tError to review our Bulk Email Senders Guidelines." + _G, True),
        ("4.7.28", "smtp;421-4.7.28 [{sdom}      15] Gmail has detected an unusual rate of unsolicited mail "
         "originating from your SPF domain. To protect our users from spam, mail sent from your domain has "
         "been temporarily rate limited." + _G, True),
        ("4.7.28", "smtp;421-4.7.28 [{sdom}      15] Gmail has detected an unusual rate of unsolicited mail "
         "originating from your DKIM domain. To protect our users from spam, mail sent from your domain has "
         "been temporarily rate limited." + _G, True),
        ("4.7.28", "smtp;421-4.7.28 Gmail has detected an unusual rate of unsolicited mail containing one of your URL "
         "domains. To protect our users from spam, mail containing your URL domains has been temporarily rate "
         "limited." + _G, False),
        ("4.7.0", "smtp;421-4.7.0 [{src}      15] This message is suspicious due to the very low reputation of the "
         "sending IP address. To protect our users from spam, mail sent from your IP address has been temporarily "
         "rate limited." + _G, True),
        ("4.2.2", "smtp;452-4.2.2 The recipient's inbox is out of storage space. Please direct the recipient to 452 "
         "4.2.2 https://support.google.com/mail/?p=OverQuotaTemp" + _G, False),
        ("4.2.2", "smtp;452-4.2.2 The recipient's inbox is out of storage space. Please direct the recipient to 452 "
         "4.2.2 https://support.google.com/mail/?p=OverQuotaTemp" + _G, False),
        ("4.2.1", "smtp;450-4.2.1 The user you are trying to contact is receiving mail too quickly. Please resend your "
         "message at a later time. If the user is able to receive mail at that time, your message will be "
         "delivered." + _G, False),
        ("4.3.0", "smtp;421 4.3.0 Temporary System Problem.  Try again later (10)." + _G, True),
        ("4.4.5", "smtp;421 4.4.5 Server busy, try again later." + _G, True),
        ("4.7.30", "smtp;421-4.7.30 Your email has been rate limited because DKIM authentication didn't pass for this "
         "message. Gmail requires all bulk email senders to authenticate with DKIM. 421 4.7.30 DKIM = did not pass"
         + _G, False),
        ("4.7.26", "smtp;421-4.7.26 This mail has been rate limited because it is unauthenticated. Gmail requires all "
         "senders to authenticate with either SPF or DKIM. Authentication results: DKIM = did not pass SPF [{sdom}] "
         "with ip: [{src}] = did not pass" + _G, False),
    ],
    "yahoo": [
        ("4.7.0", "smtp;421 4.7.0 [TSS04] Messages from {src} temporarily deferred due to unexpected volume or user "
         "complaints - 4.16.55.1; see https://postmaster.yahooinc.com/error-codes", True),
        ("4.7.0", "smtp;421 4.7.0 [TSS05] Messages from {src} temporarily deferred due to unexpected volume or user "
         "complaints - 4.16.55.1; see https://postmaster.yahooinc.com/error-codes", True),
        ("4.7.0", "smtp;421 4.7.0 [TS01] Messages from {src} temporarily deferred due to user complaints - "
         "4.16.55.1; see https://postmaster.yahooinc.com/error-codes", True),
        ("4.7.0", "smtp;421 4.7.0 [TS02] Messages from {src} temporarily deferred due to unexpected volume - "
         "4.16.56.1; see https://postmaster.yahooinc.com/error-codes", True),
        ("4.0.0", "smtp;451 Resources temporarily unavailable. Please try again later [#4.16.1].", False),
        ("4.0.0", "smtp;421 Max message per connection reached, closing transmission channel", True),
        ("4.0.0", "smtp;450 User is receiving mail too quickly", False),
        ("4.2.2", "smtp;452 4.2.2 Mailbox over quota", False),
    ],
    "microsoft": [
        ("4.7.650", "smtp;451 4.7.650 The mail server [{src}] has been temporarily rate limited due to IP reputation. "
         "For e-mail delivery information, see https://aka.ms/postmaster (S775)" + _MS, True),
        ("4.7.651", "smtp;451 4.7.651 The mail server [{src}] has been temporarily rate limited due to IP reputation. "
         "For e-mail delivery information, see https://postmaster.live.com (S3114)" + _MS, True),
        ("4.7.652", "smtp;451 4.7.652 The mail server [{src}] has exceeded the maximum number of connections. "
         "(S3115)" + _MS, True),
        ("4.7.500", "smtp;451 4.7.500 Server busy. Please try again later from [{src}]. (S77719)" + _MS, True),
        ("4.0.0", "smtp;421 RP-001 (BAY004-MC1F{n}) Unfortunately, some messages from {src} weren't sent. Please try "
         "again. We have limits for how many messages can be sent per hour and per day. You can also refer to "
         "http://mail.live.com/mail/troubleshooting.aspx#errors.", True),
        ("4.0.0", "smtp;421 RP-002 (COL004-MC6F{n}) Unfortunately, some messages from {src} weren't sent. Please try "
         "again. We have limits for how many messages can be sent per hour and per day.", True),
        ("4.2.2", "smtp;452 4.2.2 The recipient's mailbox is full and can't accept messages now." + _MS, False),
    ],
    "m365": [
        ("4.7.500", "smtp;451 4.7.500 Server busy. Please try again later from [{src}]. (S77714)" + _MS, True),
        ("4.4.4", "smtp;451 4.4.4 Mail received as unauthenticated, incoming to a recipient domain configured in a "
         "hosted tenant which has no mail-enabled subscriptions. ATTR5" + _MS, False),
        ("4.7.0", "smtp;451 4.7.0 Temporary server error. Please try again later. PRX{n1}" + _MS, False),
        ("4.3.1", "smtp;452 4.3.1 Insufficient system resources (TrRaw)" + _MS, True),
    ],
    "apple": [
        ("4.7.1", "smtp;421 4.7.1 Messages to {rcpt} deferred due to excessive volume. Try again later - "
         "https://support.apple.com/en-us/HT204137", False),
        ("4.7.1", "smtp;451 4.7.1 Service unavailable - try again later", True),
        ("4.3.0", "smtp;451 4.3.0 [BS02] Temporary server error. Please try again later", True),
        ("4.7.0", "smtp;421 4.7.0 [HCM1] Your mail from {src} was deferred. Try again later - "
         "https://support.apple.com/en-us/HT204137", True),
        ("4.2.2", "smtp;452 4.2.2 <{rcpt}>: user is over quota", False),
    ],
    "comcast": [
        ("4.1.0", "smtp;421 4.1.0 {src} Throttled - try again later. Please see "
         "https://postmaster.comcast.net/smtp-error-codes.php#RL000003", True),
        ("4.0.0", "smtp;421 {cc} comcast {src} Too many sessions opened. Please see "
         "https://postmaster.comcast.net/smtp-error-codes.php#RL000001", True),
        ("4.0.0", "smtp;421 {cc} comcast {src} Reverse DNS failure : Try again later", True),
    ],
    "gmx": [
        ("4.0.0", "smtp;421-{dom} (mxgmx{n}) Nemesis ESMTP Service not available 421-Reject due to policy "
         "restrictions. 421 Too many messages have been received in a short period of time, please reduce the "
         "sending rate", True),
        ("4.0.0", "smtp;421 {dom} (mxweb{n}) Nemesis ESMTP Service not available Rate limit reached", True),
        ("4.0.0", "smtp;450 {dom} (mxgmx{n}) Nemesis ESMTP Service not available Reject due to policy violations. "
         "For explanation visit https://postmaster.gmx.net/en/case?c=t0101&i=ip&v={src}&r={hex}", True),
    ],
    "orange": [
        ("4.0.0", "smtp;421 mwinf5c{n} ME Service refuse. Veuillez essayer plus tard. Service refused, please try "
         "later. OFR004_104 [104]", True),
        ("4.0.0", "smtp;421 mwinf5c{n} ME Trop de connexions, veuillez verifier votre configuration. Too many "
         "connections, slow down. OFR005_102 [102]", True),
    ],
    "tonline": [("4.7.0", "smtp;421 4.7.0 Temporary local problem - please try later ({hex})", True)],
    "mailru": [("4.0.0", "smtp;421 ratelimit exceeded, please try later. https://help.mail.ru/mail/postmaster", True),
               ("4.0.0", "smtp;451 Try again later (in reply to RCPT TO command) {hex}", False)],
    "yandex": [("4.7.1", "smtp;451 4.7.1 Sorry, the service is currently unavailable. Please come back later. "
                "{ts}-{yx}", True)],
    "qq": [("4.0.0", "smtp;451 Mailbox has exceeded the limit. http://service.exmail.qq.com/cgi-bin/help?subtype=1&&"
            "id=20022&&no=1000729", False)],
    "mimecast": [("4.0.0", "smtp;451 Internal resource temporarily unavailable - " + _MC.replace("{code}", "451"),
                  False),
                 ("4.4.0", "smtp;451 4.4.0 Message rejected: Greylisting in action, please come back later - "
                  + _MC.replace("{code}", "451"), False)],
    "proofpoint": [("4.3.2", "smtp;421 4.3.2 Service not available, closing transmission channel", True),
                   ("4.7.1", "smtp;450 4.7.1 <{rcpt}>: Recipient address rejected: Try again later", False)],
    "barracuda": [("4.7.1", "smtp;450 4.7.1 Recipient address rejected: too many recipients from {src} "
                   "(BCid{hex})", False)],
    "postfix": [
        ("4.7.1", "smtp;450 4.7.1 <{rcpt}>: Recipient address rejected: Greylisted, see "
         "http://postgrey.schweikert.ch/help/{dom}.html", False),
        ("4.3.0", "smtp;451 4.3.0 <{rcpt}>: Temporary lookup failure", False),
        ("4.3.0", "smtp;421 4.3.0 {mx} Service not available, closing transmission channel", True),
        ("4.2.2", "smtp;452 4.2.2 <{rcpt}>: Recipient address rejected: Mailbox full", False),
        ("4.4.2", "smtp;421 4.4.2 {mx} Error: timeout exceeded", True),
        ("4.7.1", "smtp;454 4.7.1 <{rcpt}>: Relay access denied", False),
    ],
    "exim": [
        ("4.0.0", "smtp;451 Temporary local problem - please try later", False),
        ("4.7.1", "smtp;451 4.7.1 Greylisting in action, please come back in 00:05:00", False),
        ("4.2.2", "smtp;452 4.2.2 Quota exceeded ({rcpt})", False),
        ("4.0.0", "smtp;421 {mx} lost input connection", True),
    ],
    "exchange": [
        ("4.7.0", "smtp;451 4.7.0 Temporary server error. Please try again later. PRX{n1}", False),
        ("4.3.1", "smtp;452 4.3.1 Insufficient system resources", True),
        ("4.4.0", "smtp;451 4.4.0 Primary target IP address responded with: \"421 4.4.2 Connection dropped due to "
         "SocketError.\" Attempted failover to alternate host, but that did not succeed.", True),
    ],
}
TRANSIENT["workspace"] = TRANSIENT["gmail"][5:9]
DEFER_CHANCE = {"yahoo": 0.18, "mimecast": 0.15, "postfix": 0.13, "exim": 0.13, "gmail": 0.08, "workspace": 0.06,
                "microsoft": 0.09, "m365": 0.07}
"""The share of messages deferred at least once (Yahoo defers most; greylisting servers defer a first try)."""

BOUNCE_CATEGORIES: list[tuple[str, float]] = [
    ("bad-mailbox", 42), ("inactive-mailbox", 7), ("quota-issues", 8), ("policy-related", 8), ("spam-related", 9),
    ("content-related", 4), ("routing-errors", 2.5), ("no-answer-from-host", 2), ("message-expired", 4),
    ("bad-connection", 1.5), ("protocol-errors", 1.2), ("other", 3), ("relaying-issues", 1), ("invalid-sender", 0.8),
    ("bad-configuration", 0.5), ("virus-related", 0.5),
]
"""bounceCat of b records with a reply (bad-domain: the typo domains' own bounces); PMTA's 17 categories."""
_BOUNCE_CUM = list(itertools.accumulate(w for _, w in BOUNCE_CATEGORIES))
BOUNCES: dict[str, dict[str, list[tuple[str, str]]]] = {  # category -> family ("*": any) -> (enhanced, dsnDiag)
    "bad-mailbox": {
        "gmail": [("5.1.1", "smtp;550-5.1.1 The email account that you tried to reach does not exist. Please try "
                   "double-checking the recipient's email address for typos or unnecessary spaces. For more "
                   "information, go to 550 5.1.1  https://support.google.com/mail/?p=NoSuchUser" + _G)],
        "yahoo": [("5.0.0", "smtp;554 delivery error: dd This user doesn't have a {dom} account ({rcpt}) [-5] - {yh}"),
                  ("5.0.0", "smtp;552 1 Requested mail action aborted, mailbox not found")],
        "microsoft": [("5.5.0", "smtp;550 5.5.0 Requested action not taken: mailbox unavailable (S2017062302)." + _MS)],
        "m365": [("5.1.10", "smtp;550 5.1.10 RESOLVER.ADR.RecipientNotFound; Recipient {rcpt} not found by SMTP "
                  "address lookup" + _MS),
                 ("5.4.1", "smtp;550 5.4.1 Recipient address rejected: Access denied. AS(201806281)" + _MS)],
        "apple": [("5.1.1", "smtp;550 5.1.1 <{rcpt}>: user does not exist")],
        "comcast": [("5.1.1", "smtp;550 5.1.1 <{rcpt}> Not our Customer")],
        "gmx": [("5.0.0", "smtp;550 Requested action not taken: mailbox unavailable")],
        "mailru": [("5.0.0", "smtp;550 Message was not accepted -- invalid mailbox.  Local mailbox {rcpt} is "
                    "unavailable: user not found")],
        "yandex": [("5.7.1", "smtp;550 5.7.1 No such user!")],
        "orange": [("5.1.1", "smtp;550 5.1.1 <{rcpt}>: Recipient address rejected: User unknown in local recipient "
                    "table OFR_999 [999]")],
        "mimecast": [("5.0.0", "smtp;550 Invalid Recipient - " + _MC.replace("{code}", "550"))],
        "exim": [("5.0.0", "smtp;550 No Such User Here"), ("5.1.1", "smtp;550 5.1.1 <{rcpt}>: unknown user")],
        "exchange": [("5.1.10", "smtp;550 5.1.10 RESOLVER.ADR.RecipientNotFound; Recipient not found by SMTP address "
                      "lookup")],
        "*": [("5.1.1", "smtp;550 5.1.1 <{rcpt}>: Recipient address rejected: User unknown in virtual mailbox table"),
              ("5.1.1", "smtp;550 5.1.1 <{rcpt}>: Recipient address rejected: User unknown in local recipient table"),
              ("5.1.1", "smtp;550 5.1.1 <{rcpt}>... User unknown")],
    },
    "inactive-mailbox": {
        "gmail": [("5.2.1", "smtp;550-5.2.1 The email account that you tried to reach is inactive. For more "
                   "information, go to https://support.google.com/mail/?p=DisabledUser" + _G)],
        "yahoo": [("5.0.0", "smtp;554 30 Sorry, your message to {rcpt} cannot be delivered. This mailbox is disabled "
                   "(554.30).")],
        "comcast": [("5.1.1", "smtp;550 5.1.1 <{rcpt}> Account Closed, Please Remove")],
        "*": [("5.2.1", "smtp;550 5.2.1 <{rcpt}>: Mailbox disabled, not accepting messages"),
              ("5.2.1", "smtp;550 5.2.1 {rcpt}: account is inactive")],
    },
    "quota-issues": {
        "gmail": [("5.2.2", "smtp;552-5.2.2 The recipient's inbox is out of storage space and inactive. Please direct "
                   "the recipient to https://support.google.com/mail/?p=OverQuotaPerm" + _G)],
        "apple": [("5.2.2", "smtp;552 5.2.2 <{rcpt}>: user is over quota")],
        "m365": [("5.2.2", "smtp;554 5.2.2 mailbox full; STOREDRV.Deliver.Exception:QuotaExceededException."
                  "MapiExceptionShutoffQuotaExceeded; Failed to process message due to a permanent exception with "
                  "message Cannot open mailbox" + _MS)],
        "gmx": [("5.0.0", "smtp;552 Requested mail action aborted: exceeded storage allocation")],
        "*": [("5.2.2", "smtp;552 5.2.2 {rcpt} mailbox full (queue id {q})"),
              ("5.2.2", "smtp;552 5.2.2 Quota exceeded (mailbox for user is full)")],
    },
    "policy-related": {
        "gmail": [("5.7.26", "smtp;550-5.7.26 This mail has been blocked because the sender is unauthenticated. Gmail "
                   "requires all senders to authenticate with either SPF or DKIM. Authentication results: DKIM = did "
                   "not pass SPF [{sdom}] with ip: [{src}] = did not pass" + _G),
                  ("5.7.1", "smtp;550-5.7.1 [{src}] Messages missing a valid Message-ID header are not accepted."
                   + _G)],
        "yahoo": [("5.7.9", "smtp;554 5.7.9 Message not accepted for policy reasons.  See "
                   "https://postmaster.yahooinc.com/error-codes")],
        "microsoft": [("5.7.515", "smtp;550 5.7.515 Access denied, sending domain [{sdom}] does not meet the required "
                       "authentication level." + _MS)],
        "apple": [("5.7.1", "smtp;550 5.7.1 [CS01] Message rejected due to local policy. Please visit "
                   "https://support.apple.com/en-us/HT204137"),
                  ("5.7.1", "smtp;550 5.7.1 Your message was rejected due to {sdom} DMARC policy")],
        "*": [("5.7.1", "smtp;554 5.7.1 <{rcpt}>: Recipient address rejected: Access denied"),
              ("5.7.1", "smtp;550 5.7.1 Client host rejected: cannot find your reverse hostname, [{src}]")],
    },
    "spam-related": {
        "gmail": [("5.7.1", "smtp;550-5.7.1 [{src}] Gmail has detected that this message is likely unsolicited mail. "
                   "To reduce the amount of spam sent to Gmail, this message has been blocked." + _G)],
        "yahoo": [("5.7.1", "smtp;553 5.7.1 [BL23] Connections will not be accepted from {src}, because the ip is in "
                   "Spamhaus's list; see https://postmaster.yahooinc.com/error-codes")],
        "microsoft": [("5.7.1", "smtp;550 5.7.1 Unfortunately, messages from [{src}] weren't sent. Please contact "
                       "your Internet service provider since part of their network is on our block list (S3150). You "
                       "can also refer your provider to http://mail.live.com/mail/troubleshooting.aspx#errors." + _MS)],
        "comcast": [("5.7.1", "smtp;554 5.7.1 {cc} comcast {src} Comcast block for spam.  Please see "
                     "http://postmaster.comcast.net/smtp-error-codes.php#BL000001")],
        "gmx": [("5.0.0", "smtp;554-{dom} (mxgmx{n}) Nemesis ESMTP Service not available 554-No SMTP service 554-IP "
                 "address is block listed. 554 For explanation visit https://postmaster.gmx.net/en/case?c=r0201&i=ip&"
                 "v={src}&r={hex}")],
        "yandex": [("5.7.1", "smtp;554 5.7.1 [2] Message rejected under suspicion of SPAM; https://ya.cc/1IrBc {ts}-"
                    "{yx}")],
        "mailru": [("5.0.0", "smtp;550 spam message rejected. Please visit http://help.mail.ru/notspam-support/id?c="
                    "{hex} or report details to abuse@corp.mail.ru. Error code: {hex}. ID: {q}.")],
        "mimecast": [("5.0.0", "smtp;554 Email rejected due to security policies - " + _MC.replace("{code}", "554"))],
        "*": [("5.7.1", "smtp;554 5.7.1 Service unavailable; Client host [{src}] blocked using zen.spamhaus.org"),
              ("5.7.1", "smtp;554 5.7.1 Service unavailable; Client host [{src}] blocked using "
               "b.barracudacentral.org")],
    },
    "content-related": {
        "gmail": [("5.7.0", "smtp;552-5.7.0 This message was blocked because its content presents a potential "
                   "security issue. To review our message content and attachment content guidelines, go to "
                   "https://support.google.com/mail/?p=BlockedMessage" + _G)],
        "yahoo": [("5.0.0", "smtp;554 Message not allowed - [PH01] Email not accepted for policy reasons. Please "
                   "visit https://postmaster.yahooinc.com/error-codes")],
        "*": [("5.7.1", "smtp;550 5.7.1 Message content rejected, UBE, id={q}"),
              ("5.7.1", "smtp;554 5.7.1 Message rejected, spam score too high ({n}.{n1})")],
    },
    "routing-errors": {
        "m365": [("5.4.6", "smtp;554 5.4.6 Hop count exceeded - possible mail loop ATTR34" + _MS)],
        "*": [("5.4.4", "smtp;554 5.4.4 [internal] Domain Lookup Failed"),
              ("5.4.0", "smtp;550 5.4.0 Unable to route to the destination mail server for {dom}")],
    },
    "no-answer-from-host": {"*": [("4.4.1", "ETIMEDOUT in connection to {dom} ({ip})"),
                                  ("4.4.1", "ECONNREFUSED connecting to {dom} ({ip})")]},
    "bad-connection": {"*": [("4.4.2", "EDISCON in connection to {dom} ({ip})"),
                             ("4.4.2", "smtp;421 4.4.2 {mx} Error: timeout exceeded")]},
    "protocol-errors": {"*": [("5.5.2", "smtp;500 5.5.2 Error: bad syntax"),
                              ("5.5.1", "smtp;503 5.5.1 Error: need RCPT command"),
                              ("5.6.0", "smtp;554 5.6.0 Message contains invalid header")]},
    "other": {"*": [("5.0.0", "smtp;550 No such person at this address."), ("5.0.0", "smtp;554 Transaction failed"),
                    ("5.0.0", "smtp;550 Administrative prohibition")]},
    "relaying-issues": {"m365": [("5.7.64", "smtp;550 5.7.64 TenantAttribution; Relay Access Denied" + _MS)],
                        "*": [("5.7.1", "smtp;554 5.7.1 <{rcpt}>: Relay access denied")]},
    "invalid-sender": {"*": [("5.1.8", "smtp;553 5.1.8 <{sender}>: Sender address rejected: Domain not found"),
                             ("5.7.1", "smtp;550 5.7.1 <{sender}>: Sender address rejected: not owned by user")]},
    "bad-configuration": {"*": [("5.3.5", "smtp;554 5.3.5 Local configuration error")]},
    "virus-related": {"mimecast": [("5.0.0", "smtp;550 Virus detected - " + _MC.replace("{code}", "550"))],
                      "*": [("5.7.0", "smtp;554 5.7.0 Reject, id={n}-0{n1} - INFECTED: Win.Trojan.Agent-{hex}")]},
}
_FAMILY_PARENT = {"workspace": "gmail"}
"""Whose bounce texts a family takes when it has none of its own (before the generic ones)."""

REMOTE_BOUNCE_CHANCE = {"m365": 0.004, "exchange": 0.008, "mimecast": 0.006, "proofpoint": 0.006, "barracuda": 0.005,
                        "postfix": 0.002, "exim": 0.003, "workspace": 0.001, "yahoo": 0.0003}
"""The share of accepted messages that bounce later (an rb record): corporate domains whose gateway or MX accepts
mail the mailbox server then refuses."""
REMOTE_BOUNCES: list[tuple[str, str, str]] = [  # (enhanced, bounceCat, dsnDiag)
    ("5.1.1", "bad-mailbox", "smtp;550 5.1.1 <{rcpt}>: Recipient address rejected: User unknown in local recipient "
     "table"),
    ("5.1.10", "bad-mailbox", "smtp;550 5.1.10 RESOLVER.ADR.RecipientNotFound; Recipient not found by SMTP address "
     "lookup"),
    ("5.2.2", "quota-issues", "smtp;554 5.2.2 mailbox full; STOREDRV.Deliver.Exception:QuotaExceededException."
     "MapiExceptionShutoffQuotaExceeded; Failed to process message due to a permanent exception"),
    ("5.2.1", "inactive-mailbox", "smtp;550 5.2.1 <{rcpt}>: mailbox is disabled"),
    ("5.7.1", "policy-related", "smtp;550 5.7.1 RESOLVER.RST.AuthRequired; authentication required"),
    ("5.4.14", "routing-errors", "smtp;554 5.4.14 Hop count exceeded - possible mail loop ATTR34"),
    ("5.7.1", "spam-related", "smtp;550 5.7.1 Message rejected as spam by Content Filtering."),
]
_RB_CUM = list(itertools.accumulate((50, 15, 12, 8, 6, 3, 6)))

INVALID_MARK = "@@E4@@"
"""Stands for the byte 0xE4 until the file is written (latin-1 `ä`, invalid as UTF-8)."""

_LETTERS = "abcdefghijklmnopqrstuvwxyz"
_ALNUM = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"


def gmail_id(rng: random.Random) -> str:
    """Gmail's per-message reply id, e.g. `s142si14934335lfe.256`."""
    return (f"{rng.choice(_LETTERS)}{rng.randrange(1000)}si{rng.randrange(10**8)}"
            f"{rng.choice(_LETTERS)}{rng.choice(_LETTERS)}{rng.choice(_LETTERS)}.{rng.randrange(400)}")


def _q(text: str) -> str:
    return '"' + text.replace('"', '""') + '"' if ("," in text or '"' in text) else text


def _iso(ts: float) -> str:
    return _iso_second(int(ts))


@functools.lru_cache(maxsize=8192)
def _iso_second(second: int) -> str:
    """A second's text, once: a message's clock moves 0.01 s, so ~100 messages share each."""
    return time.strftime("%Y-%m-%d %H:%M:%S+0000", time.gmtime(second))


class _Fill(dict[str, str]):
    """A message's template values; per-message ids are drawn the first time a template asks for them."""

    __slots__ = ("make",)

    def __missing__(self, key: str) -> str:
        value = self.make[key]()
        self[key] = value
        return value


def _pick(table: dict[str, list[tuple[str, str]]], family: str) -> list[tuple[str, str]]:
    return table.get(family) or table.get(_FAMILY_PARENT.get(family, "*")) or table["*"]


class _Gen:
    """One deterministic stream of recipients; each yields its d/b/t/tq records and maybe an f or an rb."""

    def __init__(self, seed: int, start: float, invalid_at: int, complaint_rate: float = 0.004) -> None:
        self.complaint_rate = complaint_rate
        """Complaints as a share of all deliveries (0.4%: a sender near the mailbox providers' limits). Only the
        providers with a feedback loop send them, so each of their deliveries draws one with this rate divided by
        their share of the mail (1.0 and above: every delivery to them)."""
        self.fbl_chance = min(1.0, complaint_rate / fbl_share())
        self.rng = random.Random(seed)
        self.clock = start
        self.n = 0
        self.invalid_at = invalid_at
        self.domains, self.cum = domains()
        self.seen_domains: set[str] = set()
        self.seen_mx: set[str] = set()
        self.seen_vmtas: set[int] = set()
        self.categories: dict[str, int] = {}
        """What the stream has written so far (the manifest's summary)."""
        self.vmta_cum = vmta_weights()
        rng = self.rng
        self.make: dict[str, Callable[[], str]] = {
            "gid": lambda: gmail_id(rng),
            "q": lambda: f"{rng.randrange(16**10):010X}",
            "pq": lambda: "4" + "".join(rng.choices(_ALNUM, k=13)),
            "exim": lambda: f"1t{''.join(rng.choices(_ALNUM, k=4))}-00{''.join(rng.choices(_ALNUM, k=4))}-"
                            f"{''.join(rng.choices(_ALNUM, k=2))}",
            "msft": lambda: f"{rng.choice(('BN8NAM12', 'DM6NAM10', 'AM7EUR03', 'DB8EUR05', 'SY4AUS01'))}FT"
                            f"{rng.randrange(1000):03d}.eop-{rng.choice(('nam12', 'nam10', 'eur03', 'eur05'))}.prod."
                            "protection.outlook.com",
            "iid": lambda: str(rng.randrange(10**12, 10**13)),
            "mc": lambda: f"{''.join(rng.choices(_ALNUM, k=22))}.{rng.choice(('us', 'eu', 'uk', 'au'))}"
                          f"{rng.randrange(1000)}",
            "pp": lambda: f"{''.join(rng.choices('0123456789abcdefghijklmnopqrstuvwxyz', k=10))}-1",
            "n": lambda: str(rng.randrange(10, 999)),
            "n1": lambda: str(rng.randrange(1, 9)),
            "hex": lambda: f"{rng.randrange(16**8):08x}",
            "cid": lambda: "".join(rng.choices(_ALNUM, k=14)),
            "cc": lambda: f"resimta-{rng.choice(('h1p', 'po', 'ch2'))}-{rng.randrange(10**6):06d}.sys.comcast.net",
            "yh": lambda: f"mta{rng.randrange(5, 8)}.am0.yahoodns.net",
            "yx": lambda: "".join(rng.choices(_ALNUM, k=10)) + "-" + "".join(rng.choices(_ALNUM, k=8)),
            "kbs": lambda: f"{rng.uniform(5, 900):.3f}",
        }

    def _fill(self, **values: str) -> _Fill:
        fill = _Fill(values)
        fill.make = self.make
        return fill

    def message(self) -> tuple[list[str], list[str], list[str], list[str]]:
        """(acct lines, diag lines, fbl lines, bounce lines) of one recipient of one message."""
        rng = self.rng
        self.n += 1
        n = self.n
        self.clock += 0.01
        dom = rng.choices(self.domains, cum_weights=self.cum)[0]
        v = rng.choices(range(VMTAS), cum_weights=self.vmta_cum)[0]
        vmta, pool = f"vmta-{v:03d}", f"pool-{v % POOLS}"
        src = f"10.1.{v // 250}.{v % 250}"
        sdom = f"sender{n % 23}.example"
        sender = f"news@{sdom}"
        user = f"user{rng.randrange(10**7)}.{n}"
        rcpt = f"{user}@{dom.name}"
        job = f"job-{n // 5000}"
        env = f"env{n:09d}"
        mid = f"<{n:x}.{rng.randrange(10**9):x}@mailer.{sdom}>"
        tq = self.clock
        acct: list[str] = []
        diag: list[str] = []
        fbl: list[str] = []
        rb: list[str] = []
        t = tq
        queue = f"{dom.name}/{vmta}"
        family = dom.family
        if dom.mx:
            host, ipp = dom.mx[0] if len(dom.mx) == 1 or rng.random() < 0.8 else rng.choice(dom.mx[1:])
            ip = ipp if dom.ips else f"{ipp}.{rng.randrange(256)}.{rng.randrange(256)}"
            mxip = f"{host} ({ip})"
        else:
            host = ip = mxip = ""
        self.seen_domains.add(dom.name)
        self.seen_mx.add(host)
        self.seen_vmtas.add(v)
        fill = self._fill(src=src, rcpt=rcpt, user=user, dom=dom.name, sender=sender, sdom=sdom, mx=host, ip=ip,
                          mid=mid)
        size = str(rng.randrange(2000, 90000))
        fill["size"] = size
        fill["ts"] = str(int(t))
        invalid = n == self.invalid_at
        if invalid or not dom.mx:
            outcome = "b"
            cat = "bad-mailbox" if invalid else "bad-domain"
        elif rng.random() < 0.032:
            outcome = "b"
            cat = BOUNCE_CATEGORIES[_bisect(_BOUNCE_CUM, rng.random() * _BOUNCE_CUM[-1])][0]
        else:
            outcome, cat = "d", "success"
        deferrals = 0
        if cat in ("message-expired", "no-answer-from-host", "bad-connection"):
            deferrals = 2 + rng.randrange(3)
        elif dom.mx and rng.random() < DEFER_CHANCE.get(family, 0.1):
            deferrals = 1 + (rng.random() < 0.3) + (rng.random() < 0.1)
        text = enh = ""
        for _ in range(deferrals):
            t += rng.uniform(30, 900) if cat != "message-expired" else rng.uniform(900, 5400)
            fill["ts"] = str(int(t))
            if cat in ("no-answer-from-host", "bad-connection") or rng.random() < 0.08:
                enh, template, queue_wide = rng.choice(_NETWORK)
            else:
                enh, template, queue_wide = rng.choice(TRANSIENT.get(family) or TRANSIENT["postfix"])
            text = template.format_map(fill)
            diag.append(",".join(["t", _iso(t), _iso(tq), sender, rcpt, "delayed", _q(status(enh)), _q(text),
                                  _q(mxip), "", src, ip, vmta, job, env, queue, pool]))
            if queue_wide and rng.random() < 0.15:  # the whole queue deferred: PMTA writes a tq record too
                diag.append(",".join(["tq", _iso(t), "", "", "", "delayed", _q(status(enh)), _q(text), _q(mxip), "",
                                      src, ip, vmta, "", "", queue, pool]))
        t += rng.uniform(0.2, 20)
        head = [_iso(t), _iso(tq), sender, rcpt, f"rfc822;{rcpt}"]
        tail = ["smtp", "app.internal (10.0.0.5)", "smtp", src, ip, '"PIPELINING,8BITMIME,SIZE,STARTTLS,'
                'ENHANCEDSTATUSCODES"' if dom.mx else "", size, vmta, job, env, queue, pool, mid]
        if outcome == "b":
            if invalid:  # a German MX answering in latin-1
                enh, text = "5.1.1", f"smtp;550 5.1.1 <{rcpt}>: Empf{INVALID_MARK}nger unbekannt"
            elif cat == "bad-domain":
                enh, text = "5.1.2", ""
            elif cat == "message-expired":
                enh = "4.4.7"  # text: the last deferral's, as PMTA writes it
            else:
                enh, template = rng.choice(_pick(BOUNCES[cat], family))
                text = template.format_map(fill)
            acct.append(",".join(["b", *head, "failed", _q(status(enh)), _q(text), _q(mxip), cat, *tail]))
            self.categories[cat] = self.categories.get(cat, 0) + 1
            return acct, diag, fbl, rb
        fill["ts"] = str(int(t))
        ok = rng.choice(SUCCESS.get(family) or SUCCESS["postfix"]).format_map(fill)
        acct.append(",".join(["d", *head, "relayed", "2.0.0 (success)", _q(ok), _q(mxip), "success", *tail]))
        if dom.fbl is not None and rng.random() < self.fbl_chance:
            agent, reporter = dom.fbl
            kind = "abuse" if rng.random() < 0.98 else rng.choice(("not-spam", "other"))
            fbl.append(",".join(["f", _iso(t + rng.uniform(300, 7200)), sender, rcpt, kind, agent, reporter, mid]))
        elif rng.random() < REMOTE_BOUNCE_CHANCE.get(family, 0.0):
            enh, rcat, template = REMOTE_BOUNCES[_bisect(_RB_CUM, rng.random() * _RB_CUM[-1])]
            inner = f"mail{rng.randrange(1, 4)}.{dom.name}"
            rb.append(",".join(["rb", _iso(t + rng.uniform(60, 3600)), sender, rcpt, "failed", _q(status(enh)),
                                _q(template.format_map(fill)), f"{inner} (10.{n % 250}.0.25)", rcat, f"dns; {inner}",
                                ip, mid]))
        return acct, diag, fbl, rb


def _bisect(cum: list[float], x: float) -> int:
    lo, hi = 0, len(cum) - 1
    while lo < hi:
        mid = (lo + hi) // 2
        if cum[mid] <= x:
            lo = mid + 1
        else:
            hi = mid
    return lo


MANIFEST = "manifest.json"


def parameters(lines: int, files: int = 4, seed: int = 7, complaint_rate: float = 0.004) -> dict[str, object]:
    """What decides a corpus's bytes: compared with a directory's manifest before reusing its files."""
    return {"generator_version": GENERATOR_VERSION, "lines": lines, "files": files, "seed": seed,
            "complaint_rate": complaint_rate}


def make_corpus(directory: Path, lines: int = 250_000, files: int = 4, seed: int = 7,
                complaint_rate: float = 0.004) -> dict[str, int]:
    """Write acct-*.csv (one with CRLF), diag-*.csv, fbl-*.csv and bounce-*.csv totalling about `lines` records,
    and `manifest.json` (the parameters, the generator version, the counts). Returns the counts: records per file
    kind (acct, diag, fbl, rb) and in all (lines)."""
    directory.mkdir(parents=True, exist_ok=True)
    start = (time.time() // 86400 - 2) * 86400  # recent: within the correlator's default retention
    gen = _Gen(seed, start=start, invalid_at=lines // 3, complaint_rate=complaint_rate)
    acct: list[list[str]] = [[] for _ in range(files)]
    diag: list[str] = []
    fbl: list[str] = []
    rb: list[str] = []
    total = 0
    while total < lines:
        a, d, f, r = gen.message()
        acct[gen.n % files] += a
        diag += d
        fbl += f
        rb += r
        total += len(a) + len(d) + len(f) + len(r)
    written = []
    for i, rows in enumerate(acct):
        eol = "\r\n" if i == 1 else "\n"
        body = (eol.join([ACCT_HEADER, *rows]) + eol).encode().replace(INVALID_MARK.encode(), b"\xe4")
        path = directory / f"acct-{DAY}-{i:04d}.csv"
        path.write_bytes(body)
        written.append(path.name)
    for kind, rows in (("diag", diag), ("fbl", fbl), ("bounce", rb)):
        path = directory / f"{kind}-{DAY}-0000.csv"
        path.write_text("\n".join([HEADERS[kind], *rows]) + "\n")
        written.append(path.name)
    counts = {"lines": total, "acct": sum(map(len, acct)), "diag": len(diag), "fbl": len(fbl), "rb": len(rb)}
    types = {"d": 0, "b": 0, "t": 0, "tq": 0, "f": len(fbl), "rb": len(rb)}
    for row in itertools.chain(*acct, diag):
        types[row[:row.index(",")]] += 1
    manifest = {**parameters(lines, files, seed, complaint_rate), "start": start, "written": written,
                "sources": {kind: list(records) for kind, records in RECORDS.items()}, "counts": counts,
                "records_by_type": types, "recipient_domains": len(gen.seen_domains),
                "mx_hosts": len(gen.seen_mx - {""}), "vmtas": len(gen.seen_vmtas),
                "bounce_categories": dict(sorted(gen.categories.items()))}
    (directory / MANIFEST).write_text(json.dumps(manifest, indent=1) + "\n")
    return counts


def _ours(name: str) -> bool:
    """Whether a file name is one make_corpus writes (any version)."""
    return re.fullmatch(r"(acct|diag|fbl|bounce)-\d{4}-\d\d-\d\d-\d{4}\.csv", name) is not None


def stale(directory: Path, lines: int, files: int = 4, seed: int = 7, complaint_rate: float = 0.004) -> str | None:
    """Why the corpus in `directory` is not the one these parameters write (None: it is, reuse it): no corpus, no
    manifest, other parameters or generator version, files other than the manifest's, or records so old they would
    fall out of the correlator's 7-day retention."""
    wanted = parameters(lines, files, seed, complaint_rate)
    csvs = sorted(p.name for p in directory.glob("*.csv"))
    if not csvs:
        return "no corpus there"
    if not (directory / MANIFEST).exists():
        return "no manifest.json (written before the generator kept one)"
    manifest = json.loads((directory / MANIFEST).read_text())
    have = {key: manifest.get(key) for key in wanted}
    if have != wanted:
        return "written with " + ", ".join(f"{k}={have[k]}" for k in wanted if have[k] != wanted[k])
    missing = [key for key in ("start", "written", "sources", "records_by_type") if key not in manifest]
    if missing:
        return "its manifest lacks " + ", ".join(missing)
    if time.time() - float(manifest["start"]) > 4 * 86400:
        return "older than 4 days (its timelines would leave the correlator's 7-day retention)"
    if csvs != sorted(manifest.get("written", [])):
        return "its files differ from the manifest's list"
    return None


def ensure(directory: Path, lines: int, files: int = 4, seed: int = 7, complaint_rate: float = 0.004) -> str | None:
    """The corpus of these parameters in `directory`: reused when stale() finds nothing against it, else the old one
    removed (its CSV files, the manifest and the JSON copies bench_json.py made of them in DIR/json) and written again.
    Refuses (SystemExit) to remove CSV files make_corpus does not write. Returns why it was written (None: reused)."""
    directory.mkdir(parents=True, exist_ok=True)
    reason = stale(directory, lines, files, seed, complaint_rate)
    if reason is None:
        return None
    csvs = sorted(directory.glob("*.csv"))
    foreign = [p.name for p in csvs if not _ours(p.name)]
    if foreign:
        raise SystemExit(f"{directory} holds CSV files bench/corpus.py did not write ({', '.join(foreign[:5])}): "
                         "refusing to replace its corpus; use another directory")
    for path in csvs:
        path.unlink()
        (directory / "json" / (path.stem + ".json")).unlink(missing_ok=True)
    (directory / MANIFEST).unlink(missing_ok=True)
    make_corpus(directory, lines, files, seed, complaint_rate)
    return reason


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("directory", type=Path)
    ap.add_argument("--lines", type=int, default=250_000)
    ap.add_argument("--complaint-rate", type=float, default=0.004,
                    help="complaints as a share of all deliveries; only providers with a feedback loop send them "
                         "(~35%% of the mail), so from ~0.35 on every delivery to them draws one")
    ap.add_argument("--reuse", action="store_true",
                    help="keep the corpus in DIRECTORY when its manifest.json names this generator version and these "
                         "parameters; else remove it (only files this script writes) and write it again")
    args = ap.parse_args()
    if not args.reuse:
        print(make_corpus(args.directory, args.lines, complaint_rate=args.complaint_rate))
        return 0
    reason = ensure(args.directory, args.lines, complaint_rate=args.complaint_rate)
    if reason is not None:
        print(f"corpus in {args.directory}: {reason}; written again (generator v{GENERATOR_VERSION}, {args.lines:,} "
              f"lines, complaint rate {args.complaint_rate})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
