"""`--web.config.file FILE`: the listener's TLS and basic auth from node_exporter's web configuration file
(Prometheus exporter-toolkit's format), so the web-config.yml a host's exporters already share serves watchtower too.

What it can say, watchtower does: `tls_server_config.cert_file` / `key_file` (web.tls_cert_file / tls_key_file) and
`basic_auth_users` (web.basic_auth_users), paths relative to the file's directory as exporter-toolkit reads them.
What the listener cannot do (client certificates, TLS versions and ciphers, extra response headers) is a problem
naming the key, never a setting silently dropped: a host that requires client certificates must not be served
without them. The keys stand in for the config file's `web.*` ones: set in both, the start is refused.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Literal, TypeVar

from pydantic import BaseModel, Field, ValidationError, model_validator

from exporter.config import (
    MAX_SHOWN_PATH,
    ConfigError,
    WebConfig,
    _Strict,
    expand_home,
    printable,
    read_config_document,
    users_problems,
    validation_lines,
    validation_problems,
)
from exporter.textrepair import shown_user
from exporter.yamllines import KeyLines

UNSUPPORTED = {
    "tls_server_config": {
        "cert": "an inline certificate: give cert_file",
        "key": "an inline key: give key_file",
        "client_ca_file": "client certificates (mutual TLS) are not checked by watchtower's listener",
        "client_ca": "client certificates (mutual TLS) are not checked by watchtower's listener",
        "client_allowed_sans": "client certificates (mutual TLS) are not checked by watchtower's listener",
        "min_version": "the listener takes Python's TLS defaults (TLS 1.2 and later)",
        "max_version": "the listener takes Python's TLS defaults (TLS 1.2 and later)",
        "cipher_suites": "the listener takes Python's TLS defaults",
        "prefer_server_cipher_suites": "the listener takes Python's TLS defaults",
        "curve_preferences": "the listener takes Python's TLS defaults",
    },
    "http_server_config": {
        "headers": "the listener sets no extra response headers",
    },
}
"""exporter-toolkit keys the listener cannot honour, and why: each is a problem naming it (terminate TLS in a reverse
proxy for these: docs/security.md)."""
UNSUPPORTED_SECTIONS = {"rate_limit": "the listener limits no request rate (its own bounds: web.max_connections, "
                                      "web.api_max_concurrency)"}
"""exporter-toolkit sections the listener cannot honour (newer than its first format), a problem each."""
_PROXY_HINT = "; remove it, or terminate TLS in a reverse proxy in front of watchtower (docs/security.md)"


class TlsServerConfig(_Strict):
    cert_file: str | None = None
    key_file: str | None = None
    client_auth_type: Literal["", "NoClientCert"] | None = Field(
        default=None, description="Only NoClientCert or empty (exporter-toolkit's default): client certificates are "
        "not asked for.")

    @model_validator(mode="after")
    def _both(self) -> TlsServerConfig:
        """One file without the other is refused, as exporter-toolkit does; neither is plain HTTP, as there, unless a
        client_auth_type asks for TLS (exporter-toolkit then says `missing cert_file`)."""
        missing = [key for key in ("cert_file", "key_file") if not getattr(self, key)]
        if len(missing) == 1:
            raise ValueError(f"{missing[0]} must be set too (HTTPS needs both files; neither: plain HTTP)")
        if missing and self.client_auth_type:
            raise ValueError("cert_file and key_file must be set (client_auth_type is a TLS setting)")
        return self

    @property
    def serves_tls(self) -> bool:
        return bool(self.cert_file and self.key_file)


class HttpServerConfig(_Strict):
    http2: bool | None = Field(default=None, description="Accepted, without effect: the listener speaks HTTP/1.1.")


class WebConfigFile(_Strict):
    tls_server_config: TlsServerConfig | None = None
    http_server_config: HttpServerConfig | None = None
    basic_auth_users: dict[str, str] | None = None
    """Each checked by `_user_problems` before (a problem per user, at its line)."""


_NOT_BCRYPT = ("not a bcrypt hash (the value is not shown): a web config file takes bcrypt hashes only, as "
               "exporter-toolkit does; make one with `htpasswd -nbBC 10 '' PASSWORD | cut -c2-`")


def _user_problems(data: dict[str, Any], lines: KeyLines) -> tuple[list[str], list[int | None]]:
    """A problem for each user of `basic_auth_users` nobody could log in as, at its line, its value never shown; those
    users are taken out of `data`. Only bcrypt hashes, as exporter-toolkit compares every value with bcrypt: a plain
    password here is a mistake (node_exporter would let nobody in), and this file then holds no secret in clear; a
    user YAML reads as another kind (`123:`) is named at its own line (pydantic named it `[key]` of the mapping's)."""
    from exporter.webauth import is_bcrypt

    users = data.get("basic_auth_users")
    if not isinstance(users, dict):
        return [], []
    problems: list[str] = []
    where: list[int | None] = []
    for user, secret in list(users.items()):
        if not isinstance(user, str):
            found = ["a user name is text: quote it in the YAML"]
        elif not user or ":" in user:  # (what follows a `:` would be read as the password: not shown)
            found = [problem.removeprefix(f"user {shown_user(user)!r}: ") for problem in users_problems({user: "x"})]
        elif not isinstance(secret, str):  # `!!binary` of a plain password (pydantic would make it text), a number
            found = [_NOT_BCRYPT]
        else:
            found = [problem.removeprefix(f"user {user!r}: ") for problem in users_problems({user: secret})]
            if not found and not is_bcrypt(secret):
                found = [_NOT_BCRYPT]
        named = user if isinstance(user, str) else str(int(user)) if isinstance(user, bool) else repr(user)
        problems += [f"basic_auth_users.{printable(shown_user(named))}: {problem}" for problem in found]
        where += [lines.line_of(("basic_auth_users", named), not_a_string=not isinstance(user, str))] * len(found)
        if found:
            del users[user]
    return problems, where


def _unsupported(data: dict[str, Any], lines: KeyLines) -> tuple[list[str], list[int | None]]:
    """A problem for each key UNSUPPORTED names, and its line; the keys are taken out of `data` (what stays is
    validated: an unknown key is pydantic's `unknown key`)."""
    problems: list[str] = []
    where: list[int | None] = []
    for key in [k for k in data if k in UNSUPPORTED_SECTIONS]:
        problems.append(f"{key}: not supported: {UNSUPPORTED_SECTIONS[key]}{_PROXY_HINT}")
        where.append(lines.line_of((key,)))
        del data[key]
    for section, keys in UNSUPPORTED.items():
        given = data.get(section)
        if not isinstance(given, dict):
            continue
        for key in [k for k in given if k in keys]:
            problems.append(f"{section}.{key}: not supported: {keys[key]}{_PROXY_HINT}")
            where.append(lines.line_of((section, key)))
            del given[key]
    tls = data.get("tls_server_config")
    auth = tls.get("client_auth_type") if isinstance(tls, dict) else None
    if isinstance(auth, str) and auth not in ("", "NoClientCert"):
        problems.append(f"tls_server_config.client_auth_type: {auth!r} is not supported: client certificates "
                        f"(mutual TLS) are not checked by watchtower's listener{_PROXY_HINT}")
        where.append(lines.line_of(("tls_server_config", "client_auth_type")))
        del tls["client_auth_type"]
    return problems, where


def read_web_config_file(path: Path) -> tuple[WebConfigFile, KeyLines]:
    """The validated file and where its keys are written; ConfigError naming `path`, every problem with its line. An
    empty file (or one of comments only) is exporter-toolkit's empty config: no TLS, no auth."""
    try:
        data, lines = read_config_document(path, empty_ok=True)
    except OSError as exc:  # (the config file's own `cannot read` would name the config file)
        raise ConfigError(str(path), [f"cannot read: {exc.strerror or exc}"]) from None
    problems, where = _unsupported(data, lines)
    more, more_where = _user_problems(data, lines)
    problems, where = problems + more, where + more_where
    try:
        parsed = WebConfigFile.model_validate(data)
    except ValidationError as exc:
        problems += validation_problems(exc)
        where += validation_lines(exc, lines)
    if problems:  # in the file's order
        order = sorted(range(len(problems)), key=lambda i: (where[i] is None, where[i] or 0))
        raise ConfigError(str(path), [problems[i] for i in order], [where[i] for i in order])
    return parsed, lines


def _resolved(value: str, base: Path) -> Path:
    """A path of the file as exporter-toolkit reads it: relative to the file's directory (`~/` expanded; ValueError
    when it cannot be)."""
    if "\x00" in value:
        raise ValueError("contains a NUL byte")
    expanded = Path(expand_home(value))
    return expanded if expanded.is_absolute() else base / expanded


def _paths_hidden(problem: str, update: dict[str, Any], given: tuple[str, str]) -> str:
    """`problem` without the key file's path (a key pasted in its place is not repeated), nor the certificate's
    unless it reads as a path: printable, no PEM marker, no space, each part a file name's length at most (a key
    pasted under cert_file: a PEM block, its bare body, or base64 on one line as a Kubernetes Secret holds it)."""
    cert = str(update["tls_cert_file"])
    shown = {cert: cert if _reads_as_path(given[0]) else "the cert_file given"}
    shown[str(update["tls_key_file"])] = "the key_file given"
    either = re.compile("|".join(re.escape(path) for path in sorted(shown, key=len, reverse=True)))
    return either.sub(lambda m: shown[m.group()], problem)  # (the longer first: `tls.key` in `tls.key.crt`)


NAME_MAX = 255
"""The longest file name (one part of a path) Linux file systems take."""


def _reads_as_path(text: str) -> bool:
    return (text.isprintable() and "-----" not in text and " " not in text and len(text) <= MAX_SHOWN_PATH
            and all(len(part) <= NAME_MAX for part in text.split("/")))


Configured = TypeVar("Configured", bound=BaseModel)


def with_web_config_file(config: Configured, path: Path) -> Configured:
    """`config` (the daemon's or the hub's: a `web` of WebConfig) with the file's TLS files and users as its `web`
    keys; ConfigError naming `path` when the file is invalid, or when the config file sets a key it also sets."""
    from exporter.preflight import tls_pair_problems

    given, lines = read_web_config_file(path)
    web: WebConfig = config.web  # type: ignore[attr-defined]
    update: dict[str, Any] = {}
    clashes: list[str] = []
    base = path.absolute().parent
    tls = given.tls_server_config
    if tls is not None and tls.serves_tls:
        assert tls.cert_file is not None and tls.key_file is not None
        unusable = []
        for key, value in (("cert_file", tls.cert_file), ("key_file", tls.key_file)):
            try:
                update[f"tls_{key}"] = _resolved(value, base)
            except ValueError as exc:  # `~/x` under a relative HOME (shown: a `~/` path), a NUL byte (not shown)
                unusable.append((key, f"tls_server_config.{key}: cannot be read as a path ({exc})"))
        if unusable:
            raise ConfigError(str(path), [problem for _, problem in unusable],
                              [lines.line_of(("tls_server_config", key)) for key, _ in unusable])
        clashes += [f"web.{key}" for key in ("tls_cert_file", "tls_key_file") if getattr(web, key) is not None]
    if given.basic_auth_users:
        update["basic_auth_users"] = given.basic_auth_users
        clashes += ["web.basic_auth_users"] if web.basic_auth_users else []
    if clashes:
        raise ConfigError(str(path), [f"{', '.join(clashes)} also set in the config file: keep one of the two "
                                      "(--web.config.file, or the config file's web section)"])
    if "tls_cert_file" in update:
        found = tls_pair_problems("tls_server_config.cert_file", "tls_server_config.key_file",
                                  update["tls_cert_file"], update["tls_key_file"])
        if found:  # each named by its key's line (`tls_server_config.key_file: ... is protected by a passphrase`)
            keys = [("tls_server_config", "key_file" if problem.startswith("tls_server_config.key_file")
                     else "cert_file") for problem in found]
            shown = [_paths_hidden(problem, update, (tls.cert_file, tls.key_file)) for problem in found]
            raise ConfigError(str(path), shown, [lines.line_of(key) for key in keys])
    return config.model_copy(update={"web": web.model_copy(update=update)})
