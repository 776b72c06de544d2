"""Column lists and CSV encoding, as PMTA writes them.

Default columns per record type follow pmta-formats.md §1.2 (the PMTA 4.5/5.x default header for
d/b/t/tq; the documented f, rb/rs and r fields). `resolve_fields` applies PMTA's `record-fields` syntax
(`*`, `!name`, extra names such as `header_Message-Id`) to the union of a file's record types.
`csv_line` quotes per RFC 4180: only values holding a comma, quote, CR or LF, quotes doubled.
"""

from __future__ import annotations

DEFAULT_DB: tuple[str, ...] = (
    "type", "timeLogged", "timeQueued", "orig", "rcpt", "orcpt", "dsnAction", "dsnStatus", "dsnDiag", "dsnMta",
    "bounceCat", "srcType", "srcMta", "dlvType", "dlvSourceIp", "dlvDestinationIp", "dlvEsmtpAvailable", "dlvSize",
    "vmta", "jobId", "envId", "queue", "vmtaPool",
)
DEFAULT_F: tuple[str, ...] = (
    "type", "timeLogged", "orig", "rcpt", "repSourceIp", "feedbackType", "format", "userAgent", "reportingMta",
    "reportedDomain", "rcvSourceIp",
)
DEFAULT_RB: tuple[str, ...] = (
    "type", "timeLogged", "orig", "rcpt", "dsnAction", "dsnStatus", "dsnDiag", "dsnMta", "bounceCat",
    "dsnReportingMta", "rcvSourceIp",
)
DEFAULT_RS: tuple[str, ...] = DEFAULT_RB
"""rs reuses rb's DSN fields (pmta-formats.md §1.2; UNCERTAIN there, no complete list was found)."""
DEFAULT_R: tuple[str, ...] = (
    "type", "timeLogged", "orig", "rcpt", "srcType", "srcMta", "rcvSourceIp", "rcvSmtpUser",
)
"""r (a reception): the src* fields plus rcvSourceIp and rcvSmtpUser, as pmta-formats.md §1.2 gives them (UNCERTAIN
there: no complete list); no vmta or queue field (§1.1)."""
DEFAULTS: dict[str, tuple[str, ...]] = {"d": DEFAULT_DB, "b": DEFAULT_DB, "t": DEFAULT_DB, "tq": DEFAULT_DB,
                                        "f": DEFAULT_F, "rb": DEFAULT_RB, "rs": DEFAULT_RS, "r": DEFAULT_R}


def resolve_fields(spec: list[str], records: list[str]) -> tuple[str, ...]:
    """The header of a file holding `records` configured with `spec` (`type` is always first)."""
    defaults: list[str] = []
    for rec in records:
        defaults += [f for f in DEFAULTS[rec] if f not in defaults]
    out: list[str] = []
    removed = {s[1:] for s in spec if s.startswith("!")}
    for item in spec:
        if item == "*":
            out += [f for f in defaults if f not in out]
        elif not item.startswith("!") and item not in out:
            out.append(item)
    out = [f for f in out if f not in removed and f != "type"]
    return ("type", *out)


_SPECIAL = frozenset(',"\r\n')


def quote(value: str) -> str:
    if _SPECIAL.isdisjoint(value):
        return value
    return '"' + value.replace('"', '""') + '"'


def csv_line(values: list[str], newline: str) -> str:
    return ",".join([quote(v) for v in values]) + newline
