"""Record builders: one dict (field name -> value) per accounting record, for every type we write.

Time fields hold epoch ints (the writer renders them per file); everything else is a string.
Values follow the shapes seen in real files (pmta-formats.md §1.2, §1.4, §4): `relayed` +
`success` on d, `failed` + bounceCat on b, `delayed` + empty bounceCat on t/tq, no message fields on
tq, `host (ip)` in dsnMta, the EHLO extension list (quoted: it has commas) in dlvEsmtpAvailable.
"""

from __future__ import annotations

from typing import Any

from simulator.providers import Mx
from simulator.queues import Queue, Recipient
from simulator.replies import Reply

Row = dict[str, Any]

_ACTION = {"d": "relayed", "b": "failed", "t": "delayed"}


def recipient_record(typ: str, now: int, r: Recipient, reply: Reply, diag: str, mx: Mx | None, src_ip: str) -> Row:
    """d, b or t for one recipient after one attempt (or PMTA's own verdict when `mx` is None)."""
    q = r.queue
    return {
        "type": typ,
        "timeLogged": now,
        "timeQueued": r.queued,
        "orig": r.orig,
        "rcpt": r.rcpt,
        "orcpt": "",
        "dsnAction": _ACTION[typ],
        "dsnStatus": reply.status,
        "dsnDiag": diag,
        "dsnMta": mx.dsn_mta if mx else "",
        "bounceCat": "success" if typ == "d" else ("" if typ == "t" else reply.bounce_cat),
        "srcType": "smtp",
        "srcMta": r.src_mta,
        "dlvType": "smtp",
        "dlvSourceIp": src_ip,
        "dlvDestinationIp": mx.ip if mx else "",
        "dlvEsmtpAvailable": q.provider.esmtp if mx else "",
        "dlvSize": str(r.size) if typ == "d" else "",
        "vmta": q.vmta,
        "jobId": r.job,
        "envId": "",
        "queue": q.name,
        "vmtaPool": q.pool,
        "header_Message-Id": r.msgid,
        "header_X-job": r.job,
        "header_From": r.orig.replace("bounces@", "news@", 1),
    }


def queue_record(now: int, q: Queue, reply: Reply, diag: str, mx: Mx | None, src_ip: str) -> Row:
    """tq: a queue-wide failure (on connect / EHLO); no message, so no orig, rcpt, jobId or headers. `mx` None: a
    DNS failure, no MX host or address to name."""
    return {
        "type": "tq",
        "timeLogged": now,
        "dsnAction": "delayed",
        "dsnStatus": reply.status,
        "dsnDiag": diag,
        "dsnMta": mx.dsn_mta if mx is not None else "",
        "dlvType": "smtp",
        "dlvSourceIp": src_ip,
        "dlvDestinationIp": mx.ip if mx is not None else "",
        "dlvEsmtpAvailable": "",
        "vmta": q.vmta,
        "queue": q.name,
        "vmtaPool": q.pool,
    }


def fbl_record(now: int, r: Recipient, feedback_type: str, src_ip: str, hide_rcpt: bool = False) -> Row:
    """f: an ARF report for a delivered message, hours after delivery. `hide_rcpt`: the provider hid the recipient
    (Hotmail/JMRP, pmta-formats.md §1.2, §3.3) and no `map-header-to-field` put it back: rcpt is empty."""
    p = r.queue.provider
    return {
        "type": "f",
        "timeLogged": now,
        "arrivalDate": now,  # written only when a file's fields name it: the f time column is UNCERTAIN (§1.2)
        "orig": r.orig,
        "rcpt": "" if hide_rcpt else r.rcpt,
        "repSourceIp": src_ip,
        "feedbackType": feedback_type,
        "format": "arf",
        "userAgent": p.fbl_user_agent,
        "reportingMta": p.fbl_reporting_mta,
        "reportedDomain": r.sender,
        "rcvSourceIp": r.queue.mxs[0].ip,
        "header_Message-Id": r.msgid,
        "header_X-job": r.job,
        "header_From": r.orig.replace("bounces@", "news@", 1),
    }


def remote_bounce_record(now: int, r: Recipient, reply: Reply, diag: str) -> Row:
    """rb: an asynchronous bounce from the recipient's internal server after the MX accepted the mail."""
    return _remote_dsn("rb", now, r, "failed", reply.status, diag, reply.bounce_cat)


def remote_status_record(now: int, r: Recipient, action: str, status: str, diag: str) -> Row:
    """rs: a DSN (delay, or success when asked for) from the recipient's internal server after the MX accepted the
    mail, recognised by PMTA's bounce-processor; the DSN fields of rb (pmta-formats.md §1.1, §1.2)."""
    return _remote_dsn("rs", now, r, action, status, diag, "")


def _remote_dsn(kind: str, now: int, r: Recipient, action: str, status: str, diag: str, bounce_cat: str) -> Row:
    """The fields rb and rs share: a DSN from the recipient's internal server (its own dsnMta, not the MX)."""
    inner = f"mail.{r.domain}"
    return {
        "type": kind,
        "timeLogged": now,
        "orig": r.orig,
        "rcpt": r.rcpt,
        "dsnAction": action,
        "dsnStatus": status,
        "dsnDiag": diag,
        "dsnMta": f"{inner} (10.{r.seq % 250}.0.25)",
        "bounceCat": bounce_cat,
        "dsnReportingMta": f"dns; {inner}",
        "rcvSourceIp": r.queue.mxs[0].ip,
        "header_Message-Id": r.msgid,
        "header_X-job": r.job,
        "header_From": r.orig.replace("bounces@", "news@", 1),
    }


def receipt_record(now: int, r: Recipient, smtp_user: str) -> Row:
    """r: PMTA received the message from the injector (pmta-formats.md §1.1): src* and rcv* fields, no vmta/queue."""
    return {
        "type": "r",
        "timeLogged": now,
        "orig": r.orig,
        "rcpt": r.rcpt,
        "srcType": "smtp",
        "srcMta": r.src_mta,
        "rcvSourceIp": r.src_mta.rpartition("(")[2].rstrip(")"),
        "rcvSmtpUser": smtp_user,
        "jobId": r.job,
        "envId": "",
        "header_Message-Id": r.msgid,
        "header_X-job": r.job,
        "header_From": r.orig.replace("bounces@", "news@", 1),
    }
