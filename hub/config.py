"""The hub's configuration: its own listener, where the daemons are, and how to reach them.

Kept apart from the daemon's Config (the hub tails nothing) but with the same `listen` and `web`
keys, so a hub is secured exactly like a daemon. Unknown keys are rejected by name.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from exporter.config import (
    ConfigError,
    ConfigPath,
    Duration,
    HttpUrl,
    Listener,
    WebConfig,
    check_listen,
    describe_error,
    read_config_mapping,
)

HUB_API_CONCURRENCY = 16


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class StaticTarget(_Strict):
    url: str = Field(description="Daemon base URL, e.g. http://pmta-1:9469.")
    name: str | None = Field(default=None, description="Host name shown in answers; default the URL's host:port.")


class PrometheusSource(_Strict):
    url: str = Field(description="Prometheus base URL; the hub reads its /api/v1/targets.")
    job: str = Field(description="Scrape job whose active targets are the daemons.")


class AuthConfig(_Strict):
    username: str | None = Field(default=None, description="Basic auth user sent to the daemons.")
    password_file: ConfigPath | None = Field(default=None, description="File holding the basic auth password.")
    bearer_token_file: ConfigPath | None = Field(default=None, description="File holding a bearer token (instead).")

    @model_validator(mode="after")
    def _one_scheme(self) -> AuthConfig:
        if self.bearer_token_file and (self.username or self.password_file):
            raise ValueError("use either username/password_file or bearer_token_file, not both")
        if bool(self.username) != bool(self.password_file):
            raise ValueError("username and password_file go together")
        return self


class TlsClientConfig(_Strict):
    ca_file: ConfigPath | None = Field(default=None, description="CA bundle to verify the daemons' certificates.")
    cert_file: ConfigPath | None = Field(default=None, description="Client certificate (mutual TLS).")
    key_file: ConfigPath | None = Field(default=None, description="Key of cert_file.")
    insecure_skip_verify: bool = Field(default=False, description="Do not verify the daemons' certificates.")


class HubSection(_Strict):
    targets: list[str | StaticTarget] = Field(default_factory=list, description="Daemon base URLs.")
    file_sd: list[ConfigPath] = Field(
        default_factory=list, description="Prometheus file_sd files (JSON or YAML); targets are host:port."
    )
    prometheus: PrometheusSource | None = Field(default=None, description="Ask a Prometheus for a job's targets.")
    scheme: Literal["http", "https"] = Field(default="http", description="Scheme for file_sd/Prometheus targets.")
    refresh_interval: Duration = Field(default=30.0, description="How often file_sd/Prometheus targets are re-read.")
    timeout: Duration = Field(default=2.0, gt=0, description="Per-host timeout of one request.")
    auth: AuthConfig = Field(default_factory=AuthConfig)
    tls: TlsClientConfig = Field(default_factory=TlsClientConfig)

    @model_validator(mode="after")
    def _some_source(self) -> HubSection:
        if not (self.targets or self.file_sd or self.prometheus):
            raise ValueError("give at least one of targets, file_sd, prometheus")
        return self


class PagesConfig(_Strict):
    grafana_url: HttpUrl = Field(default="http://localhost:3000", description="Grafana base URL for drill-down links.")


class HubConfig(_Strict, Listener):
    """The whole `watchtower hub` configuration."""

    listen: str = Field(default="127.0.0.1:9470", description="host:port of the hub's listener.")
    hub: HubSection
    web: WebConfig = Field(
        default_factory=lambda: WebConfig(api_max_concurrency=HUB_API_CONCURRENCY),
        description="Listener settings as the daemon's `web`; api_max_concurrency defaults to 16 (fan-out waits "
        "on the network, not on a disk).",
    )
    pages: PagesConfig = Field(default_factory=PagesConfig)
    log_level: Literal["debug", "info", "warning", "error"] = Field(default="info", description="Log verbosity.")
    log_format: Literal["text", "json"] = Field(default="text", description="`text` lines or JSON lines.")

    @field_validator("web", mode="before")
    @classmethod
    def _web_defaults(cls, value: Any) -> Any:
        if isinstance(value, dict):
            return {"api_max_concurrency": HUB_API_CONCURRENCY, **value}
        return value

    @field_validator("listen")
    @classmethod
    def _host_port(cls, value: str) -> str:
        return check_listen(value)


def load_hub_config(path: str | Path) -> HubConfig:
    """Read and validate a hub YAML file as the daemon's is read (a regular file, one-line errors naming the key)."""
    data = read_config_mapping(path)
    try:
        return HubConfig.model_validate(data)
    except ValidationError as exc:
        problems = [f"{'.'.join(str(p) for p in err['loc']) or '(top level)'}: {describe_error(err)}"
                    for err in exc.errors()]
        raise ConfigError(str(path), problems) from exc
