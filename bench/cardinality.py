"""Series count of the reference deployment: 200 VMTAs in 10 pools, 12 ISPs, the full record mix.

Every VMTA sends to every ISP (the worst case for a real host) and sees the realistic response
classes of each provider: deferrals (mailbox full, per-recipient rate, throttling, transient),
bounces by category, remote bounces, remote status reports, complaints from the providers that
run a feedback loop, receptions; 20 sending domains. The corpus goes through the real metrics path
(`watchtower oneshot`'s pipeline) and the exposition is counted series by series.
Run: `python bench/cardinality.py` (prints a table; the budget is 50,000 series).
"""

from __future__ import annotations

import asyncio
import sys
import tempfile
from collections import Counter
from pathlib import Path

from prometheus_client import CollectorRegistry
from prometheus_client.exposition import generate_latest
from prometheus_client.parser import text_string_to_metric_families

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from exporter.classify import load_classifiers  # noqa: E402
from exporter.config import config_from_dict  # noqa: E402
from exporter.daemon import Pipeline  # noqa: E402
from exporter.tailer import Tailer  # noqa: E402

HEADER = ("type,timeLogged,timeQueued,orig,rcpt,dsnAction,dsnStatus,dsnDiag,dsnMta,bounceCat,dlvSize,vmta,queue,"
          "vmtaPool,feedbackType")
# isp -> (recipient domain, MX host, [deferral replies], [(bounceCat, bounce reply)], has FBL)
ISPS = {
    "gmail": ("gmail.com", "gmail-smtp-in.l.google.com",
              ["452-4.2.2 The email account that you tried to reach is over quota",
               "450-4.2.1 The user you are trying to contact is receiving mail too quickly",
               "421-4.7.28 Our system has detected an unusual rate of unsolicited mail originating from your IP "
               "address", "421-4.7.0 suspicious due to the very low reputation of the sending IP address"],
              [("bad-mailbox", "550-5.1.1 The email account that you tried to reach does not exist"),
               ("inactive-mailbox", "550-5.2.1 The email account that you tried to reach is inactive"),
               ("policy-related", "550-5.7.26 This message does not have authentication information")], False),
    "google_workspace": ("startup.example", "aspmx.l.google.com",
                         ["452-4.2.2 The email account that you tried to reach is over quota"],
                         [("bad-mailbox", "550-5.1.1 The email account that you tried to reach does not exist")],
                         False),
    "yahoo": ("yahoo.com", "mta6.am0.yahoodns.net",
              ["421 4.7.0 [TSS04] Messages from 1.2.3.4 temporarily deferred due to unexpected volume or user "
               "complaints", "451 Resources temporarily unavailable. Please try again later [#4.16.1]"],
              [("bad-mailbox", "554 delivery error: dd This user doesn't have a yahoo.com account"),
               ("spam-related", "553 5.7.1 [BL21] Connections will not be accepted from 1.2.3.4")], True),
    "microsoft": ("hotmail.com", "hotmail-com.olc.protection.outlook.com",
                  ["451 4.7.650 The mail server [1.2.3.4] has been temporarily rate limited due to IP reputation"],
                  [("bad-mailbox", "550 5.5.0 Requested action not taken: mailbox unavailable"),
                   ("policy-related", "550 5.7.1 Unfortunately, messages from [1.2.3.4] weren't sent. Please "
                    "contact your Internet service provider since part of their network is on our block list "
                    "(S3150)")], True),
    "office365": ("bigcorp.example", "bigcorp-example.mail.protection.outlook.com",
                  ["451 4.7.500 Server busy. Please try again later"],
                  [("bad-mailbox", "550 5.1.10 RESOLVER.ADR.RecipientNotFound; Recipient not found")], False),
    "apple": ("icloud.com", "mx01.mail.icloud.com", ["451 4.7.1 Service unavailable - try again later"],
              [("bad-mailbox", "550 5.1.1 <x@icloud.com>: user does not exist")], False),
    "comcast": ("comcast.net", "mx1.comcast.net", ["421 4.1.0 Throttled - try again later RL000003"],
                [("bad-mailbox", "550 Not our Customer")], True),
    "gmx": ("gmx.de", "mx00.emig.gmx.net", ["421 Too many messages have been received in a short period"],
            [("bad-mailbox", "550 Requested action not taken: mailbox unavailable")], False),
    "mailru": ("mail.ru", "mxs.mail.ru", ["421 Too many connections"],
               [("bad-mailbox", "550 Message was not accepted -- invalid mailbox")], True),
    "yandex": ("yandex.ru", "mx.yandex.ru", ["451 4.7.1 Sorry, the service is currently unavailable"],
               [("bad-mailbox", "550 5.7.1 No such user!")], False),
    "orange": ("orange.fr", "smtp-in.orange.fr", ["421 Trop de connexions"],
               [("bad-mailbox", "550 5.1.1 Adresse d au moins un destinataire invalide")], False),
    "other": ("tiny.example", "mx.tiny.example",
              ["421 4.4.2 Timeout - closing connection", "ETIMEDOUT in connection to tiny.example (1.2.3.4)"],
              [("bad-domain", "unable to route"), ("bad-mailbox", "550 5.1.1 No such user")], False),
}


