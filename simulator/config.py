"""The simulator's settings: topology (VMTAs, pools, senders), traffic, queue behaviour, files, API.

Everything has a default that gives a realistic small PMTA host (8 VMTAs in 2 pools, US B2C mix,
acct/diag/fbl/bounce files). A scenario may override the traffic block and the pools; `pmta-sim
--config` reads the same model from YAML.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, ValidationError, model_validator

from simulator.scenario import MAX_RATE, Mix, Offset, Quality, Scenario, check_pools
from simulator.yamlfile import validation_problem

_SIZE = re.compile(r"^\s*(\d+)\s*([KMG]i?B?|B)?\s*$", re.IGNORECASE)


def _size(value: Any) -> Any:
    if isinstance(value, str):
        m = _SIZE.match(value)
        if not m:
            raise ValueError(f"invalid size {value!r}: use bytes or e.g. 512KiB, 250MiB")
        unit = (m.group(2) or "B").upper().rstrip("B").rstrip("I")
        return int(m.group(1)) * {"": 1, "K": 1024, "M": 1024**2, "G": 1024**3}[unit]
    return value


Size = Annotated[int, BeforeValidator(_size), Field(gt=0)]


def _ordered(value: tuple[Any, Any]) -> tuple[Any, Any]:
    if value[0] > value[1]:
        raise ValueError(f"a range [low, high]: {value[0]:g} is more than {value[1]:g}")
    return value


def _file_name(value: str) -> str:
    """A file's base name: written in the output directory, never elsewhere (`/tmp/x`, `../x` were)."""
    if not value or value in (".", "..") or "/" in value or "\\" in value or "\0" in value or not value.isprintable():
        raise ValueError(f"expected a plain file name (no path, no `..`, no control characters), got {value!r}")
    return value


def _no_nul(value: str | None) -> str | None:
    if value is not None and ("\0" in value or not value):
        raise ValueError(f"expected a directory, got {value!r}")
    return value


