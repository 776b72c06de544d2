"""Scenarios: what happens when, as YAML on a time axis relative to the simulation start.

A scenario = baseline traffic settings + a list of events, each active in a window
(`at` .. `until`, optionally repeating `every` .. `for` against the simulated local clock).
Event kinds: `reply` (force an SMTP reply on matching attempts), `complaints` (FBL complaint
probability), `pause` (queues paused), `inject` (an extra campaign). The schema is documented in
docs/simulator.md; shipped scenarios live in simulator/scenarios/*.yaml.
"""

from __future__ import annotations

import fnmatch
import math
import os
import re
from datetime import UTC, datetime
from importlib import resources
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from exporter.cliargs import MAX_DURATION
from simulator.providers import MIXES, PROVIDERS
from simulator.replies import CATALOGUE
from simulator.yamlfile import YamlFileError, keys_of, parse_mapping, read_mapping, validation_problem

_PART = re.compile(r"(\d+(?:\.\d+)?)\s*(ms|s|m|h|d|w)")
_UNIT = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


MAX_RATE = 1000.0
"""Most recipients a second a rate (`traffic.rate`, an `inject` event's, `pmta-sim --config`'s `rate`) may give:
3.6 million an hour, more than a large PowerMTA host sends (the shipped scenarios use 3-14). Each recipient is
simulated one by one, so `rate: 1e9` never finished its first simulated second."""


def parse_offset(value: Any) -> float:
    """Seconds from a number or `90s`, `20m`, `1h30m`, `3d`; a finite number only (`.inf` and a 400-digit number
    are refused here, which names the key, rather than overflowing later)."""
    if isinstance(value, bool):
        raise ValueError("expected a duration")
    if isinstance(value, int | float):
        seconds = _finite(value)
    else:
        text = str(value).replace(" ", "")
        if not text or _PART.sub("", text):
            raise ValueError(f"invalid duration {_short(value)}: use e.g. 90s, 20m, 1h30m, 3d")
        seconds = sum(float(n) * _UNIT[u] for n, u in _PART.findall(text))
    if not math.isfinite(seconds):
        raise ValueError(f"expected a finite duration, got {_short(value)}")
    return seconds


def start_epoch(text: str) -> int:
    """The epoch second of a simulated start, ISO 8601 with a UTC offset (`2024-06-12 08:00:00+00:00`, `...Z`),
    from 1970 to 30 days before the year 10000 (a run that reached it failed with `year 10000 is out of range`);
    ValueError in the user's terms."""
    try:
        dt = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise ValueError(f"expected ISO 8601 with a UTC offset, e.g. 2024-06-12T08:00:00+00:00, got {_short(text)}"
                         ) from None
    if dt.tzinfo is None:
        raise ValueError(f"start time {text!r} needs a UTC offset, e.g. +00:00")
    try:
        epoch = int(dt.timestamp())
        datetime.fromtimestamp(epoch + int(MAX_DURATION) + 2 * 86400, UTC)
    except (ValueError, OverflowError, OSError):
        epoch = -1
    if epoch < 0:
        raise ValueError(f"expected a start from 1970 to 9999-11-30, got {text!r}")
    return epoch


def _finite(value: int | float) -> float:
    try:
        return float(value)
    except OverflowError:
        raise ValueError(f"expected a finite duration, got a number of {len(str(abs(value)))} digits") from None


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else f"{text[:30]}... ({len(text)} characters)"


Offset = Annotated[float, BeforeValidator(parse_offset), Field(ge=0)]
Patterns = Annotated[list[str] | None, BeforeValidator(lambda v: [v] if isinstance(v, str) else v)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True, allow_inf_nan=False)


class Match(_Strict):
    """Which recipients/queues an event applies to; each key takes a glob or a list of globs (all must hold)."""

    vmta: Patterns = None
    pool: Patterns = None
    isp: Patterns = None
    domain: Patterns = None
    sender: Patterns = None
    job: Patterns = None

    def matches(self, **values: str) -> bool:
        for key, patterns in self:
            if patterns is not None and not any(fnmatch.fnmatchcase(values.get(key, ""), p) for p in patterns):
                return False
        return True


class Quality(_Strict):
    """Per-recipient chances decided at injection: the list's quality."""

    user_unknown: float = Field(default=0.005, ge=0, le=1)
    bad_domain: float = Field(default=0.001, ge=0, le=1)
    mailbox_full: float = Field(default=0.002, ge=0, le=1)
    content_block: float = Field(default=0.0005, ge=0, le=1)