def corpus(directory: Path) -> int:
    lines = [HEADER]
    n = 0
    ts = "2026-11-25 12:00:00+0000"
    tq = "2026-11-25 11:00:00+0000"
    for v in range(200):
        vmta, pool = f"vmta-{v:03d}", f"pool-{v % 10}"
        for dom, mx, deferrals, bounces, fbl in ISPS.values():
            base = f"news@s{v % 20}.example,u{n}@{dom}"
            for delay_ts in ("2026-11-25 11:00:01+0000", "2026-11-25 11:07:00+0000", "2026-11-25 13:00:00+0000",
                             "2026-11-27 12:00:00+0000", "2026-11-25 11:00:09+0000"):
                lines.append(f"d,{delay_ts},{tq},{base},relayed,2.0.0 (success),smtp;250 ok,{mx} (1.2.3.4),success,"
                             f"1000,{vmta},{dom}/{vmta},{pool},")
            for reply in deferrals:
                lines.append(f"t,{ts},{tq},{base},delayed,4.0.0,\"smtp;{reply}\",{mx} (1.2.3.4),,,{vmta},"
                             f"{dom}/{vmta},{pool},")
            lines.append(f"tq,{ts},,,,delayed,4.0.0,\"smtp;{deferrals[0]}\",{mx} (1.2.3.4),,,{vmta},{dom}/{vmta},"
                         f"{pool},")
            for cat, reply in bounces:
                lines.append(f"b,{ts},{tq},{base},failed,5.0.0,\"smtp;{reply}\",{mx} (1.2.3.4),{cat},,{vmta},"
                             f"{dom}/{vmta},{pool},")
                lines.append(f"rb,{ts},,{base},failed,5.0.0,\"smtp;{reply}\",{mx} (1.2.3.4),{cat},,{vmta},,{pool},")
            lines.append(f"rs,{ts},,{base},delivered,2.0.0,,{mx} (1.2.3.4),,,{vmta},,{pool},")
            if fbl:
                lines.append(f"f,{ts},,{base},,,,,,,{vmta},,{pool},abuse")
            n += 1
        lines.append(f"r,{ts},,news@s{v % 20}.example,u{n}@x.example,,,,,,,{vmta},,{pool},")
    (directory / "acct-2026-11-25-0000.csv").write_text("\n".join(lines) + "\n")
    return len(lines) - 1


async def reference_pipeline(directory: Path) -> tuple[Pipeline, int]:
    """The reference deployment's corpus written to `directory` and read through the daemon's pipeline
    (metrics only); also used by bench_scrape.py. Returns the pipeline and the record count."""
    records = corpus(directory)
    config = config_from_dict({"sources": [{"name": "acct", "paths": [str(directory / "acct-*.csv")]}],
                               "state_dir": str(directory), "listen": "127.0.0.1:0",
                               "correlator": {"enabled": False}})
    isp, replies = load_classifiers(config)
    pipeline = Pipeline(config, CollectorRegistry(), None, isp, replies)
    tailer = Tailer(config.sources, config.tail, pipeline.self_metrics, first_run=True, oneshot=True)
    await tailer.poll(pipeline.on_batch, force_scan=True)
    await tailer.close()
    return pipeline, records


def main() -> int:
    with tempfile.TemporaryDirectory() as tmp:
        pipeline, records = asyncio.run(reference_pipeline(Path(tmp)))
        text = generate_latest(pipeline.registry).decode()
    per_family: Counter[str] = Counter()
    for fam in text_string_to_metric_families(text):
        per_family[fam.name] += len(fam.samples)
    record_series = sum(n for name, n in per_family.items() if name.startswith("pmta_"))
    print(f"reference deployment: 200 VMTAs, 10 pools, {len(ISPS)} ISPs, 20 senders; {records:,} records")
    print(f"{'metric family':45s} series")
    for name, n in sorted(per_family.items(), key=lambda kv: -kv[1]):
        if n:
            print(f"{name:45s} {n:7,d}")
    total = sum(per_family.values())
    print(f"{'pmta_* record series':45s} {record_series:7,d}")
    print(f"{'all series':45s} {total:7,d}   budget 50,000")
    return 0 if total <= 50_000 else 1


if __name__ == "__main__":
    raise SystemExit(main())
