"""Plain-text renderings for `Accept: text/plain` / `?format=text`: readable in a terminal."""

from __future__ import annotations

from typing import Any


def _t(value: str | None) -> str:
    return (value or "-").replace("T", " ")


def timeline(tl: dict[str, Any]) -> str:
    head = [
        f"rcpt {tl['rcpt'] or '(unknown)'}  message-id {tl['message_id'] or '-'}  job {tl['job_id'] or '-'}",
        f"from {tl['orig'] or '-'}  vmta {tl['vmta'] or '-'}"
        + (f" (pool {tl['vmta_pool']})" if tl["vmta_pool"] else "")
        + f"  isp {tl['isp'] or '-'}  outcome {tl['outcome'].upper()}  attempts {tl['attempts']}",
    ]
    if tl.get("queue_events_omitted"):
        head.append(f"({tl['queue_events_omitted']} older queue events of {tl['queue']} omitted)")
    lines = []
    for ev in tl["events"]:
        parts = [_t(ev["time"]), f"{ev['kind']:<15}"]
        if ev.get("attempt"):
            parts.append(f"#{ev['attempt']}")
        for key in ("vmta", "dsn_status", "dsn_diag", "dsn_mta", "feedback_type", "reporting_mta"):
            if ev.get(key):
                parts.append(str(ev[key]))
        if ev.get("response_class"):
            parts.append(f"[{ev['response_class']}]")
        lines.append(("  " + "  ".join(parts)).rstrip())
    return "\n".join(head + lines) + "\n"


def timelines(title: str, items: list[dict[str, Any]], note: str = "") -> str:
    blocks = [title + (f"  {note}" if note else "")]
    blocks += [timeline(tl) for tl in items]
    return "\n".join(blocks)


def search(page: dict[str, Any]) -> str:
    lines = []
    for it in page["items"]:
        lines.append("  ".join((
            _t(it["first_seen"]), f"{it['outcome']:<10}", it["rcpt"] or "-", f"job={it['job_id'] or '-'}",
            f"vmta={it['vmta'] or '-'}", f"mid={it['message_id'] or '-'}", f"id={it['id']}",
        )))
    if not lines:
        lines.append("(no matching timelines)")
    if page["next_cursor"]:
        lines.append(f"next cursor: {page['next_cursor']}")
    return "\n".join(lines) + "\n"


def flows(data: dict[str, Any]) -> str:
    lines = [f"flows since {_t(data['since'])}" + (f" until {_t(data['until'])}" if data["until"] else "")]
    for e in data["edges"]:
        lines.append(
            f"  {e['source']} -> {e['target']}  delivered={e['detail__delivered']} bounced={e['detail__bounced']}"
            f" deferred={e['detail__deferred']} complained={e['detail__complained']}"
        )
    if not data["edges"]:
        lines.append("  (no traffic)")
    return "\n".join(lines) + "\n"