def _check_mix(value: Any) -> Any:
    if isinstance(value, str):
        if value not in MIXES:
            raise ValueError(f"unknown mix {value!r}; presets: {', '.join(MIXES)}")
    elif isinstance(value, dict):
        unknown = sorted(set(value) - set(PROVIDERS), key=str)
        if unknown:
            raise ValueError(f"unknown provider(s) {unknown}; known: {', '.join(PROVIDERS)}")
        shares = [w for w in value.values() if isinstance(w, int | float) and not isinstance(w, bool)]
        if len(shares) == len(value):  # other values: pydantic says what is wrong with them
            if any(not math.isfinite(w) or w < 0 for w in shares):
                raise ValueError("each provider's share must be a finite number, 0 or more")
            if not any(w > 0 for w in shares):
                raise ValueError("give at least one provider a share greater than 0")
    return value


Mix = Annotated[str | dict[str, float], BeforeValidator(_check_mix)]


class _Window(_Strict):
    at: Offset = 0.0
    until: Offset | None = None
    every: Offset | None = None
    for_: Offset | None = Field(default=None, alias="for")
    match: Match = Field(default_factory=Match)

    @model_validator(mode="after")
    def _window(self) -> _Window:
        if self.until is not None and self.until <= self.at:
            raise ValueError("`until` must be after `at`")
        if (self.every is None) != (self.for_ is None):
            raise ValueError("`every` and `for` go together")
        return self

    def active(self, rel: float, sec_of_day: int) -> bool:
        if rel < self.at or (self.until is not None and rel >= self.until):
            return False
        if self.every:
            return sec_of_day % self.every < (self.for_ or 0)
        return True


class _Chance(_Window):
    probability: float | None = Field(default=None, ge=0, le=1)
    ramp: tuple[float, float] | None = None
    """Probability rising linearly from ramp[0] at `at` to ramp[1] at `until`."""

    @model_validator(mode="after")
    def _one_chance(self) -> _Chance:
        if (self.probability is None) == (self.ramp is None):
            raise ValueError("give exactly one of `probability` or `ramp`")
        if self.ramp is not None and self.until is None:
            raise ValueError("`ramp` needs `until`")
        return self

    def chance(self, rel: float) -> float:
        if self.ramp is None:
            return self.probability or 0.0
        lo, hi = self.ramp
        frac = min(1.0, max(0.0, (rel - self.at) / ((self.until or rel) - self.at or 1)))
        return lo + (hi - lo) * frac


class ReplyEvent(_Chance):
    kind: Literal["reply"] = "reply"
    reply: str
    level: Literal["recipient", "queue"] = "recipient"
    """`queue`: the reply comes on connect, PMTA logs one `tq` record and tries the queue later."""

    @field_validator("reply")
    @classmethod
    def _known(cls, value: str) -> str:
        if value not in CATALOGUE:
            raise ValueError(f"unknown reply {value!r}; see simulator/replies.py")
        return value


class ComplaintEvent(_Chance):
    kind: Literal["complaints"]
    feedback_type: str = "abuse"


class PauseEvent(_Window):
    kind: Literal["pause"]


class InjectEvent(_Window):
    kind: Literal["inject"]
    name: str = "campaign"
    rate: float = Field(gt=0, le=MAX_RATE, description="Recipients per simulated second (at most MAX_RATE).")
    sender: str | None = None
    job: str | None = None
    vmta: str | None = None
    pool: str | None = None
    mix: Mix | None = None
    quality: Quality | None = None


Event = Annotated[ReplyEvent | ComplaintEvent | PauseEvent | InjectEvent, Field(discriminator="kind")]


def _default_kind(value: Any) -> Any:
    if isinstance(value, list):
        return [dict(e, kind=e.get("kind", "reply")) if isinstance(e, dict) else e for e in value]
    return value


class Traffic(_Strict):
    rate: float | None = Field(default=None, gt=0, le=MAX_RATE,
                               description="Baseline recipients per simulated second (at most MAX_RATE).")
    mix: Mix | None = None
    quality: Quality | None = None
    complaint_rate: float | None = Field(default=None, ge=0, le=1)


