"""Merging per-host answers: timelines concatenated with their host, flows summed.

Pure functions over `HostAnswer`s so they are tested without a network.
"""

from __future__ import annotations

import math
from collections.abc import Collection
from datetime import datetime
from typing import Any

from correlator.keys import HASHED_PREFIX
from correlator.timeline import flow_stat_fields
from exporter.redact import REDACTED, redact_log_text
from hub.config import without_credentials
from hub.fanout import HostAnswer, printable
from hub.targets import Target

STATS = ("delivered", "bounced", "deferred", "complained", "remote_bounced")


def partial_fields(targets: list[Target], answers: list[HostAnswer]) -> dict[str, Any]:
    """partial, missing_hosts and hosts. No URL shown carries credentials: the config refuses them and discovery
    drops them, and they would be masked here anyway."""
    missing = [{"host": a.target.name, "url": without_credentials(a.target.url), "error": printable(a.error)}
               for a in answers if a.error is not None]
    return {"partial": bool(missing), "missing_hosts": missing, "hosts": [t.name for t in targets]}


def settle(answers: list[HostAnswer], fine: Collection[int], own: Collection[str] = ()) -> dict[str, Any] | None:
    """The 400 to pass on, or None; marks the hosts whose own answer failed as missing.

    Every host gets the same parameters, so a 400 is the caller's mistake only when every host that answered says
    so. Beside a host that took them (a status in `fine`) it is that host's own (an older daemon, a liar): a missing
    host, as is any status the route never answers (404 on /lookup), and a 400 on a parameter in `own` (the host's
    own cursor, which the hub made). The 400 passed on is the first host's, its text without control characters."""
    for a in answers:
        if a.ok and ((a.status not in fine and a.status != 400) or not isinstance(a.body, dict)):
            a.refused()
    rejected = [a for a in answers if a.ok and a.status == 400]
    blamed = [a for a in rejected if a.body.get("parameter") not in own]
    if blamed and not any(a.ok and a.status in fine for a in answers):
        return passed_on(blamed[0].body)
    for a in rejected:
        a.refused()
    return None


def passed_on(body: dict[str, Any]) -> dict[str, Any]:
    """A daemon's 400 (ApiError-shaped: the fan-out checked) as the hub passes it on: its text without control
    characters, addresses (and the bare copies of their local parts) redacted as the hub's logs are (before the cut);
    so is a parameter's name, which the hub cannot vouch for either."""
    parameter = body.get("parameter")
    if isinstance(parameter, str):
        parameter = redact_log_text(printable(parameter[:5000]))[:1000]
    return {"error": redact_log_text(printable(str(body.get("error"))[:5000]))[:1000], "parameter": parameter}


def first_seen_key(item: dict[str, Any]) -> float:
    """An item's first_seen as epoch seconds for ordering; anything that is no ISO time orders first (oldest)."""
    fs = item.get("first_seen")
    if not fs or not isinstance(fs, str):
        return float("-inf")
    try:
        return datetime.fromisoformat(fs.replace("Z", "+00:00")).timestamp()
    except ValueError:  # not a daemon's ISO time (its answer passed the model: a string): merged last, not a 500
        return float("-inf")


def latest(items: list[dict[str, Any]], limit: int) -> list[dict[str, Any]]:
    """The newest `limit` items by first_seen, oldest first, as a daemon lists a recipient's sends (`items[-limit:]`);
    equal times keep target order. Cutting in target order kept the first host's oldest sends instead."""
    return sorted(items, key=first_seen_key)[-limit:]


def shown(bodies: list[dict[str, Any]]) -> dict[str, Any]:
    """The answer whose key fields (rcpt, job_id, message_id) the hub shows: one that holds timelines, and one that
    hashes the recipient if any host does, by its echo or its timelines (an answer must not carry the address a hashing
    host hides: its echo of a Message-Id keeps no recipient's address)."""
    def rank(body: dict[str, Any]) -> tuple[bool, bool, bool, bool]:
        items = body.get("timelines") or []
        hashed = any(isinstance(t, dict) and t.get("rcpt_hashed") is True for t in items)  # a lookup by Message-Id
        keys = f"{body.get('message_id') or ''} {body.get('job_id') or ''}"
        redacted = "<rcpt>" in keys or REDACTED in keys  # a hashing host's echo, when both echo the hash asked
        return str(body.get("rcpt") or "").startswith(HASHED_PREFIX), hashed, redacted, bool(items)

    return max(bodies, key=rank, default={})


def omitted(bodies: list[dict[str, Any]]) -> int:
    """timelines_omitted summed over the hosts' answers (each checked non-negative by the fan-out)."""
    return sum(b.get("timelines_omitted") or 0 for b in bodies if isinstance(b.get("timelines_omitted"), int))


