"""Config audit findings: what check-config accepts, `run` must be able to use (paths, numbers, files, URLs)."""

from __future__ import annotations

import os
import resource
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from exporter import preflight
from exporter.cli import main
from exporter.config import ConfigError, config_from_dict, load_config

ROOT = Path(__file__).resolve().parent.parent


def _minimal(tmp_path: Path, **extra: object) -> dict:
    (tmp_path / "logs").mkdir(exist_ok=True)
    return {"sources": [{"paths": [str(tmp_path / "logs" / "acct-*.csv")]}], "state_dir": str(tmp_path / "state"),
            **extra}


def _problems(data: dict) -> list[str]:
    with pytest.raises(ConfigError) as exc:
        config_from_dict(data)
    return exc.value.problems


def _check(tmp_path: Path, cfg: dict | str, capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    f = tmp_path / "c.yml"
    f.write_text(cfg if isinstance(cfg, str) else yaml.safe_dump(cfg))
    capsys.readouterr()
    rc = main(["check-config", str(f)])
    err = capsys.readouterr().err
    assert "Traceback" not in err
    return rc, err


# --- 1. one rule for every path key ---------------------------------------------------------------------------

PATH_KEYS = {
    "state_dir": lambda v: {"state_dir": v},
    "correlator.hmac_key_file": lambda v: {"correlator": {"hmac_key_file": v}},
    "pmta.password_file": lambda v: {"pmta": {"password_file": v}},
    "pmta.api_key_file": lambda v: {"pmta": {"api_key_file": v}},
    "pmta.ca_file": lambda v: {"pmta": {"ca_file": v}},
    "web.tls_cert_file": lambda v: {"web": {"tls_cert_file": v, "tls_key_file": "/k.pem"}},
    "web.tls_key_file": lambda v: {"web": {"tls_key_file": v, "tls_cert_file": "/c.pem"}},
    "classify.isp_file": lambda v: {"classify": {"isp_file": v}},
    "classify.replies_file": lambda v: {"classify": {"replies_file": v}},
}


@pytest.mark.parametrize("key", sorted(PATH_KEYS))
def test_every_path_key_rejects_empty_and_relative_paths(tmp_path: Path, key: str):
    base = _minimal(tmp_path)
    # an absolute or ~ path is shown whatever the key (a secret's file's path is not the secret); anything else given
    # to a key naming a secret (password_file, api_key_file, hmac_key_file, tls_key_file) may be the secret itself:
    # its problem is said without it (review 2026-12)
    secret = "key" in key or "password" in key
    shown = "the value given" if secret else "'state/x'"
    assert _problems({**base, **PATH_KEYS[key]("")}) == [
        f"{key}: empty path; give an absolute path such as /var/lib/watchtower"]
    assert _problems({**base, **PATH_KEYS[key]("state/x")}) == [
        f"{key}: {shown} is a relative path; give an absolute path (or ~/...): the daemon's working directory is "
        "not the config file's"]
    assert _problems({**base, **PATH_KEYS[key](".")})[0].startswith(
        f"{key}: {'the value given' if secret else repr('.')} is a relative path")
    assert _problems({**base, **PATH_KEYS[key](7)}) == [
        f"{key}: expected a path (a string), got {'a number' if secret else 7}"]


def test_tilde_is_expanded_once_in_the_model_for_every_path_key(tmp_path: Path):
    home = Path(os.path.expanduser("~"))
    cfg = config_from_dict(_minimal(tmp_path, state_dir="~/wt", pmta={"ca_file": "~/ca.pem"},
                                    sources=[{"name": "a", "paths": ["~/logs/acct-*.csv"]}]))
    assert cfg.state_dir == home / "wt" and cfg.state_dir.is_absolute()
    assert cfg.pmta.ca_file == home / "ca.pem"
    assert cfg.sources[0].paths == [str(home / "logs" / "acct-*.csv")]


def test_check_config_rejects_relative_state_dir(tmp_path: Path, capsys):
    rc, err = _check(tmp_path, _minimal(tmp_path, state_dir=""), capsys)
    assert rc == 2 and "  line 4: state_dir: empty path; give an absolute path such as /var/lib/watchtower\n" in err


# --- 2. the config path itself ---------------------------------------------------------------------------------

def _cli(*args: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    def limit() -> None:  # before the fix /dev/zero was read until MemoryError: make that fast and harmless
        resource.setrlimit(resource.RLIMIT_AS, (1024**3, 1024**3))

    return subprocess.run([sys.executable, "-m", "exporter", *args], capture_output=True, text=True, timeout=timeout,
                          cwd=ROOT, preexec_fn=limit)


@pytest.mark.parametrize("command", ["check-config", "run --config", "oneshot --config"])
def test_a_fifo_nobody_writes_to_is_an_error_not_a_hang(tmp_path: Path, command: str):
    fifo = tmp_path / "fifo.yml"
    os.mkfifo(fifo)
    try:
        out = _cli(*command.split(), str(fifo), timeout=20)
    except subprocess.TimeoutExpired:
        pytest.fail("hung reading a FIFO")
    assert out.returncode == 2 and "Traceback" not in out.stderr
    assert f"{fifo}: a pipe with nothing written to it; give the YAML config file" in out.stderr


def test_a_config_piped_in_is_read(tmp_path: Path):
    """`--config <(envsubst < tmpl)` and `... | watchtower check-config /dev/stdin`: container set-ups pipe configs."""
    text = yaml.safe_dump(_minimal(tmp_path))
    (tmp_path / "w.yml").write_text(text)
    out = subprocess.run(["bash", "-c", f'{sys.executable} -m exporter check-config <(cat "$0")', str(tmp_path / "w.yml")],
                         capture_output=True, text=True, timeout=30, cwd=ROOT)
    assert out.returncode == 0 and out.stdout.startswith("/dev/fd/") and out.stdout.endswith(": ok\n"), out.stderr
    out = subprocess.run([sys.executable, "-m", "exporter", "check-config", "/dev/stdin"], input=text,
                         capture_output=True, text=True, timeout=30, cwd=ROOT)
    assert (out.returncode, out.stdout) == (0, "/dev/stdin: ok\n"), out.stderr


def test_a_device_that_never_ends_is_bounded():
    out = _cli("check-config", "/dev/zero")
    assert out.returncode == 2 and "Traceback" not in out.stderr
    assert "/dev/zero: more than 1MiB; a config file is at most 1MiB (is this the right file?)" in out.stderr


def test_a_huge_config_is_refused(tmp_path: Path, capsys):
    big = tmp_path / "big.yml"
    big.write_bytes(b"# padding\n" * 110_000)
    capsys.readouterr()
    assert main(["check-config", str(big)]) == 2
    assert f"{big}: 1100000 bytes; a config file is at most 1MiB (is this the right file?)" in capsys.readouterr().err


# --- 3. numbers are finite and bounded -------------------------------------------------------------------------

@pytest.mark.parametrize(("section", "key"), [("correlator", "retention"), ("tail", "shutdown_timeout"),
                                              ("pmta", "poll_interval"), ("tail", "poll_interval")])
def test_durations_must_be_finite(tmp_path: Path, section: str, key: str):
    for value, shown in ((float("inf"), "inf"), (float("nan"), "nan"), ("1e999", "'1e999'")):
        assert _problems(_minimal(tmp_path, **{section: {key: value}})) == [
            f"{section}.{key}: invalid duration {shown}: expected a finite number of seconds or e.g. 5s, 10m, 7d"]


def test_durations_have_bounds(tmp_path: Path):
    assert _problems(_minimal(tmp_path, tail={"poll_interval": 0})) == [
        "tail.poll_interval: must be more than 0, got 0"]
    assert _problems(_minimal(tmp_path, correlator={"retention": "0s"})) == [
        "correlator.retention: must be more than 0, got '0s'"]
    assert _problems(_minimal(tmp_path, tail={"shutdown_timeout": -1})) == [
        "tail.shutdown_timeout: must be 0 or more, got -1"]
    assert _problems(_minimal(tmp_path, correlator={"retention": "5000d"})) == [
        "correlator.retention: must be at most 3650d, got '5000d'"]
    cfg = config_from_dict(_minimal(tmp_path, tail={"rescan_interval": 0, "shutdown_timeout": 0}))
    assert cfg.tail.rescan_interval == 0 and cfg.tail.shutdown_timeout == 0  # 0 means "every poll" / "no wait"


def test_chunk_bytes_is_bounded(tmp_path: Path):
    assert _problems(_minimal(tmp_path, tail={"chunk_bytes": "50GiB"})) == [
        "tail.chunk_bytes: must be at most 256MiB, got '50GiB'"]
    assert config_from_dict(_minimal(tmp_path, tail={"chunk_bytes": "256MiB"})).tail.chunk_bytes == 256 * 1024**2
    assert _problems(_minimal(tmp_path, tail={"chunk_bytes": 0})) == ["tail.chunk_bytes: must be more than 0, got 0"]


def test_delay_buckets_are_finite_and_not_negative(tmp_path: Path):
    assert _problems(_minimal(tmp_path, metrics={"delay_buckets": [float("nan")]})) == [
        "metrics.delay_buckets.0: invalid duration nan: expected a finite number of seconds or e.g. 5s, 10m, 7d"]
    assert _problems(_minimal(tmp_path, metrics={"delay_buckets": [10, float("inf")]})) == [
        "metrics.delay_buckets.1: invalid duration inf: expected a finite number of seconds or e.g. 5s, 10m, 7d"]
    assert _problems(_minimal(tmp_path, metrics={"delay_buckets": [-5, 10]})) == [
        "metrics.delay_buckets.0: must be 0 or more, got -5"]
    # le="0": delivered within the second (PMTA times are whole seconds), a bucket configs had before
    assert config_from_dict(_minimal(tmp_path, metrics={"delay_buckets": [0, 1, 5]})).metrics.delay_buckets == [0, 1, 5]
    assert config_from_dict(_minimal(tmp_path, metrics={"delay_buckets": ["1m", "4h"]})).metrics.delay_buckets == [
        60.0, 14400.0]


def test_check_config_rejects_infinite_retention(tmp_path: Path, capsys):
    rc, err = _check(tmp_path, "sources: [{paths: ['/x/a-*.csv']}]\nstate_dir: /tmp/s\ncorrelator: {retention: .inf}\n",
                     capsys)
    assert rc == 2 and "  line 3: correlator.retention: invalid duration inf: expected a finite number" in err


# --- 4. check-config checks what run reads ---------------------------------------------------------------------

def _preflight(tmp_path: Path, **extra: object) -> list[str]:
    return preflight.problems(config_from_dict(_minimal(tmp_path, **extra)))


def test_hmac_key_file_is_checked_like_state_dir(tmp_path: Path):
    on = {"hash_recipients": True}
    assert _preflight(tmp_path, correlator={**on, "hmac_key_file": str(tmp_path)}) == [
        f"correlator.hmac_key_file: {tmp_path} is not a regular file"]
    empty = tmp_path / "empty.key"
    empty.write_text("\n")
    assert _preflight(tmp_path, correlator={**on, "hmac_key_file": str(empty)}) == [
        f"correlator.hmac_key_file: {empty} is empty; write a key into it, or delete it to have one created"]
    assert _preflight(tmp_path, correlator={**on, "hmac_key_file": "/nonexistent/k"}) == [
        "correlator.hmac_key_file: cannot create /nonexistent/k: its parent /nonexistent does not exist (a typo?)"]
    short = tmp_path / "short.key"  # `printf short > KEY`: a 40-bit key was taken without a word; said, not refused
    short.write_text("short\n")  # (a store keyed with it refuses any other key: refused, its timelines were lost)
    short.chmod(0o600)  # (0644 is warned of too: tests/test_secret_file_modes.py)
    config = config_from_dict(_minimal(tmp_path, correlator={**on, "hmac_key_file": str(short)}))
    assert preflight.problems(config) == []
    assert [w for w in preflight.run_warnings(config) if "hmac" in w] == [
        f"correlator.hmac_key_file: {short} holds 5 bytes, fewer than the 32 a key should (hashed recipients can be "
        f"guessed back from a short one); before the first start, write a longer one (`openssl rand -hex 32 > "
        f"{short}`); a store already keyed with it needs that key: move the store aside to change it"]
    short.write_text("k" * 32 + "\n")
    assert [w for w in preflight.run_warnings(config) if "hmac" in w] == []
    assert _preflight(tmp_path, correlator={**on, "hmac_key_file": str(tmp_path / "new.key")}) == []
    # not hashing, or no correlator: the key is never read
    assert _preflight(tmp_path, correlator={"hmac_key_file": "/nonexistent/k"}) == []
    state = tmp_path / "state"
    (state / "correlator-hmac.key").mkdir(parents=True)
    assert _preflight(tmp_path, correlator=on) == [
        f"correlator.hmac_key_file: {state / 'correlator-hmac.key'} is not a regular file"]


def test_pmta_files_are_read_as_run_reads_them(tmp_path: Path):
    from exporter.config import PmtaApiConfig
    from exporter.pmta_api import PmtaApiConfigError, _password, read_api_key

    junk = tmp_path / "junk.pem"
    junk.write_text("not a certificate\n")
    problems = _preflight(tmp_path, pmta={"url": "https://127.0.0.1:1", "ca_file": str(junk)})
    assert len(problems) == 1 and problems[0].startswith(f"pmta.ca_file: cannot load {junk} as a PEM CA bundle: ")
    empty = tmp_path / "empty.key"
    empty.write_text(" \n")  # (operator review 2026-12-07: the poller then sent no key at all, and `ok` was said)
    for key in ("password_file", "api_key_file"):
        extra = {"username": "u"} if key == "password_file" else {}
        assert _preflight(tmp_path, pmta={"url": "http://127.0.0.1:1", key: str(empty), **extra}) == [
            f"pmta.{key}: {empty} is empty: it holds no secret"]
    with pytest.raises(PmtaApiConfigError, match="api_key_file .* is empty"):  # emptied after the start
        read_api_key(PmtaApiConfig(url="http://127.0.0.1:1", api_key_file=empty))
    with pytest.raises(PmtaApiConfigError, match="password_file .* holds no password"):  # (review: sent `mon:`)
        _password(PmtaApiConfig(url="http://127.0.0.1:1", username="mon", password_file=empty))
    first_blank = tmp_path / "first-blank.pw"  # the password is the file's first line
    first_blank.write_text("\ns3cret\n")
    assert _preflight(tmp_path, pmta={"url": "http://127.0.0.1:1", "username": "u", "password_file": str(first_blank)}) \
        == [f"pmta.password_file: {first_blank} holds no password on its first line (the password is the file's first "
            "line)"]
    with pytest.raises(PmtaApiConfigError, match="password_file .* holds no password"):
        _password(PmtaApiConfig(url="http://127.0.0.1:1", username="mon", password_file=first_blank))
    binary = tmp_path / "secret.bin"
    binary.write_bytes(b"\xff\xfesecret\n")
    for key in ("password_file", "api_key_file"):
        extra = {"username": "u"} if key == "password_file" else {}  # (read by the poller: with pmta.url only)
        assert _preflight(tmp_path, pmta={"url": "http://127.0.0.1:1", key: str(binary), **extra}) == [
            f"pmta.{key}: {binary} is not UTF-8 text (byte 0xff at offset 0)"]


@pytest.mark.parametrize(("url", "why"), [
    ("not a url", "expected an http:// or https:// URL such as https://127.0.0.1:8080"),
    ("://x", "expected an http:// or https:// URL such as https://127.0.0.1:8080"),
    ("ftp://x", "expected an http:// or https:// URL such as https://127.0.0.1:8080"),
    ("http://[::1", "Invalid IPv6 URL"),
    ("https://", "no host"),
    ("http://pmta:99999", "invalid port"),
    ("http://pmta:http", "invalid port"),
])
def test_pmta_url_is_validated(tmp_path: Path, url: str, why: str):
    assert _problems(_minimal(tmp_path, pmta={"url": url})) == [f"pmta.url: {url!r}: {why}"]


def test_good_pmta_urls_pass(tmp_path: Path):
    for url in ("http://127.0.0.1:8080", "https://pmta.example/", "http://[::1]:8080"):
        assert config_from_dict(_minimal(tmp_path, pmta={"url": url})).pmta.url == url


# --- 5. every bad glob ----------------------------------------------------------------------------------------

def test_every_bad_glob_is_reported(tmp_path: Path):
    assert _problems(_minimal(tmp_path, sources=[{"paths": ["/x/a*.csv", "/tmp/x/", "/a/[b"]}])) == [
        "sources.0.paths.1: '/tmp/x/': names a directory; add a file pattern such as acct-*.csv",
        "sources.0.paths.2: '/a/[b': unclosed '[' in the pattern",
    ]


# --- 6. defaults that match the reference --------------------------------------------------------------------

@pytest.mark.parametrize(("glob", "label"), [("/x/acct.csv", "acct"), ("/x/acct_[0-9]*.csv", "acct"),
                                             ("/x/acct-*.csv", "acct"), ("/x/acct.csv.*", "acct"),
                                             ("/x/pmta.acct-?.log", "pmta.acct")])
def test_source_name_defaults_to_the_stem_of_the_first_glob(tmp_path: Path, glob: str, label: str):
    assert config_from_dict(_minimal(tmp_path, sources=[{"paths": [glob]}])).sources[0].label == label


def test_a_glob_with_no_stem_needs_a_name(tmp_path: Path):
    assert _problems(_minimal(tmp_path, sources=[{"paths": ["/x/*.csv"]}, {"paths": ["/y/*.csv"]}])) == [
        "sources.0: cannot derive a name from '/x/*.csv' (nothing before the wildcard); set name",
        "sources.1: cannot derive a name from '/y/*.csv' (nothing before the wildcard); set name",
    ]


def test_empty_records_list_is_rejected(tmp_path: Path):
    assert _problems(_minimal(tmp_path, sources=[{"name": "a", "paths": ["/x/a.csv"], "records": []}])) == [
        "sources.0.records: empty list; leave records out to accept every record type"]


def test_api_key_and_api_key_file_are_exclusive(tmp_path: Path):
    assert _problems(_minimal(tmp_path, pmta={"api_key": "k", "api_key_file": "/k"})) == [
        "pmta: set api_key or api_key_file, not both"]


def test_config_reference_documents_formats_and_choices():
    text = (ROOT / "docs" / "config.md").read_text(encoding="utf-8")
    assert "Paths are absolute (`~/` is expanded to the home directory of the user running watchtower)" in text
    assert "`250ms`, `5s`, `10m`, `2h`, `7d`, `1w`" in text and "`512KiB`, `1MiB`, `2GiB`" in text
    for row in ("| `tail.start_position` | `'end'` | One of `beginning`, `end`.",
                "| `log_level` | `'info'` | One of `debug`, `info`, `warning`, `error`.",
                "| `pmta.format` | `'xml'` | One of `xml`, `json`."):
        assert row in text, row


# --- 7. messages a reader understands -------------------------------------------------------------------------

def test_yaml_errors_name_the_file_on_one_line(tmp_path: Path, capsys):
    rc, err = _check(tmp_path, "sources:\n  - paths: ['/x/a.csv'\nstate_dir: /s\n", capsys)
    assert rc == 2 and "<unicode string>" not in err
    lines = err.splitlines()
    assert lines[0] == f"{tmp_path / 'c.yml'}: invalid configuration" and len(lines) == 2
    assert lines[1] == ("  line 3, column 1: not valid YAML: expected ',' or ']', but got '<scalar>' "
                        "(while parsing a flow sequence started on line 2)")


def test_no_pydantic_internals_in_messages(tmp_path: Path):
    problems = _problems(_minimal(tmp_path, tail=5, web={"tls_key_file": "/k"}, log_level="loud"))
    assert problems == [
        "tail: expected a section (a mapping of keys), got 5",
        "web: tls_key_file is set but tls_cert_file is not (set both, or neither)",
        "log_level: expected one of 'debug', 'info', 'warning' or 'error', got 'loud'",
    ]
    assert _problems({"sources": [{"name": "a", "paths": ["/x/a.csv"]}]}) == ["state_dir: required key missing"]


def test_an_empty_section_means_the_defaults(tmp_path: Path):
    f = tmp_path / "c.yml"
    f.write_text(f"sources: [{{paths: ['/x/a-*.csv']}}]\nstate_dir: {tmp_path}/s\npmta:\n  # url: http://x\n"
                 "tail:\n")
    cfg = load_config(f)
    assert cfg.pmta.url is None and cfg.tail.poll_interval == 0.25


def test_listen_as_a_url_is_explained(tmp_path: Path):
    assert _problems(_minimal(tmp_path, listen="http://127.0.0.1:9469")) == [
        "listen: 'http://127.0.0.1:9469': listen is host:port, not a URL (e.g. 127.0.0.1:9469)"]


# --- 8. oneshot without the correlator never touches state_dir ------------------------------------------------

def test_oneshot_ignores_an_unusable_state_dir(tmp_path: Path, capsys):
    """oneshot opens no state database (metrics only) or a temporary one in TMPDIR (correlator on)."""
    not_a_dir = tmp_path / "a-file"
    not_a_dir.write_text("x")
    f = tmp_path / "c.yml"
    f.write_text(yaml.safe_dump(_minimal(tmp_path, state_dir=str(not_a_dir), correlator={"enabled": False})))
    capsys.readouterr()
    assert main(["oneshot", "--config", str(f)]) == 0
    out, err = capsys.readouterr()
    assert "pmta_" in out and "state_dir" not in err
    assert main(["check-config", str(f)]) == 2  # `run` would use it: check-config still says so
    assert f"state_dir: {not_a_dir} exists and is not a directory" in capsys.readouterr().err
    f.write_text(yaml.safe_dump(_minimal(tmp_path, state_dir=str(not_a_dir))))  # the correlator on: TMPDIR
    assert main(["oneshot", "--config", str(f)]) == 0
    assert "state_dir" not in capsys.readouterr().err


# --- 7. keys that were taken as given ---------------------------------------------------------------------------

@pytest.mark.parametrize("url", ["javascript:alert(1)", "localhost:3000", "grafana.example", "https://"])
def test_grafana_url_must_be_an_http_url(tmp_path: Path, url: str):
    """The /ui pages put it in every VMTA link: a scheme a browser runs, or a URL with no host, is refused."""
    problems = _problems(_minimal(tmp_path, correlator={"grafana_url": url}))
    assert len(problems) == 1 and problems[0].startswith(f"correlator.grafana_url: {url!r}: "), problems


def test_grafana_urls_with_a_path_pass(tmp_path: Path):
    for url in ("http://localhost:3000", "https://grafana.example/grafana/"):
        assert config_from_dict(_minimal(tmp_path, correlator={"grafana_url": url})).correlator.grafana_url == url


@pytest.mark.parametrize("secret", ["password", "password_file"])
def test_a_pmta_password_without_a_username_is_refused(tmp_path: Path, secret: str):
    """Basic auth sends a user and a password: a password alone was silently never sent."""
    value = "pw" if secret == "password" else str(tmp_path / "pw")
    for user in ({}, {"username": ""}):  # an empty user name sends no auth either
        assert _problems(_minimal(tmp_path, pmta={secret: value, **user})) == [
            "pmta: password and password_file need username (HTTP basic auth sends both)"]
    assert config_from_dict(_minimal(tmp_path, pmta={secret: value, "username": "u"})).pmta.username == "u"


def test_delay_buckets_without_the_four_hour_bound_are_warned_about(tmp_path: Path, capsys):
    cfg = _minimal(tmp_path, metrics={"delay_buckets": [60, 600, 3600]})
    (tmp_path / "logs" / "acct-1.csv").write_text("type\n")
    rc, err = _check(tmp_path, cfg, capsys)
    assert rc == 0
    assert err.splitlines() == [
        f"{tmp_path / 'c.yml'}: warning: metrics.delay_buckets: no bound >= 14400 (4h): the PmtaQueueOldMessages "
        "alert counts deferrals past such a bound and cannot fire"]
    cfg["metrics"]["delay_buckets"] = [60, 600, 3600, 14400]
    rc, err = _check(tmp_path, cfg, capsys)
    assert rc == 0 and err == ""


def test_a_pmta_url_with_credentials_is_refused_without_echoing_them(tmp_path: Path):
    """httpx sends a URL's user:password as basic auth, and every state-change warning logged the URL, password
    included (and the clear-text warning, keyed on `username`, was skipped)."""
    problems = _problems(_minimal(tmp_path, pmta={"url": "http://admin:S3cretPW@127.0.0.1:8080"}))
    assert problems == ["pmta.url: carries a user name or password: give them as pmta.username and "
                        "pmta.password_file (a URL's are logged with it)"]


def test_a_source_path_naming_a_directory_is_refused_by_check_config(tmp_path: Path, capsys):
    """`paths: [/var/log/pmta]` (no file pattern): check-config said ok and `run` followed nothing, silently."""
    logs = tmp_path / "logs"
    cfg = _minimal(tmp_path, sources=[{"name": "acct", "paths": [str(logs)]}])
    rc, err = _check(tmp_path, cfg, capsys)
    assert rc == 2
    assert f"sources.0.paths.0: '{logs}': names a directory; add a file pattern such as {logs}/acct-*.csv" in err


YAML_BOOL = " (YAML reads an unquoted yes, no, on, off, true or false as a boolean: quote the word)"


@pytest.mark.parametrize(("extra", "problem"), [
    ({"labels": {"max_senders": True}}, "labels.max_senders: expected a valid integer, got True" + YAML_BOOL),
    ({"tail": {"poll_interval": True}}, "tail.poll_interval: invalid duration True: expected a finite number of "
                                        "seconds or e.g. 5s, 10m, 7d" + YAML_BOOL),
    ({"tail": {"chunk_bytes": False}}, "tail.chunk_bytes: invalid size False: expected bytes or e.g. 512KiB, 1MiB"
                                       + YAML_BOOL),
    ({"log_level": False}, "log_level: expected one of 'debug', 'info', 'warning' or 'error', got False" + YAML_BOOL),
    ({"listen": 9469}, "listen: expected a valid string, got 9469 (YAML reads it as a number: quote it, e.g. "
                       "\":9469\")"),
    ({"labels": {"max_vmtas": 1.5}}, "labels.max_vmtas: expected a valid integer, got 1.5"),
    ({"correlator": False}, "correlator: expected a section (a mapping of keys), got False"),  # quoting: no section
])
def test_a_value_yaml_made_a_boolean_or_a_number_is_refused_saying_so(tmp_path: Path, extra: dict,
                                                                        problem: str) -> None:
    """`labels.max_senders: true` was taken as 1 (pydantic's lax int), `log_level: off` and `listen: 9469` said
    only `got False` / `got 9469`, and `max_vmtas: 1.5` said `got` twice."""
    assert _problems(_minimal(tmp_path, **extra)) == [problem]


# --- review 2026-12: a secret's value is never echoed in a problem line ------------------------------------------

SECRET = 73194655
"""A password YAML reads as a number (unquoted digits): the problem said `got 73194655 (... e.g. "73194655")`."""
NUMBER = "a number, not a string: quote it in the YAML"


@pytest.mark.parametrize(("extra", "problem"), [
    ({"pmta": {"url": "http://127.0.0.1:8080", "username": "mon", "password": SECRET}}, f"pmta.password: {NUMBER}"),
    ({"pmta": {"url": "http://127.0.0.1:8080", "username": "mon", "password": SECRET / 1000}},
     f"pmta.password: {NUMBER}"),
    ({"pmta": {"url": "http://127.0.0.1:8080", "api_key": SECRET}}, f"pmta.api_key: {NUMBER}"),
    ({"web": {"basic_auth_users": {"prom": SECRET}}}, f"web.basic_auth_users.prom: {NUMBER}"),
    ({"web": {"basic_auth_users": {"prom": [SECRET]}}}, "web.basic_auth_users.prom: expected a valid string, got "
                                                         "a list"),
    ({"web": {"basic_auth_users": f"prom:{SECRET}"}}, "web.basic_auth_users: expected a section (a mapping of "
                                                      "keys), got a string"),
    # (a string in password_file is a path, shown: tests/test_config_secret_file_paths.py; a number is none)
    ({"pmta": {"username": "mon", "password_file": SECRET}}, "pmta.password_file: expected a path (a string), got "
                                                             "a number"),
    ({"pmta": {"api_key": True}}, "pmta.api_key: expected a valid string, got a boolean" + YAML_BOOL),
])
def test_the_value_of_a_secret_key_is_never_echoed(tmp_path: Path, extra: dict, problem: str) -> None:
    """Review 2026-12: `pmta.password: 73194655` said `expected a valid string, got 73194655 (YAML reads it as a
    number: quote it, e.g. "73194655")`, into a terminal, CI log or ticket; so did api_key and basic auth passwords.
    The problem names the key and what is wrong, never the value."""
    problems = _problems(_minimal(tmp_path, **extra))
    assert problems == [problem]
    assert str(SECRET) not in problems[0] and str(SECRET)[:4] not in problems[0]


def test_check_config_never_prints_an_unquoted_numeric_password(tmp_path: Path, capsys) -> None:
    """The whole path: YAML file -> check-config's stderr (and the hub's config, which shares the web section)."""
    from exporter.config import ConfigError as Refused
    from hub.config import load_hub_config

    (tmp_path / "logs").mkdir()
    text = (f"sources: [{{paths: ['{tmp_path}/logs/acct-*.csv']}}]\nstate_dir: {tmp_path}/state\n"
            f"pmta: {{url: 'http://127.0.0.1:8080', username: mon, password: {SECRET}, api_key: {SECRET}}}\n"
            f"web: {{basic_auth_users: {{prom: {SECRET}}}}}\n")
    rc, err = _check(tmp_path, text, capsys)
    assert rc == 2 and str(SECRET) not in err, err
    assert [ln.strip() for ln in err.splitlines()[1:]] == [
        f"line 3: pmta.api_key: {NUMBER}", f"line 3: pmta.password: {NUMBER}",
        f"line 4: web.basic_auth_users.prom: {NUMBER}"]
    hub = tmp_path / "hub.yml"
    hub.write_text(f"hub: {{targets: ['http://127.0.0.1:9469']}}\nweb: {{basic_auth_users: {{prom: {SECRET}}}}}\n")
    with pytest.raises(Refused) as refused:
        load_hub_config(hub)
    assert refused.value.problems == [f"web.basic_auth_users.prom: {NUMBER}"]


# --- review 2026-12: labels.senders entries that could never match ----------------------------------------------

def test_sender_domains_are_written_as_records_are_compared(tmp_path: Path) -> None:
    """The aggregator compares a record's MAIL FROM domain (after the last `@`, lowercased) with each entry as it is:
    ` example.com`, `@example.com`, `example.com.` never matched, and every record went to sender="other"."""
    entries = [" Mail.Example.COM ", "@news.example", "bounces.example.", "\tPLAIN.example\n", "news.example"]
    config = config_from_dict(_minimal(tmp_path, labels={"senders": entries}))
    assert config.labels.senders == ["mail.example.com", "news.example", "bounces.example", "plain.example"]


@pytest.mark.parametrize(("entry", "why"), [
    ("bounce@example.com", "'bounce@example.com' is an address, not a domain: give the part after the '@'"),
    ("", "empty: give a sending domain such as example.com"),
    ("  @ ", "empty: give a sending domain such as example.com"),
    ("example .com", "'example .com' holds a space, ',' or ';': one domain per entry"),
    ("a.example,b.example", "'a.example,b.example' holds a space, ',' or ';': one domain per entry"),
    ("*.example.com", "'*.example.com' holds a wildcard: entries are whole domains, compared exactly"),
])
def test_a_sender_entry_that_is_no_domain_is_refused_naming_it(tmp_path: Path, entry: str, why: str) -> None:
    assert _problems(_minimal(tmp_path, labels={"senders": ["ok.example", entry]})) == [f"labels.senders.1: {why}"]


def test_a_sender_written_as_operators_do_is_its_own_label_end_to_end(tmp_path: Path) -> None:
    """oneshot over records sent from bounce@sender.example: ` @Sender.Example. ` in labels.senders counted them as
    sender="other" (nothing could match it)."""
    from tests.conftest import ACCT_HEADER, d_line, oneshot_nonzero

    (tmp_path / "logs").mkdir()
    (tmp_path / "off").mkdir()
    (tmp_path / "logs" / "acct-1.csv").write_text(ACCT_HEADER + "\n" + "".join(d_line(n) + "\n" for n in range(5)))
    seen = oneshot_nonzero(tmp_path, False, ("pmta_sender_delivered_total",),
                           labels={"senders": [" @Sender.Example. "]})
    assert seen == {'pmta_sender_delivered_total{isp="gmail",sender="sender.example"}': 5.0}, seen