def _at_most_30_days(value: Any) -> Any:
    """`duration` past MAX_DURATION (`.inf`, `999...9w`), said with the bound (pydantic's finite check came first)."""
    seconds = parse_offset(value) if not isinstance(value, int | float) or isinstance(value, bool) else value
    if isinstance(seconds, int | float) and not isinstance(seconds, bool) and not seconds <= MAX_DURATION:
        raise ValueError(f"expected at most {int(MAX_DURATION)} seconds (30 days), got {_short(value)}")
    return value


class Scenario(_Strict):
    name: str
    description: str = ""
    duration: Annotated[Offset, Field(le=int(MAX_DURATION)), BeforeValidator(_at_most_30_days)] = 3600.0
    """What `generate` simulates without `--minutes`; at most 30 days, as `--minutes` (`.inf` ran for ever)."""
    start: Annotated[str | None, AfterValidator(lambda v: v if v is None else (start_epoch(v), v)[1])] = None
    """Default simulated start, ISO 8601 with offset (e.g. `2024-06-12 08:00:00+00:00`)."""
    traffic: Traffic = Field(default_factory=Traffic)
    pools: Annotated[dict[str, list[str]] | None, AfterValidator(lambda v: check_pools(v) if v else None)] = None
    """The settings' pools replaced; `{}` (as before the bounds) replaces nothing."""
    events: Annotated[list[Event], BeforeValidator(_default_kind)] = Field(default_factory=list)

    def of_kind(self, cls: type) -> list[Any]:
        return [e for e in self.events if isinstance(e, cls)]


def check_pools(pools: dict[str, list[str]]) -> dict[str, list[str]]:
    """`pools` as a scenario or the settings give it: at least one VMTA, a VMTA in one pool only (a pool no VMTA is in
    yet, `reserve: []`, is kept: nothing sends through it)."""
    if not any(pools.values()):
        raise ValueError("give at least one pool with a VMTA, e.g. {pool-a: [vmta-01]}")
    seen: dict[str, str] = {}
    for name, members in pools.items():
        for vmta in members:
            if vmta in seen:
                raise ValueError(f"VMTA {vmta!r} is in pool {seen[vmta]!r} and in pool {name!r}: one pool only")
            seen[vmta] = name
    return pools


class ScenarioError(ValueError):
    """A scenario that cannot be loaded, in one line naming the file (and the key): `pmta-sim` and `watchtower demo`
    print it as is and exit 2."""


def list_scenarios() -> list[str]:
    folder = resources.files("simulator").joinpath("scenarios")
    return sorted(p.name.removesuffix(".yaml") for p in folder.iterdir() if p.name.endswith(".yaml"))


def load_scenario(name_or_path: str | Path) -> Scenario:
    """A shipped scenario by name (`gmail-throttle`) or a YAML file by path (a regular file or a pipe, at most
    simulator.yamlfile.MAX_BYTES)."""
    if _names_a_file(str(name_or_path)):  # named as given (`./x.yaml`, not Path's `x.yaml`)
        try:
            return _validated(read_mapping(name_or_path, "scenario", keys_of(Scenario)), str(name_or_path))
        except YamlFileError as exc:
            raise ScenarioError(str(exc)) from None
    if str(name_or_path) not in list_scenarios():
        raise ScenarioError(f"unknown scenario {str(name_or_path)!r}; shipped: {', '.join(list_scenarios())}")
    res = resources.files("simulator").joinpath("scenarios", f"{name_or_path}.yaml")
    return parse_scenario(res.read_bytes(), f"simulator/scenarios/{name_or_path}.yaml")


def _names_a_file(name: str) -> bool:
    """A path (a YAML suffix, a slash, or a file by that name) rather than a shipped scenario's name: `./x` or
    `dir/x` that is not there is a missing file, not an unknown scenario. Path.exists() raises for a name the system
    refuses (too long): that is read, and the read says why."""
    if name.endswith((".yaml", ".yml")) or os.sep in name:
        return True
    try:
        return Path(name).exists()
    except (OSError, ValueError):
        return True


def parse_scenario(text: str | bytes, where: str = "<scenario>") -> Scenario:
    """A scenario from YAML text (bytes: UTF-8); ScenarioError in one line naming `where`."""
    try:
        return _validated(parse_mapping(text, where, "scenario", keys_of(Scenario)), where)
    except YamlFileError as exc:
        raise ScenarioError(str(exc)) from None


def _validated(data: dict[str, Any], where: str) -> Scenario:
    """The scenario of a top-level mapping; pydantic's errors as one line (YamlFileError) naming `where`."""
    try:
        return Scenario.model_validate(data)
    except ValidationError as exc:
        raise validation_problem(exc, where) from None
