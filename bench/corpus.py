"""A realistic PMTA accounting corpus for the whole-process benchmark (bench_e2e.py).

Shaped like a stock install (acct + diag + fbl files, see examples/watchtower.yml) and varied the
way real traffic is, because that is what makes classification keys nearly unique:
* `dsnMta` carries the MX host *and its IP*, and the IP varies per connection;
* replies carry per-message ids (Gmail's `s142si14934335lfe.256 - gsmtp`, queue ids) and often
  the recipient address;
* every acct line carries a `header_Message-Id`, a jobId and an envId, so the correlator links;
* one file is written with CRLF line ends, and one record's dsnDiag holds an invalid UTF-8 byte
  (`Empf\\xe4nger unbekannt`, a latin-1 reply from a German MX).

Run alone to write a corpus: `python bench/corpus.py DIR [--lines N]`.
"""

from __future__ import annotations

import argparse
import functools
import itertools
import random
import time
from pathlib import Path

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

# (recipient domain, MX host, IP prefix, weight)
DOMAINS = [
    ("gmail.com", "gmail-smtp-in.l.google.com", "142.250", 30),
    ("yahoo.com", "mta6.am0.yahoodns.net", "67.195", 14),
    ("aol.com", "mx-aol.mail.gm0.yahoodns.net", "98.136", 4),
    ("hotmail.com", "hotmail-com.olc.protection.outlook.com", "52.101", 14),
    ("outlook.com", "outlook-com.olc.protection.outlook.com", "52.101", 6),
    ("icloud.com", "mx01.mail.icloud.com", "17.57", 6),
    ("comcast.net", "mx1.comcast.net", "96.114", 3),
    ("gmx.de", "mx00.emig.gmx.net", "212.227", 3),
    ("corp.example", "corp-example.mail.protection.outlook.com", "52.101", 4),
    ("startup.example", "aspmx.l.google.com", "142.251", 4),
    ("tiny.example", "mx.tiny.example", "203.0", 12),
]
_WEIGHTS = [d[3] for d in DOMAINS]
_CUM_WEIGHTS = list(itertools.accumulate(_WEIGHTS))
"""What `choices(weights=)` accumulates on every call: the same draws, without the per-call sum."""
TRANSIENT = {
    "gmail.com": [
        ("4.7.28 (delivery not authorized, message refused)",
         "smtp;421-4.7.28 [{src} 15] Our system has detected an unusual rate of unsolicited mail originating from "
         "your IP address. To protect our users from spam, mail sent from your IP address has been temporarily "
         "rate limited. {gid} - gsmtp"),
        ("4.2.2 (mailbox full)", "smtp;452-4.2.2 The email account that you tried to reach is over quota. "
         "{gid} - gsmtp"),
        ("4.2.1 (mailbox disabled, not accepting messages)",
         "smtp;450-4.2.1 The user you are trying to contact is receiving mail too quickly. {gid} - gsmtp"),
    ],
    "yahoo.com": [
        ("4.7.0 (delivery not authorized, message refused)",
         "smtp;421 4.7.0 [TSS04] Messages from {src} temporarily deferred due to unexpected volume or user "
         "complaints - 4.16.55.1; see https://postmaster.yahooinc.com/error-codes"),
    ],
    "*": [
        ("4.4.1 (no answer from host)", "smtp;421 4.4.1 Connection timed out"),
        ("4.3.0 (other or undefined mail system status)",
         "smtp;451 4.3.0 Temporary server error. Please try again later. PRX{q}"),
        ("4.2.2 (mailbox full)", "smtp;452 4.2.2 Mailbox full: {rcpt}"),
    ],
}
BOUNCES = {
    "gmail.com": [("5.1.1 (bad destination mailbox address)", "bad-mailbox",
                   "smtp;550-5.1.1 The email account that you tried to reach does not exist. {gid} - gsmtp")],
    "*": [
        ("5.1.1 (bad destination mailbox address)", "bad-mailbox", "smtp;550 5.1.1 <{rcpt}>: Recipient address "
         "rejected: User unknown in virtual mailbox table"),
        ("5.7.1 (delivery not authorized, message refused)", "spam-related",
         "smtp;554 5.7.1 Service unavailable; Client host [{src}] blocked using zen.spamhaus.org"),
        ("5.2.2 (mailbox full)", "quota-issues", "smtp;552 5.2.2 {rcpt} mailbox full (queue id {q})"),
    ],
}
INVALID_MARK = "@@E4@@"
"""Stands for the byte 0xE4 until the file is written (latin-1 `ä`, invalid as UTF-8)."""