Delays = Annotated[tuple[Offset, Offset], AfterValidator(_ordered)]
"""[low, high] seconds, low <= high (`[100, 1]` ended in `empty range for randrange`)."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


class FileSpec(_Strict):
    """One `<acct-file>`: its base name, record types, columns and output details."""

    name: Annotated[str, AfterValidator(_file_name)] = Field(
        description="Base name: files are <dir>/<name>-YYYY-MM-DD-NNNN.csv (.json in the JSON form); no path.")
    records: list[Literal["d", "b", "t", "tq", "f", "rb", "rs", "r"]] = Field(
        description="PMTA's `records`: the record types of this file. `r` (one reception per injected message) is "
        "in no default file (PMTA's own default is `d,b`); add a file such as `{name: recv, records: [r]}`.",
    )
    fields: list[str] = Field(
        default_factory=lambda: ["*", "header_Message-Id"],
        description="PMTA record-fields syntax: `*` = defaults of the file's record types, `!x` removes, "
        "any other name adds (header_* included); an explicit list without `*` sets order exactly.",
    )
    max_size: Size = 250 * 1024**2
    delete_after: Offset | None = Field(
        default=None,
        description="PMTA's `delete-after`: a closed file whose last write is older than this (simulated time) is "
        "deleted; unset: never (PMTA's own default is 8d; here files are kept unless asked).",
    )
    move_to: Annotated[str | None, AfterValidator(_no_nul)] = Field(
        default=None,
        description="PMTA's `move-to DIR` (relative to the output directory, or absolute; made if missing): each "
        "closed file is moved there, and every `move_interval` the current file is closed; `delete_after` then "
        "does not apply. Unset (PMTA's default): files stay where they were written.",
    )
    move_interval: Offset = Field(
        default=86400.0,
        description="PMTA's `move-interval` (default 1d): with `move_to`, how long a file is written before it is "
        "closed and moved (simulated time); ignored without it, as PMTA ignores it.",
    )
    iso_times: bool = True
    newline: Literal["lf", "crlf"] = "lf"
    split_writes: bool = False
    format: Literal["csv", "json"] = Field(
        default="csv",
        description="PMTA's two accounting forms: `csv` (header line first; files `.csv`) or `json` (one object per "
        "record and line, no header; files `.json`).",
    )
    """Hold back the tail of each write (a partial line) until the next tick, as a slow writer would."""


class SenderSpec(_Strict):
    domain: str = Field(description="MAIL FROM domain; orig is bounces@<domain>.")
    tag: str = Field(description="Prefix of this sender's jobIds.")
    pool: str
    weight: float = Field(default=1.0, gt=0)


class QueueSpec(_Strict):
    backoff_rate: float = Field(default=1.0, gt=0, le=MAX_RATE, description="Attempts/s of a queue in backoff mode.")
    backoff_to_normal_after: Offset = 600.0
    retry: list[Offset] = Field(default_factory=lambda: [300.0, 600.0, 1200.0, 1800.0, 3600.0], min_length=1)
    bounce_after: Offset = 8 * 3600.0
    first_attempt_delay: Annotated[tuple[Annotated[int, Field(ge=0, le=86400)], Annotated[int, Field(ge=0, le=86400)]],
                                   AfterValidator(_ordered)] = (1, 20)
    connect_retry: Offset = 60.0
    """After a queue-level (tq) failure the queue waits this long before connecting again."""


class ApiSpec(_Strict):
    max_items: int = Field(default=10, ge=1, description="PMTA's http-default-max-items (top-N lists).")
    api_key: str | None = None
    allow_without_key: bool = True
    """False: only requests with the right X-API-Key get in (others 403), like an IP not in http-access."""
    xml_content_type: str = "text/xml"
    json_paused: Literal["text", "bool"] = "text"
    total_rcp: Literal["filtered", "global"] = Field(
        default="filtered",
        description="What `totalRcp` of a `/queues?queue=...` listing counts: the matching queues (`filtered`) or "
        "every queue (`global`, pmta-http-api.md §5.3's wording \"recipients in all queues\"); UNCERTAIN which "
        "PMTA does, so the exporter must read both.",
    )


def _default_pools() -> dict[str, list[str]]:
    return {"pool-a": [f"vmta-{i:02d}" for i in range(1, 5)], "pool-b": [f"vmta-{i:02d}" for i in range(5, 9)]}


def _default_senders() -> list[SenderSpec]:
    return [
        SenderSpec(domain="news.acme-shop.example", tag="acme", pool="pool-a", weight=0.35),
        SenderSpec(domain="mail.travelco.example", tag="travelco", pool="pool-a", weight=0.25),
        SenderSpec(domain="alerts.bankly.example", tag="bankly", pool="pool-b", weight=0.25),
        SenderSpec(domain="em.fitclub.example", tag="fitclub", pool="pool-b", weight=0.15),
    ]


def _default_files() -> list[FileSpec]:
    return [
        FileSpec(name="acct", records=["d", "b"]),
        FileSpec(name="diag", records=["t", "tq"]),
        FileSpec(name="fbl", records=["f"]),
        FileSpec(name="bounce", records=["rb", "rs"]),
    ]


class SimConfig(_Strict):
    seed: int = 1
    utc_offset_minutes: int = Field(default=0, ge=-720, le=840, description="The simulated host's zone.")
    pools: Annotated[dict[str, list[str]], AfterValidator(check_pools)] = Field(default_factory=_default_pools)
    senders: list[SenderSpec] = Field(default_factory=_default_senders, min_length=1)
    rate: float = Field(default=10.0, gt=0, le=MAX_RATE,
                        description="Baseline recipients injected per simulated second (at most MAX_RATE).")
    vmta_rate_factor: dict[str, Annotated[float, Field(ge=0, le=1000)]] = Field(
        default_factory=dict, description="Per-VMTA factor on every queue's attempt rate (IP warm-up: 0.2)."
    )
    mix: Mix = "us_b2c"
    quality: Quality = Field(default_factory=Quality)
    complaint_rate: float = Field(default=0.0004, ge=0, le=1, description="Per delivery to an FBL provider.")
    remote_bounce_scale: float = Field(default=1.0, ge=0, description="Multiplies each provider's rb chance.")
    message_kb: Annotated[tuple[Annotated[int, Field(ge=1, le=102400)], Annotated[int, Field(ge=1, le=102400)]],
                          AfterValidator(_ordered)] = (15, 90)
    """[low, high] KB of a message, 1 KB to 100 MB."""
    fbl_delay: Delays = (1800.0, 12 * 3600.0)
    rb_delay: Delays = (300.0, 3600.0)
    queue: QueueSpec = Field(default_factory=QueueSpec)
    files: list[FileSpec] = Field(default_factory=_default_files)
    api: ApiSpec = Field(default_factory=ApiSpec)

    @model_validator(mode="after")
    def _consistent(self) -> SimConfig:
        vmtas = [v for members in self.pools.values() for v in members]
        for i, s in enumerate(self.senders):
            if s.pool not in self.pools:
                raise ValueError(f"pools: no pool {s.pool!r}, which senders.{i} ({s.domain}) sends through; "
                                 f"pools: {', '.join(self.pools)}")
        unknown = sorted(set(self.vmta_rate_factor) - set(vmtas))
        if unknown:
            raise ValueError(f"vmta_rate_factor: unknown VMTA(s) {unknown}; pools list {', '.join(vmtas[:10])}")
        routed = [t for f in self.files for t in f.records]
        if len(routed) != len(set(routed)):
            raise ValueError("files: each record type may go to one file only")
        names = [(f.name, f.format) for f in self.files]  # `acct` as .csv and as .json: two files
        if len(names) != len(set(names)):
            raise ValueError("files: each file needs its own name (per format)")
        return self

    @property
    def vmtas(self) -> list[str]:
        return [v for members in self.pools.values() for v in members]

    def pool_of(self) -> dict[str, str]:
        return {v: pool for pool, members in self.pools.items() for v in members}

    def vmta_ip(self, vmta: str) -> str:
        return f"198.51.100.{10 + self.vmtas.index(vmta) % 240}"

    def with_scenario(self, scenario: Scenario) -> SimConfig:
        """This config with the scenario's traffic and pool overrides applied."""
        t = scenario.traffic
        changes: dict[str, Any] = {k: v for k, v in (("rate", t.rate), ("mix", t.mix), ("quality", t.quality),
                                                     ("complaint_rate", t.complaint_rate)) if v is not None}
        if scenario.pools:
            changes["pools"] = scenario.pools
        return SimConfig.model_validate({**self.model_dump(), **changes}) if changes else self

    def for_scenario(self, scenario: Scenario, where: str) -> SimConfig:
        """with_scenario, its problems (the scenario's pools without the senders' pool) a YamlFileError in one line
        naming `where` (the scenario's file) and the key."""
        try:
            return self.with_scenario(scenario)
        except ValidationError as exc:
            raise validation_problem(exc, where) from None
