"""What would stop `watchtower hub` or make every answer a 503, checked before it listens (as the daemon's
`check-config` does): each problem one line naming its key, and the hub exits 2 listing them all."""

from __future__ import annotations

import ssl
from pathlib import Path
from urllib.parse import urlsplit

import yaml

from exporter.boundedfile import secret_text
from exporter.preflight import _listen as listen_problem  # reads listen_host/listen_port only (Listener)
from exporter.preflight import (
    ca_file_problem,
    exposed_config_warning,
    exposed_file_warning,
    password_file_problem,
    plain_text_users,
    reaching,
    read_secret_file,
    secret_file_problem,
    tls_pair_problems,
)
from hub.config import HubConfig, url_problem
from hub.targets import read_file_sd


def _url_problem(key: str, url: str) -> str | None:
    """`hub.config.url_problem`, named by its key."""
    problem = url_problem(url)
    return f"{key}: {problem}" if problem else None


@reaching
def _bearer_token_problem(key: str, path: Path | None) -> str | None:
    """The token is sent as an HTTP header value: a second line or a non-ASCII character was accepted, then shown in
    every answer (`Illegal header value b'Bearer ...'`) or a traceback at start. Where, never what."""
    problem = secret_file_problem(key, path)
    if problem or path is None:
        return problem
    raw, problem = read_secret_file(key, path)
    if problem:
        return problem
    token = secret_text(raw).strip()  # (never empty: secret_file_problem refuses a file holding nothing)
    bad = next((pos for pos, char in enumerate(token, start=1) if not "!" <= char <= "~"), None)
    if bad is not None:
        return (f"{key}: {path} holds a character an HTTP header cannot carry at position {bad} (a bearer token is "
                "visible ASCII on one line)")
    return None


CURSOR_KEY_MIN = 16
"""Bytes a cursor key file holds at least (blank space at its ends not counted)."""


def _cursor_key_problem(key: str, path: Path | None) -> str | None:
    """The secret that keys the hubs' cursors: any bytes (`head -c 32 /dev/urandom`), but not so few that a list of
    candidates can be tried with it (an empty file keyed every cursor with a constant anyone can compute)."""
    if path is None:
        return None
    held, problem = read_secret_file(key, path)  # a regular file of a few KiB: /dev/zero, a FIFO refused
    if problem:
        return problem
    raw = held.strip()
    if len(raw) < CURSOR_KEY_MIN:
        return (f"{key}: {path} holds {len(raw)} bytes, at least {CURSOR_KEY_MIN} are needed "
                "(e.g. head -c 32 /dev/urandom > FILE)")
    return None


@reaching
def _file_sd_problem(key: str, path: Path, scheme: str) -> str | None:
    """A file_sd file read as the hub reads it: one it cannot read at start gives no target (every answer a 503)."""
    if not path.exists():
        pattern = any(c in str(path) for c in "*?[")
        return f"{key}: {path} does not exist" + (" (a file's path: hub.file_sd expands no pattern)" if pattern else "")
    try:
        read_file_sd(path, scheme)
    except OSError as exc:
        return f"{key}: cannot read {path}: {exc.strerror or exc}"
    except yaml.YAMLError as exc:
        mark, what = getattr(exc, "problem_mark", None), getattr(exc, "problem", None) or "unreadable"
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark is not None else ""
        return f"{key}: {path}: not YAML ({where}{what})"
    except ValueError as exc:
        text = " ".join(str(exc).split())
        return f"{key}: {text}" if text.startswith(str(path)) else f"{key}: {path}: {text}"
    return None


def problems(config: HubConfig) -> list[str]:
    """Every problem, in the order of the keys in a hub.yml; `listen` as the daemon's check-config checks it (a host
    that does not resolve was uvicorn's `[Errno -2]` and an exit 1)."""
    hub, web = config.hub, config.web
    out: list[str | None] = [listen_problem(config)]  # type: ignore[arg-type]  # the Listener part of Config
    out += [_file_sd_problem(f"hub.file_sd.{i}", path, hub.scheme) for i, path in enumerate(hub.file_sd)]
    if hub.prometheus is not None:
        out.append(_url_problem("hub.prometheus.url", hub.prometheus.url))
    if web.tls_cert_file is not None or web.tls_key_file is not None:
        out += tls_pair_problems("web.tls_cert_file", "web.tls_key_file", web.tls_cert_file, web.tls_key_file)
    out.append(ca_file_problem("hub.tls.ca_file", hub.tls.ca_file))
    if hub.tls.cert_file is not None:
        out += tls_pair_problems("hub.tls.cert_file", "hub.tls.key_file", hub.tls.cert_file, hub.tls.key_file,
                                 purpose=ssl.Purpose.SERVER_AUTH)
    out.append(password_file_problem("hub.auth.password_file", hub.auth.password_file))
    out.append(_cursor_key_problem("hub.cursor_key_file", hub.cursor_key_file))
    out.append(_bearer_token_problem("hub.auth.bearer_token_file", hub.auth.bearer_token_file))
    return [p for p in out if p]


def warnings(config: HubConfig, config_path: Path | None = None) -> list[str]:
    """Secrets every local user can read, in the daemon's words (exporter.preflight.exposed_file_warning): the
    hub's credential for every daemon, its cursor key, its TLS keys, and the config file (`config_path`) when it
    holds a secret inline."""
    hub, web = config.hub, config.web
    files = (("web.tls_key_file", web.tls_key_file), ("hub.tls.key_file", hub.tls.key_file),
             ("hub.auth.password_file", hub.auth.password_file),
             ("hub.auth.bearer_token_file", hub.auth.bearer_token_file), ("hub.cursor_key_file", hub.cursor_key_file))
    out = [line for key, path in files if (line := exposed_file_warning(key, path))]
    inline = exposed_config_warning(_inline_secret_keys(config), config_path)
    return out + ([inline] if inline else [])


def _inline_secret_keys(config: HubConfig) -> list[str]:
    """The hub's keys whose value is itself a secret: a Prometheus URL's password (sent as basic auth), a plain-text
    web.basic_auth_users value."""
    prometheus = config.hub.prometheus
    try:
        password = urlsplit(prometheus.url).password if prometheus is not None else None
    except ValueError:
        password = None  # problems() names the URL
    return (["hub.prometheus.url"] if password else []) + plain_text_users(config.web.basic_auth_users)
