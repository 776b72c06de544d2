"""Response models of the hub's /api/v1: the daemon's models plus the host of each item and the
hosts that did not answer (documented in the hub's /openapi.json)."""

from __future__ import annotations

from pydantic import BaseModel, Field

from correlator.models import FlowEdge, FlowNode, Timeline, TimelineSummary
from correlator.replies import LookupResponse, RepliesResponse, Reply

NEXT_CURSOR_PROBLEM = ("Why next_cursor is null although hosts hold more: the cursor for the next page would be "
                       "longer than a request to the hub may carry. Null otherwise.")


class MissingHost(BaseModel):
    host: str = Field(description="Target name (host:port or the configured name).")
    url: str
    error: str = Field(description="Why its answer is missing: refused, timed out, HTTP 5xx, too large, no /api/v1, "
                       "not among the current targets (a cursor's host that left them), ...")


class Partial(BaseModel):
    partial: bool = Field(description="True when at least one host did not answer: the result may be incomplete.")
    missing_hosts: list[MissingHost]
    hosts: list[str] = Field(description="Every host asked.")


class HostTimeline(Timeline):
    host: str = Field(description="The host whose correlator holds this timeline.")


class HostTimelineSummary(TimelineSummary):
    host: str


class HubMessageResponse(Partial):
    message_id: str
    recipients_total: int
    truncated: bool
    next_cursor: str | None = Field(
        default=None, description="Encodes every host's position; null once every host that answered is exhausted.")
    next_cursor_problem: str | None = Field(default=None, description=NEXT_CURSOR_PROBLEM)
    recipients: list[HostTimeline]


class HubTimelineResponse(Partial):
    job_id: str | None
    message_id: str | None
    rcpt: str
    timelines: list[HostTimeline]
    timelines_omitted: int = Field(default=0, description="Older timelines not listed, summed over the hosts.")


class HubSearchResponse(Partial):
    items: list[HostTimelineSummary] = Field(description="Newest first by first_seen across all hosts.")
    next_cursor: str | None = Field(description="Encodes every host's position; null when all are exhausted.")
    next_cursor_problem: str | None = Field(default=None, description=NEXT_CURSOR_PROBLEM)
    limit: int
    scan_limited: bool


class HubFlowNode(FlowNode):
    hosts: list[str] = Field(description="Hosts contributing to this node.")


class HubFlowEdge(FlowEdge):
    hosts: list[str]


class HubFlowsResponse(Partial):
    since: str
    until: str | None
    nodes: list[HubFlowNode]
    edges: list[HubFlowEdge]


class HubLookupResponse(LookupResponse, Partial):
    """Each timeline also carries `host`."""

    timelines: list[HostTimeline] = Field(  # type: ignore[assignment]
        description="Timelines with their events and host, as /api/v1/timeline.")


class HubReply(Reply):
    hosts: list[str] = Field(description="Hosts where this reply text was seen.")


class HubRepliesResponse(RepliesResponse, Partial):
    replies: list[HubReply]  # type: ignore[assignment]
