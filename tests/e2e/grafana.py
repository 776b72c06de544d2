"""What Grafana sends for a dashboard, without Grafana: variables, interpolation, every target, every annotation.

No Grafana server runs here, so this module plays the browser + Grafana's query layer against a real
Prometheus (and the Watchtower / Alertmanager HTTP APIs for Infinity targets):

* variables resolved in order as on first open: `datasource` -> the data source, query variables
  -> `label_values()` through /api/v1/label/<l>/values with match[] over the time range, default
  selection All (the first option) when `includeAll`, custom -> first value, textbox -> its default;
  or the values of a dashboard link (`var-x=...`), as an alert link opens it;
* interpolation as the Prometheus data source does it: a multi-value or All selection becomes
  `(a|b)` with regex specials escaped, All with an `allValue` becomes that value verbatim; other data
  sources (Infinity) get `{a,b}` (glob) unless a format (`:csv`, `:percentencode`, ...) is given;
* `$__interval` = range / max data points (the panel's `maxDataPoints`, else its pixel width),
  at least the panel's min interval and the data source's scrape interval, rounded as Grafana rounds;
  `$__rate_interval` = max($__interval + scrape interval, 4 x scrape interval); `$__range`;
* range targets on /api/v1/query_range with step = $__interval, instant targets on /api/v1/query;
  Infinity targets GET base URL + URL (redirects followed, >= 400 is an error) and apply the GJSON
  root selector subset the dashboards use (`a.b`, `#.field`, `|@flatten`).
Repeated rows and panels run once per selected value of their variable (at most `max_repeats`).
"""

from __future__ import annotations

import json
import math
import re
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx

from tests.conftest import REPO

DASHBOARDS = sorted((REPO / "grafana" / "dashboards").glob("*.json"))
INFINITY = "yesoreyeram-infinity-datasource"
ALL = "$__all"
_VAR = re.compile(r"\$\{(\w+)(?::([^}]+))?\}|\$(\w+)|\[\[(\w+)\]\]")
_UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
# Grafana's interval rounding (rangeutil.roundInterval): thresholds -> value, in seconds.
_ROUND = [(0.015, 0.01), (0.035, 0.02), (0.075, 0.05), (0.15, 0.1), (0.35, 0.2), (0.75, 0.5), (1.5, 1),
          (3.5, 2), (7.5, 5), (12.5, 10), (17.5, 15), (25, 20), (45, 30), (90, 60), (210, 120), (450, 300),
          (750, 600), (1050, 900), (1500, 1200), (2700, 1800), (5400, 3600), (9000, 7200), (16200, 10800),
          (32400, 21600), (86400, 43200)]


def seconds(text: str) -> float:
    m = re.fullmatch(r"(\d+(?:\.\d+)?)(ms|s|m|h|d|w)", text.strip())
    assert m, text
    return float(m.group(1)) * _UNITS[m.group(2)]


def round_interval(s: float) -> float:
    for limit, value in _ROUND:
        if s < limit:
            return value
    return 86400.0


def dur(s: float) -> str:
    return f"{max(1, round(s))}s" if s >= 1 else f"{max(1, round(s * 1000))}ms"


def regex_escape(value: str) -> str:
    """Grafana's prometheusSpecialRegexEscape: specials get `\\\\` (a backslash inside a PromQL string)."""
    return re.sub(r"[$^*{}\[\]'+?.()|]", lambda m: "\\\\" + m.group(), value.replace("\\", "\\\\\\\\"))


@dataclass
class Variable:
    name: str
    spec: dict[str, Any]
    values: list[str] = field(default_factory=list)  # the selection
    options: list[str] = field(default_factory=list)  # every value found (All expands to these)

    @property
    def is_all(self) -> bool:
        return self.values == [ALL]

    @property
    def selected(self) -> list[str]:
        return self.options if self.is_all else self.values


@dataclass
class Result:
    dashboard: str
    panel: str
    ref: str
    kind: str  # prometheus | infinity | annotation
    query: str
    status: str  # data | empty | error
    series: int = 0
    detail: str = ""
    frames: Any = None


