"""The one record shape that crosses every boundary: a batch of CSV rows plus their column map.

PMTA lets operators reorder fields, drop them and add `header_*` ones, so every file carries its
own header line. `Columns` resolves the positions of the fields we use once per header; a
`RecordBatch` is the rows of one read of one file, each row a plain `list[str]` of exactly
`len(columns.names)` fields. No per-record objects: the metrics path and the correlator index
rows by the positions in `Columns` (-1 means the file has no such column).
"""

from __future__ import annotations

from dataclasses import dataclass, field

# Fields the exporter and correlator read; anything else is carried but ignored.
KNOWN_FIELDS: tuple[str, ...] = (
    "type",
    "timeLogged",
    "timeQueued",
    "orig",
    "rcpt",
    "dsnAction",
    "dsnStatus",
    "dsnDiag",
    "dsnMta",
    "bounceCat",
    "dlvSourceIp",
    "dlvSize",
    "vmta",
    "vmtaPool",
    "jobId",
    "envId",
    "queue",
    "feedbackType",
    "reportingMta",
    "userAgent",
    "srcMta",
    "dlvDestinationIp",
    "timeFirstAttempt",
)


@dataclass(frozen=True, slots=True)
class Columns:
    """Column positions of one header line, resolved once per file (or per header change)."""

    names: tuple[str, ...]
    index: dict[str, int]
    type: int
    timeLogged: int
    timeQueued: int
    orig: int
    rcpt: int
    dsnAction: int
    dsnStatus: int
    dsnDiag: int
    dsnMta: int
    bounceCat: int
    dlvSourceIp: int
    dlvSize: int
    vmta: int
    vmtaPool: int
    jobId: int
    envId: int
    queue: int
    feedbackType: int
    reportingMta: int
    userAgent: int
    srcMta: int
    dlvDestinationIp: int
    timeFirstAttempt: int
    message_id: int
    """`header_Message-Id` (any case); -1 when absent."""

    @classmethod
    def from_header(cls, names: list[str] | tuple[str, ...]) -> Columns:
        names = tuple(n.strip() for n in names)
        index: dict[str, int] = {}
        lower: dict[str, int] = {}
        for i, name in enumerate(names):
            index.setdefault(name, i)
            lower.setdefault(name.lower(), i)
        resolved = {f: index.get(f, lower.get(f.lower(), -1)) for f in KNOWN_FIELDS}
        message_id = lower.get("header_message-id", lower.get("header_message-id:", -1))
        return cls(names=names, index=index, message_id=message_id, **resolved)

    def get(self, row: list[str], name: str) -> str:
        """Value of any column by name ('' when the file has no such column); not for hot loops."""
        i = self.index.get(name)
        if i is None:
            i = next((j for j, n in enumerate(self.names) if n.lower() == name.lower()), -1)
        return row[i] if 0 <= i < len(row) else ""

    @property
    def header_line(self) -> str:
        return ",".join(self.names)


def is_header(row: list[str]) -> bool:
    """PMTA's header always starts with the `type` column, which cannot be disabled."""
    return bool(row) and row[0].strip().lower() == "type"


@dataclass(slots=True)
class RecordBatch:
    """Valid rows from one read of one file, in file order."""

    source: str
    path: str
    columns: Columns
    rows: list[list[str]] = field(default_factory=list)
    line_numbers: list[int] = field(default_factory=list)
    """1-based line number of each row in its file (parallel to `rows`), for error messages and timelines."""
    file_id: str = ""
    """Stable id of the file (kept across renames and restarts); (file_id, line number) names a record."""

    def __len__(self) -> int:
        return len(self.rows)
