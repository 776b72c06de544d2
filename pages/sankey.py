"""A Sankey diagram (sender -> VMTA -> ISP) as static SVG from the /api/v1/flows nodes and edges.

Link width is proportional to the link's attempts (delivered + bounced + deferred), with one
scale for the whole diagram (`data-px-per-attempt` on the <svg>), so widths compare across links;
colour goes from red (0% delivered) to green (100%). Each link's <title> gives the delivered,
deferral and bounce shares (a tooltip without JavaScript).
"""

from __future__ import annotations

from typing import Any

from pages.html import attr, e

WIDTH, HEIGHT, NODE_W, GAP, TOP = 1200, 520, 14, 10, 10
LABEL = 16
"""Least distance between the tops of two nodes of a column: their 12px labels never overlap."""
LABEL_CHARS = 24
"""Longest node label; a longer name is cut (with an ellipsis) and shown whole in the node's tooltip: with its
count it fits the 234px left of the sender column and right of the ISP column."""
COLUMNS = {"sender": 240, "vmta": 593, "isp": 946}


def label(name: str) -> str:
    return name if len(name) <= LABEL_CHARS else name[:LABEL_CHARS - 1] + "\u2026"


def attempts(item: dict[str, Any]) -> int:
    return int(item.get("detail__delivered", 0)) + int(item.get("detail__bounced", 0)) + int(
        item.get("detail__deferred", 0))


def colour(delivered_share: float) -> str:
    return f"hsl({round(120 * max(0.0, min(1.0, delivered_share)))},70%,42%)"


def shares(item: dict[str, Any]) -> tuple[float, float, float]:
    n = attempts(item)
    if not n:
        return 0.0, 0.0, 0.0
    return (int(item.get("detail__delivered", 0)) / n, int(item.get("detail__deferred", 0)) / n,
            int(item.get("detail__bounced", 0)) / n)


def sankey_svg(flows: dict[str, Any]) -> str:
    nodes = {n["id"]: n for n in flows.get("nodes", []) if n.get("subtitle") in COLUMNS}
    edges = [x for x in flows.get("edges", []) if x.get("source") in nodes and x.get("target") in nodes
             and attempts(x) > 0]
    value: dict[str, int] = {nid: 0 for nid in nodes}
    inflow: dict[str, int] = {nid: 0 for nid in nodes}
    for x in edges:
        value[x["source"]] += attempts(x)
        inflow[x["target"]] += attempts(x)
    for nid in nodes:
        value[nid] = max(value[nid], inflow[nid])
    cols: dict[str, list[str]] = {k: [] for k in COLUMNS}
    for nid, n in nodes.items():
        if value[nid] > 0:
            cols[n["subtitle"]].append(nid)
    for ids in cols.values():
        ids.sort(key=lambda i: (-value[i], i))
    if not edges:
        return '<p id="no-flows">No traffic in this time range.</p>'
    # A node's step down its column is max(its height + GAP, LABEL) <= height + LABEL, so a column of n nodes
    # fits in 2 * TOP + n * LABEL + its values * scale. The diagram grows with its most crowded column (many
    # VMTAs), so every column keeps room for its values: the scale stays positive and one for all links.
    height = max(HEIGHT, 2 * TOP + max(len(ids) for ids in cols.values()) * (LABEL + GAP))
    scale = min((height - 2 * TOP - LABEL * len(ids)) / sum(value[i] for i in ids) for ids in cols.values() if ids)
    y: dict[str, float] = {}
    parts: list[str] = []
    for ids in cols.values():
        pos = float(TOP)
        for nid in ids:
            y[nid] = pos
            pos += max(value[nid] * scale + GAP, LABEL)
    out_off = dict.fromkeys(nodes, 0.0)
    in_off = dict.fromkeys(nodes, 0.0)
    link_svg = []
    for x in sorted(edges, key=lambda x: (y[x["source"]], y[x["target"]], x["id"])):
        src, dst = x["source"], x["target"]
        w = attempts(x) * scale
        y0 = y[src] + out_off[src] + w / 2
        out_off[src] += w
        x0 = COLUMNS[nodes[src]["subtitle"]] + NODE_W
        x1 = COLUMNS[nodes[dst]["subtitle"]]
        in_base = in_off[dst]
        in_off[dst] += w
        y1 = y[dst] + in_base + w / 2
        xm = (x0 + x1) / 2
        ok, deferred, bounced = shares(x)
        tip = (f"{nodes[src]['title']} \u2192 {nodes[dst]['title']}: {attempts(x)} attempts, "
               f"{ok:.0%} delivered, {deferred:.0%} deferred, {bounced:.0%} bounced, "
               f"{x.get('detail__complained', 0)} complaints")
        link_svg.append(
            f'<path class="link" data-edge="{attr(x["id"])}" data-attempts="{attempts(x)}" '
            f'd="M{x0:.2f},{y0:.2f} C{xm:.2f},{y0:.2f} {xm:.2f},{y1:.2f} {x1:.2f},{y1:.2f}" fill="none" '
            f'stroke="{colour(ok)}" stroke-opacity="0.55" stroke-width="{w:.3f}"><title>{e(tip)}</title></path>')
    parts.extend(link_svg)
    for kind, ids in cols.items():
        for nid in ids:
            n = nodes[nid]
            h = max(value[nid] * scale, 1.0)
            x = COLUMNS[kind]
            ok, deferred, bounced = shares(n)
            anchor, tx = ("end", x - 6) if kind == "sender" else ("start", x + NODE_W + 6)
            parts.append(
                f'<g class="node" data-node="{attr(nid)}"><title>{e(n["title"])}: {value[nid]} attempts, '
                f'{ok:.0%} delivered</title><rect x="{x}" y="{y[nid]:.2f}" width="{NODE_W}" '
                f'height="{h:.2f}" fill="#334155"></rect><text x="{tx}" y="{y[nid] + h / 2 + 4:.2f}" '
                f'text-anchor="{anchor}">{e(label(str(n["title"])))} ({value[nid]})</text></g>')
    return (f'<svg id="sankey" xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{height}" '
            f'viewBox="0 0 {WIDTH} {height}" role="img" aria-label="Sankey diagram sender to VMTA to ISP" '
            f'data-px-per-attempt="{scale:.12g}">' + "".join(parts) + "</svg>")
