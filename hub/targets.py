"""Which daemons the hub asks: a static list, Prometheus file_sd files, a Prometheus job's targets.

Dynamic sources are re-read at most every `refresh_interval`, lazily on a request; when a source
cannot be read the last good list stays in use (and the problem is logged once per change), so a
Prometheus restart never empties the hub.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import yaml

from exporter.config import TOO_DEEP
from exporter.textrepair import SURROGATE_PROBLEM, surrogate_paths
from hub.config import HubSection, StaticTarget

log = logging.getLogger(__name__)


@dataclass(frozen=True, order=True)
class Target:
    name: str
    url: str


def _name_of(url: str) -> str:
    parts = urlsplit(url)
    return parts.netloc.rpartition("@")[2] or url


def static_targets(section: HubSection) -> list[Target]:
    out = []
    for t in section.targets:
        st = t if isinstance(t, StaticTarget) else StaticTarget(url=t)
        url = st.url.rstrip("/")
        out.append(Target(st.name or _name_of(url), url))
    return out


def read_file_sd(path: Path, scheme: str) -> list[Target]:
    """Targets of one file_sd file: `[{"targets": ["host:port"], "labels": {...}}]` in JSON or YAML."""
    text = path.read_text(encoding="utf-8")
    try:
        data: Any = json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
    except RecursionError:  # json and PyYAML's composer recurse once per level of nesting
        raise ValueError(f"{path}: {TOO_DEEP}") from None
    if not isinstance(data, list):
        raise ValueError(f"{path}: expected a list of target groups")
    broken = surrogate_paths(data)
    if broken:  # a target's name is shown in every answer: it must encode
        raise ValueError(f"{path}: {broken[0]}: {SURROGATE_PROBLEM}")
    out = []
    for i, group in enumerate(data):
        if not isinstance(group, dict) or not isinstance(group.get("targets"), list):
            raise ValueError(f"{path}: group {i}: expected a mapping with a `targets` list")
        for hostport in group["targets"]:
            out.append(Target(str(hostport), f"{scheme}://{hostport}"))
    return out


def parse_prometheus_targets(body: dict[str, Any], job: str) -> list[Target]:
    """Active targets of `job` from a Prometheus /api/v1/targets answer, named by their instance label."""
    out = []
    for t in body.get("data", {}).get("activeTargets", []):
        labels = t.get("labels") or {}
        if labels.get("job") != job:
            continue
        parts = urlsplit(t.get("scrapeUrl", ""))
        if not parts.netloc:
            continue
        out.append(Target(labels.get("instance") or parts.netloc, f"{parts.scheme}://{parts.netloc}"))
    return out


def _unique_names(targets: list[Target]) -> list[Target]:
    """A name picks the host a timeline is asked of (`?host=`): targets that share one (relabelled Prometheus
    instances, two static entries) are named by their host:port instead, or their URL if that is shared too."""
    def shared(ts: list[Target]) -> set[str]:
        names = [t.name for t in ts]
        return {n for n in names if names.count(n) > 1}

    twice = shared(targets)
    out = [Target(_name_of(t.url), t.url) if t.name in twice else t for t in targets]
    twice = shared(out)
    return [Target(t.url, t.url) if t.name in twice else t for t in out]


class TargetSet:
    """The current targets, deduplicated by URL and sorted by name (a stable order for merges)."""

    def __init__(self, section: HubSection, clock: Any = time.monotonic) -> None:
        self.section = section
        self.clock = clock
        self.static = static_targets(section)
        self._dynamic: dict[str, list[Target]] = {}
        self._errors: dict[str, str] = {}
        self._fresh_at: float | None = None

    @property
    def dynamic(self) -> bool:
        return bool(self.section.file_sd or self.section.prometheus)

    async def current(self) -> list[Target]:
        if self.dynamic and (self._fresh_at is None or self.clock() - self._fresh_at >= self.section.refresh_interval):
            self._fresh_at = self.clock()
            await self._refresh()
        seen: dict[str, Target] = {}
        for t in [*self.static, *(t for ts in self._dynamic.values() for t in ts)]:
            seen.setdefault(t.url, t)
        return sorted(_unique_names(list(seen.values())))

    async def _refresh(self) -> None:
        for path in self.section.file_sd:
            self._update(str(path), lambda p=path: read_file_sd(p, self.section.scheme))
        prom = self.section.prometheus
        if prom is not None:
            key = f"prometheus {prom.url} job {prom.job}"
            try:
                async with httpx.AsyncClient(timeout=self.section.timeout) as client:
                    resp = await client.get(prom.url.rstrip("/") + "/api/v1/targets", params={"state": "active"})
                    resp.raise_for_status()
                    body = resp.json()
                self._update(key, lambda: parse_prometheus_targets(body, prom.job))
            except (httpx.HTTPError, ValueError) as exc:
                self._failed(key, f"{type(exc).__name__}: {exc}")

    def _update(self, key: str, read: Any) -> None:
        try:
            self._dynamic[key] = read()
            if self._errors.pop(key, None) is not None:
                log.info("targets from %s readable again", key)
        except (OSError, ValueError, yaml.YAMLError) as exc:
            self._failed(key, str(exc))

    def _failed(self, key: str, why: str) -> None:
        if self._errors.get(key) != why:
            log.warning("cannot read targets from %s (keeping the last list): %s", key, why)
        self._errors[key] = why