class Grafana:
    """Runs dashboards against `prom_url`; Infinity data sources by variable name -> base URL."""

    def __init__(self, prom_url: str, infinity: dict[str, str], scrape_interval: float = 1.0,
                 now: float | None = None, record_time: Callable[[float], float] | None = None) -> None:
        self.prom = prom_url
        self.infinity = infinity
        self.record_time = record_time or (lambda t: t)
        """Wall time -> the accounting records' time (a simulator running faster than real time is ahead)."""
        self.scrape = scrape_interval
        self.now = now
        self.http = httpx.Client(timeout=30, follow_redirects=True)

    def close(self) -> None:
        self.http.close()

    # --- variables -------------------------------------------------------------------------------

    def variables(self, dash: dict[str, Any], start: float, end: float,
                  link: dict[str, list[str]] | None = None) -> tuple[dict[str, Variable], list[Result]]:
        """The variables in order (each query sees the ones before it) and the result of each query."""
        out: dict[str, Variable] = {}
        results: list[Result] = []
        for spec in dash["templating"]["list"]:
            var = Variable(spec["name"], spec)
            kind = spec["type"]
            if kind == "datasource":
                var.values = var.options = [spec["name"]]
            elif kind == "custom":
                var.options = [v.strip() for v in spec["query"].split(",")]
                var.values = var.options[:1]
            elif kind == "textbox":
                var.values = var.options = [spec.get("query", "")]
            elif kind == "query":
                query = spec["query"]["query"] if isinstance(spec["query"], dict) else spec["query"]
                m = re.fullmatch(r"label_values\((.+),\s*(\w+)\)", query)
                assert m, query
                selector = self.interpolate(m.group(1), out, "prometheus", start, end, {})
                r = self.http.get(f"{self.prom}/api/v1/label/{m.group(2)}/values",
                                  params={"match[]": selector, "start": start, "end": end})
                ok = r.status_code == 200 and r.json().get("status") == "success"
                var.options = sorted(r.json()["data"]) if ok else []
                results.append(Result(dash["uid"], f"variable: {var.name}", "-", "variable", selector,
                                      ("data" if var.options else "empty") if ok else "error", len(var.options),
                                      "" if ok else r.text[:300], var.options))
                if spec.get("includeAll"):
                    var.values = [ALL]
                else:
                    var.values = var.options[:1]
            if link and spec["name"] in link:
                var.values = link[spec["name"]]
            out[var.name] = var
        return out, results

    # --- interpolation --------------------------------------------------------------------------

    def interpolate(self, text: str, vars: dict[str, Variable], ds: str, start: float, end: float,
                    builtins: dict[str, str]) -> str:
        def one(m: re.Match[str]) -> str:
            name = m.group(1) or m.group(3) or m.group(4)
            fmt = m.group(2)
            if name in builtins:
                return builtins[name]
            if name in ("__from", "__to"):
                t = start if name == "__from" else end
                t = self.record_time(t) if ds == INFINITY else t
                return str(int(t)) if fmt == "date:seconds" else str(int(t * 1000))
            if name not in vars:
                return m.group(0)  # $1 of label_replace, ${__data...}: left as is
            var = vars[name]
            spec = var.spec
            if var.is_all and spec.get("allValue") not in (None, ""):
                raw: str | list[str] = spec["allValue"]
            else:
                raw = var.selected if (spec.get("multi") or spec.get("includeAll")) else var.selected[0]
            values = raw if isinstance(raw, list) else [raw]
            if fmt == "csv":
                return ",".join(values)
            if fmt == "percentencode":
                return quote(",".join(values) if len(values) > 1 else values[0], safe="")
            if fmt == "queryparam":
                return "&".join(f"var-{name}={quote(v, safe='')}" for v in (
                    [ALL] if var.is_all else values))
            if fmt:
                raise AssertionError(f"format {fmt} not emulated")
            if ds == "prometheus":
                if isinstance(raw, str):
                    return raw if (var.is_all or not (spec.get("multi") or spec.get("includeAll"))) \
                        else regex_escape(raw)
                escaped = [regex_escape(v) for v in values]
                return escaped[0] if len(escaped) == 1 else "(" + "|".join(escaped) + ")"
            if isinstance(raw, str) or len(values) == 1:
                return values[0]
            return "{" + ",".join(values) + "}"

        return _VAR.sub(one, text)

    # --- running -------------------------------------------------------------------------------

    def intervals(self, panel: dict[str, Any], start: float, end: float) -> dict[str, str]:
        width_px = panel.get("gridPos", {}).get("w", 24) / 24 * 1800
        points = panel.get("maxDataPoints") or width_px
        floor = max(self.scrape, seconds(panel["interval"]) if panel.get("interval") else 0)
        interval = max(floor, round_interval((end - start) / points))
        rate = max(interval + self.scrape, 4 * self.scrape)
        return {"__interval": dur(interval), "__rate_interval": dur(rate), "__range": dur(end - start),
                "__range_s": str(round(end - start)), "__interval_ms": str(int(interval * 1000)),
                "_step": str(interval)}

    def prometheus(self, expr: str, instant: bool, start: float, end: float, step: str) -> tuple[str, int, str, Any]:
        if instant:
            r = self.http.get(f"{self.prom}/api/v1/query", params={"query": expr, "time": end})
        else:
            s = float(step)
            r = self.http.get(f"{self.prom}/api/v1/query_range", params={
                "query": expr, "start": math.floor(start / s) * s, "end": math.ceil(end / s) * s, "step": s})
        body = r.json()
        if r.status_code >= 400 or body.get("status") != "success":
            return "error", 0, body.get("error", r.text)[:300], None
        result = body["data"]["result"]
        samples = [v for s in result for v in ([s["value"]] if "value" in s else s.get("values", []))
                   if v[1] not in ("NaN",)]
        return ("data" if samples else "empty"), len(result), "", result

    def infinity_get(self, base: str, url: str, root: str) -> tuple[str, int, str, Any]:
        r = self.http.get(base + url)
        if r.status_code >= 400:
            return "error", 0, f"HTTP {r.status_code}: {r.text[:200]}", None
        rows = gjson(r.json(), root)
        rows = rows if isinstance(rows, list) else [rows] if rows is not None else []
        return ("data" if rows else "empty"), len(rows), "", rows

    def run(self, path: Path, link: dict[str, list[str]] | None = None, max_repeats: int = 2,
            since: float | None = None) -> list[Result]:
        """Every panel target and annotation of the dashboard at `path`, as Grafana would on open."""
        dash = json.loads(path.read_text())
        end = self.now or time.time()
        start = end - seconds(dash["time"]["from"].removeprefix("now-"))
        if since is not None:
            start = max(start, since)
        vars, var_results = self.variables(dash, start, end, link)
        jobs: list[tuple[str, str, str, str, bool, dict[str, str], dict[str, Any] | None]] = []
        uid = dash["uid"]
        for panel, scoped in expand(dash, vars, max_repeats):
            b = self.intervals(panel, start, end)
            for t in panel.get("targets", []):
                ds = t.get("datasource", panel.get("datasource", {}))
                if ds.get("type") == INFINITY:
                    jobs.append((panel["title"], t["refId"], "infinity", t["url"], False, b,
                                 {"scoped": scoped, "ds": ds["uid"], "root": t["root_selector"]}))
                else:
                    jobs.append((panel["title"], t["refId"], "prometheus", t["expr"], t.get("instant", False), b,
                                 {"scoped": scoped}))
        for ann in dash["annotations"]["list"]:
            if "expr" in ann:
                b = self.intervals({"interval": ann.get("step", "")} if ann.get("step") else {}, start, end)
                jobs.append(("annotation: " + ann["name"], "-", "annotation", ann["expr"], False, b, {"scoped": {}}))

        def do(job: tuple[str, str, str, str, bool, dict[str, str], dict[str, Any] | None]) -> Result:
            title, ref, kind, query, instant, b, extra = job
            assert extra is not None
            scoped_vars = {**vars, **extra["scoped"]}
            if kind == "infinity":
                name = extra["ds"].strip("${}")
                url = self.interpolate(query, scoped_vars, INFINITY, start, end, b)
                status, n, detail, frames = self.infinity_get(self.infinity[name], url, extra["root"])
                return Result(uid, title, ref, kind, url, status, n, detail, frames)
            expr = self.interpolate(query, scoped_vars, "prometheus", start, end, b)
            status, n, detail, frames = self.prometheus(expr, instant, start, end, b["_step"])
            return Result(uid, title, ref, kind, expr, status, n, detail, frames)

        with ThreadPoolExecutor(max_workers=4) as pool:
            return var_results + list(pool.map(do, jobs))