def gmail_id(rng: random.Random) -> str:
    """Gmail's per-message reply id, e.g. `s142si14934335lfe.256`."""
    letters = "abcdefghijklmnopqrstuvwxyz"
    return (f"{rng.choice(letters)}{rng.randrange(1000)}si{rng.randrange(10**8)}"
            f"{rng.choice(letters)}{rng.choice(letters)}{rng.choice(letters)}.{rng.randrange(400)}")


def _q(text: str) -> str:
    return '"' + text.replace('"', '""') + '"' if ("," in text or '"' in text) else text


def _iso(ts: float) -> str:
    return _iso_second(int(ts))


@functools.lru_cache(maxsize=8192)
def _iso_second(second: int) -> str:
    """A second's text, once: a message's clock moves 0.01 s, so ~100 messages share each (the live benchmark
    generates while the daemon runs: its cost is taken from the daemon)."""
    return time.strftime("%Y-%m-%d %H:%M:%S+0000", time.gmtime(second))


class _Gen:
    """One deterministic stream of recipients; each yields its d/b/t records and maybe an f."""

    def __init__(self, seed: int, start: float, invalid_at: int, complaint_rate: float = 0.004) -> None:
        self.complaint_rate = complaint_rate
        """Share of deliveries that draw a complaint (0.4%: a sender near the mailbox providers' limits)."""
        self.rng = random.Random(seed)
        self.clock = start
        self.n = 0
        self.invalid_at = invalid_at

    def message(self) -> tuple[list[str], list[str], list[str]]:
        """(acct lines, diag lines, fbl lines) of one recipient of one message."""
        rng = self.rng
        self.n += 1
        n = self.n
        self.clock += 0.01
        dom, mx, ipp, _w = rng.choices(DOMAINS, cum_weights=_CUM_WEIGHTS)[0]
        v = rng.randrange(200)
        vmta, pool = f"vmta-{v:03d}", f"pool-{v % 10}"
        src = f"10.1.{v // 250}.{v % 250}"
        sender = f"news@sender{n % 23}.example"
        rcpt = f"user{rng.randrange(10**7)}.{n}@{dom}"
        job = f"job-{n // 5000}"
        env = f"env{n:09d}"
        mid = f"<{n:x}.{rng.randrange(10**9):x}@mailer.sender{n % 23}.example>"
        tq = self.clock
        acct: list[str] = []
        diag: list[str] = []
        fbl: list[str] = []
        t = tq
        mxip = f"{mx} ({ipp}.{rng.randrange(256)}.{rng.randrange(256)})"
        fill = {"src": src, "rcpt": rcpt, "q": f"{rng.randrange(16**10):010X}"}
        r = rng.random()
        if r < 0.11:  # deferred once or twice first
            for _ in range(1 + (rng.random() < 0.3)):
                t += rng.uniform(30, 900)
                status, text = rng.choice(TRANSIENT.get(dom, TRANSIENT["*"]))
                text = text.format(gid=gmail_id(rng), **fill)
                diag.append(",".join(["t", _iso(t), _iso(tq), sender, rcpt, "delayed", _q(status), _q(text),
                                      _q(mxip), "", src, mxip.partition("(")[2][:-1], vmta, job, env,
                                      f"{dom}/{vmta}", pool]))
            if rng.random() < 0.05:
                diag.append(",".join(["tq", _iso(t), "", "", "", "delayed", _q(status), _q(text), _q(mxip), "", src,
                                      "", "", "", "", f"{dom}/{vmta}", pool]))
        t += rng.uniform(0.2, 20)
        size = str(rng.randrange(2000, 90000))
        head = [_iso(t), _iso(tq), sender, rcpt, f"rfc822;{rcpt}"]
        tail = ["smtp", "app.internal (10.0.0.5)", "smtp", src, mxip.partition("(")[2][:-1], '"PIPELINING,8BITMIME,'
                'SIZE,STARTTLS,ENHANCEDSTATUSCODES"', size, vmta, job, env, f"{dom}/{vmta}", pool, mid]
        if n == self.invalid_at:  # a German MX answering in latin-1
            status, cat, text = "5.1.1 (bad destination mailbox address)", "bad-mailbox", \
                f"smtp;550 5.1.1 <{rcpt}>: Empf{INVALID_MARK}nger unbekannt"
            acct.append(",".join(["b", *head, "failed", _q(status), _q(text), _q(mxip), cat, *tail]))
        elif rng.random() < 0.035:
            status, cat, text = rng.choice(BOUNCES.get(dom, BOUNCES["*"]))
            text = text.format(gid=gmail_id(rng), **fill)
            acct.append(",".join(["b", *head, "failed", _q(status), _q(text), _q(mxip), cat, *tail]))
        else:
            ok = (f"smtp;250 2.0.0 OK  {int(t)} {gmail_id(rng)} - gsmtp" if "google" in mx
                  else f"smtp;250 2.0.0 Ok: queued as {fill['q']}")
            acct.append(",".join(["d", *head, "relayed", "2.0.0 (success)", _q(ok), _q(mxip), "success", *tail]))
            if rng.random() < self.complaint_rate:
                fbl.append(",".join(["f", _iso(t + 3600), sender, rcpt, "abuse", "Yahoo!-Mail-Feedback/2.0",
                                     "mta.feedback.example", mid]))
        return acct, diag, fbl