def answered(answers: list[HostAnswer]) -> list[dict[str, Any]]:
    """The bodies of the 200 answers, in target order."""
    return [a.body for a in answers if a.ok and a.status == 200 and isinstance(a.body, dict)]


def tagged(answers: list[HostAnswer], key: str) -> list[dict[str, Any]]:
    """The list `key` of every 200 answer, each item with its host, hosts in target order."""
    out = []
    for a in answers:
        if a.ok and a.status == 200 and isinstance(a.body, dict):
            for item in a.body.get(key) or []:
                out.append({**item, "host": a.target.name})
    return out


def _stats(item: dict[str, Any]) -> list[int]:
    return [int(item.get("detail__" + s, 0) or 0) for s in STATS]


def merge_flows(answers: list[HostAnswer]) -> dict[str, Any]:
    """Nodes and edges summed by id across hosts; thickness recomputed over the merged edges."""
    nodes: dict[str, dict[str, Any]] = {}
    edges: dict[str, dict[str, Any]] = {}
    since, until = None, None
    for a in answers:
        if not (a.ok and a.status == 200 and isinstance(a.body, dict)):
            continue
        since, until = since or a.body.get("since"), until or a.body.get("until")
        for kind, acc in (("nodes", nodes), ("edges", edges)):
            for item in a.body.get(kind) or []:
                cur = acc.get(item["id"])
                if cur is None:
                    cur = acc[item["id"]] = {**item, "_st": [0] * len(STATS), "hosts": []}
                cur["_st"] = [x + y for x, y in zip(cur["_st"], _stats(item), strict=True)]
                if a.target.name not in cur["hosts"]:
                    cur["hosts"].append(a.target.name)
    order = {"sender": 0, "vmta": 1, "isp": 2}
    node_list = []
    for n in nodes.values():
        fields = flow_stat_fields(n.pop("_st"))
        node_list.append({**n, **fields})
    node_list.sort(key=lambda n: (order.get(n.get("subtitle", ""), 3), -n["mainstat"], n["id"]))
    top = max((e["_st"][0] + e["_st"][1] for e in edges.values()), default=0)
    top = top if top > 0 else 1
    edge_list = []
    for e in sorted(edges.values(), key=lambda e: (e["source"], e["target"])):
        st = e.pop("_st")
        fields = flow_stat_fields(st)
        for k in ("arc__delivered", "arc__bounced", "arc__deferred"):
            del fields[k]
        edge_list.append({**e, **fields, "thickness": _thickness(st[0] + st[1], top)})
    return {"since": since, "until": until, "nodes": node_list, "edges": edge_list}


def _thickness(volume: int, top: int) -> float:
    """1..10 by the square root of the volume relative to the largest edge's (never the root of a negative)."""
    return round(1 + 9 * math.sqrt(min(1.0, max(0, volume) / top)), 2)


def merge_replies(answers: list[HostAnswer], limit: int) -> dict[str, Any]:
    """Reply groups summed by (text, kind, vmta, isp) over the hosts, shares over the summed total, top `limit`.

    Each host sends its own top list (the hub asks for 100), so a text that is in no host's top
    100 but would be in the merged top is missed: fine for "what are the ISPs saying".
    """
    groups: dict[tuple[Any, ...], dict[str, Any]] = {}
    total, capped, limited, first = 0, False, False, None
    for a in answers:
        if not (a.ok and a.status == 200 and isinstance(a.body, dict)):
            continue
        first = first or a.body
        total += int(a.body.get("total", 0))
        capped = capped or bool(a.body.get("window_capped"))
        limited = limited or bool(a.body.get("scan_limited"))
        for r in a.body.get("replies") or []:
            key = (r.get("reply"), r.get("kind"), r.get("vmta"), r.get("isp"))
            g = groups.get(key)
            if g is None:
                groups[key] = {**r, "hosts": [a.target.name], "_best": r.get("count", 0)}
                continue
            if r.get("count", 0) > g.get("_best", g.get("count", 0)):
                g.update(status=r.get("status"), example=r.get("example"), _best=r.get("count", 0))
            g["count"] = g.get("count", 0) + r.get("count", 0)
            g["first_seen"] = min(filter(None, [g.get("first_seen"), r.get("first_seen")]), default=None)
            g["last_seen"] = max(filter(None, [g.get("last_seen"), r.get("last_seen")]), default=None)
            g["hosts"].append(a.target.name)
    items = sorted(groups.values(), key=lambda g: (-g.get("count", 0), str(g.get("reply"))))[:limit]
    for g in items:
        g.pop("_best", None)
        g["share"] = round(g.get("count", 0) / total, 4) if total else 0.0
    body = {k: first.get(k) for k in ("vmta", "pool", "isp", "since", "until")} if first else {}
    return {**body, "window_capped": capped, "scan_limited": limited, "total": total, "replies": items}
