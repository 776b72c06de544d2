"""Pydantic response models of the /api/v1 routes (they are what /openapi.json documents)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field

Outcome = Literal["pending", "deferred", "delivered", "bounced", "complained"]
EventKind = Literal[
    "queued", "received", "deferred", "queue_deferred", "delivered", "bounced", "remote_status",
    "remote_bounce", "complaint",
]
RecordType = Literal["r", "t", "tq", "d", "b", "rs", "rb", "f"]


class ApiError(BaseModel):
    """Body of every 4xx/5xx answer of the correlator routes."""

    error: str = Field(description="What is wrong, for a human.")
    parameter: str | None = Field(default=None, description="The query/path parameter at fault, if any.")
    status: int = Field(description="The HTTP status code, repeated for clients that lose it.")


class Event(BaseModel):
    """One step of a recipient's timeline: a record from the accounting files, or `queued`."""

    time: str = Field(description="ISO 8601 UTC time (timeLogged; timeQueued for `queued`).")
    ts: float = Field(description="The same time as Unix seconds.")
    kind: EventKind
    record_type: RecordType | None = Field(description="PMTA record type; null for the synthetic `queued`.")
    attempt: int | None = Field(default=None, description="1-based delivery attempt number (t, d, b).")
    vmta: str | None = None
    vmta_pool: str | None = None
    source_ip: str | None = Field(default=None, description="dlvSourceIp.")
    dsn_action: str | None = None
    dsn_status: str | None = Field(default=None, description="Enhanced status, e.g. `4.7.0 (...)`.")
    dsn_diag: str | None = Field(default=None, description="Remote SMTP reply, e.g. `smtp;421 ...`.")
    dsn_mta: str | None = Field(default=None, description="Remote MTA as `host (ip)`.")
    bounce_category: str | None = None
    response_class: str | None = Field(default=None, description="Reply class from the classifier.")
    queue: str | None = Field(default=None, description="`domain/vmta` of a queue_deferred (tq) event.")
    feedback_type: str | None = Field(default=None, description="FBL feedback type (f).")
    user_agent: str | None = Field(default=None, description="FBL user agent (f).")
    reporting_mta: str | None = Field(default=None, description="Reporting MTA (f, rb, rs).")
    source: str | None = Field(default=None, description="`file:line` the record was read from.")


class TimelineSummary(BaseModel):
    """One recipient of one message, without its events."""

    id: int = Field(description="Store id; stable unless two partial timelines are merged.")
    message_id: str | None
    job_id: str | None
    rcpt: str | None = Field(description="Recipient (lowercase), or `hmac-sha256:<hex>` when hashed.")
    rcpt_hashed: bool
    rcpt_domain: str | None
    orig: str | None = Field(description="MAIL FROM (lowercase).")
    sender_domain: str | None
    vmta: str | None = Field(description="VirtualMTA of the latest delivery attempt.")
    vmta_pool: str | None
    queue: str | None = Field(description="`domain/vmta` queue of the delivery attempts.")
    isp: str | None
    outcome: Outcome
    attempts: int = Field(description="Number of t, d and b records.")
    first_seen: str | None = Field(description="Earliest of timeQueued and the record times (ISO UTC).")
    last_seen: str | None
    queued_at: str | None
    done_at: str | None = Field(description="Time of the first d or b record.")
    complained: bool = Field(description="An FBL (f) record is attached.")
    remote_bounced: bool = Field(description="A remote bounce (rb) record is attached.")


class Timeline(TimelineSummary):
    events: list[Event] = Field(description="Oldest first; ties ordered queued, attempts, outcome, reports. "
                                            "At most the latest 1,000 (fewer each on a page of many timelines).")
    events_omitted: int = Field(default=0, description="Older events of this timeline not listed.")
    queue_events_omitted: int = Field(description="Older queue_deferred events of this queue not listed.")


class MessageResponse(BaseModel):
    message_id: str
    recipients_total: int = Field(ge=0)
    truncated: bool = Field(description="True when the message has more recipients than this page lists.")
    next_cursor: str | None = Field(
        default=None, description="Pass as `cursor` for the next recipients (stored order); null on the last page.")
    recipients: list[Timeline]


class TimelineResponse(BaseModel):
    job_id: str | None
    message_id: str | None
    rcpt: str
    timelines: list[Timeline] = Field(description="Usually one; several if the same job was sent twice (the latest "
                                                  "100, oldest first).")
    timelines_omitted: int = Field(default=0, ge=0, description="Older timelines of this recipient and key not listed.")


class SearchResponse(BaseModel):
    items: list[TimelineSummary] = Field(description="Newest first by first_seen.")
    next_cursor: str | None = Field(description="Pass as `cursor` for the next page; null at the end.")
    limit: int
    scan_limited: bool = Field(
        description="The vmta/outcome filters scanned their per-page budget: the page may be short but "
        "next_cursor continues the scan."
    )


class FlowNode(BaseModel):
    id: str = Field(description="`sender:<domain>`, `vmta:<name>` or `isp:<name>`.")
    title: str
    subtitle: Literal["sender", "vmta", "isp"]
    mainstat: int = Field(ge=0, description="Recipients delivered + bounced.")
    secondarystat: int = Field(ge=0, description="Deferrals (t records).")
    arc__delivered: float
    arc__bounced: float
    arc__deferred: float
    detail__delivered: int = Field(ge=0)
    detail__bounced: int = Field(ge=0)
    detail__deferred: int = Field(ge=0)
    detail__complained: int = Field(ge=0)
    detail__remote_bounced: int = Field(ge=0)
    detail__kind: str


class FlowEdge(BaseModel):
    id: str
    source: str
    target: str
    mainstat: int = Field(ge=0, description="Recipients delivered + bounced.")
    secondarystat: int = Field(ge=0, description="Deferrals.")
    thickness: float = Field(description="1..10, square root of volume relative to the largest edge.")
    detail__delivered: int = Field(ge=0)
    detail__bounced: int = Field(ge=0)
    detail__deferred: int = Field(ge=0)
    detail__complained: int = Field(ge=0)
    detail__remote_bounced: int = Field(ge=0)


class FlowsResponse(BaseModel):
    since: str
    until: str | None
    nodes: list[FlowNode]
    edges: list[FlowEdge]