def make_corpus(directory: Path, lines: int = 250_000, files: int = 4, seed: int = 7,
                complaint_rate: float = 0.004) -> dict[str, int]:
    """Write acct-*.csv (one with CRLF), diag-*.csv and fbl-*.csv totalling about `lines` lines."""
    directory.mkdir(parents=True, exist_ok=True)
    start = (time.time() // 86400 - 2) * 86400  # recent: within the correlator's default retention
    gen = _Gen(seed, start=start, invalid_at=lines // 3, complaint_rate=complaint_rate)
    acct: list[list[str]] = [[] for _ in range(files)]
    diag: list[str] = []
    fbl: list[str] = []
    total = 0
    while total < lines:
        a, d, f = gen.message()
        acct[gen.n % files] += a
        diag += d
        fbl += f
        total += len(a) + len(d) + len(f)
    counts = {"lines": total}
    for i, rows in enumerate(acct):
        eol = "\r\n" if i == 1 else "\n"
        body = (eol.join([ACCT_HEADER, *rows]) + eol).encode().replace(INVALID_MARK.encode(), b"\xe4")
        (directory / f"acct-2026-11-25-{i:04d}.csv").write_bytes(body)
    (directory / "diag-2026-11-25-0000.csv").write_text("\n".join([DIAG_HEADER, *diag]) + "\n")
    (directory / "fbl-2026-11-25-0000.csv").write_text("\n".join([FBL_HEADER, *fbl]) + "\n")
    counts.update(acct=sum(map(len, acct)), diag=len(diag), fbl=len(fbl))
    return counts


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("directory", type=Path)
    ap.add_argument("--lines", type=int, default=250_000)
    ap.add_argument("--complaint-rate", type=float, default=0.004,
                    help="share of deliveries with a complaint (1.0: a report for every delivery)")
    args = ap.parse_args()
    print(make_corpus(args.directory, args.lines, complaint_rate=args.complaint_rate))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