def expand(dash: dict[str, Any], vars: dict[str, Variable],
           max_repeats: int) -> Iterator[tuple[dict[str, Any], dict[str, Variable]]]:
    """Panels with their scoped variables: a repeated row/panel once per selected value (capped)."""

    def scoped(repeat: str | None) -> list[dict[str, Variable]]:
        if not repeat:
            return [{}]
        var = vars[repeat]
        return [{repeat: Variable(repeat, {**var.spec, "multi": False, "includeAll": False}, [v], [v])}
                for v in var.selected[:max_repeats]]

    for panel in dash["panels"]:
        if panel["type"] == "row":
            for scope in scoped(panel.get("repeat")):
                for child in panel.get("panels", []):
                    yield child, scope
            continue
        for scope in scoped(panel.get("repeat")):
            yield panel, scope


def gjson(doc: Any, path: str) -> Any:
    """The GJSON subset of the dashboards' root selectors: `a.b`, `#.field` (map), `|@flatten`, ``."""
    if not path:
        return doc
    head, _, modifier = path.partition("|")
    cur = doc
    for part in head.split("."):
        if part == "#":
            continue
        if isinstance(cur, list):
            cur = [x.get(part) for x in cur if isinstance(x, dict)]
        elif isinstance(cur, dict):
            cur = cur.get(part)
        else:
            return None
    if modifier == "@flatten" and isinstance(cur, list):
        cur = [y for x in cur for y in (x if isinstance(x, list) else [x])]
    return cur


def merge_table(results: list[Result], keys: list[str]) -> list[dict[str, Any]]:
    """Grafana's merge transformation over instant table queries: one row per label tuple of `keys`."""
    rows: dict[tuple[str, ...], dict[str, Any]] = {}
    for r in results:
        for s in r.frames or []:
            labels = s["metric"]
            key = tuple(labels.get(k, "") for k in keys)
            row = rows.setdefault(key, dict(zip(keys, key, strict=True)))
            row[f"Value #{r.ref}"] = float(s["value"][1])
    return list(rows.values())
