"""What a secret file says, read the same way by every reader (the PMTA poller's password and API key, the hub's
password and bearer token): a UTF-8 byte order mark (an editor's) is no part of the secret, and a password's first
line ends at a line feed only, not at the other characters `str.splitlines` also takes for a line's end
(U+0085, U+2028, U+2029, form feed, vertical tab), which may stand inside a password."""

from __future__ import annotations

from pathlib import Path

import pytest

from exporter.boundedfile import read_password
from exporter.cli import main
from exporter.config import PmtaApiConfig
from exporter.pmta_api import read_api_key
from hub.fanout import _read_secret

BOM = "\ufeff"


@pytest.mark.parametrize(("content", "password"), [
    ("s3cret\n", "s3cret"),
    ("s3cret\r\nignored\n", "s3cret"),
    (BOM + "s3cret\n", "s3cret"),
    ("s3\u2028cret\n", "s3\u2028cret"),
    ("s3\x85cret\nignored", "s3\x85cret"),
    ("s3\x0ccr\x0bet\u2029x\n", "s3\x0ccr\x0bet\u2029x"),
    ("trailing  \n", "trailing  "),
])
def test_the_pmta_password_is_the_files_first_line_without_a_byte_order_mark(tmp_path: Path, content: str,
                                                                            password: str) -> None:
    pw = tmp_path / "pw"
    pw.write_bytes(content.encode())
    assert PmtaApiConfig(url="http://pmta", username="mon", password_file=pw).resolved_password() == password


def test_an_api_key_file_saved_with_a_byte_order_mark_sends_the_key(tmp_path: Path) -> None:
    key = tmp_path / "key"
    key.write_bytes((BOM + "abc_123\n").encode())
    assert read_api_key(PmtaApiConfig(url="http://pmta", api_key_file=key)) == "abc_123"


def test_a_password_file_holding_only_a_byte_order_mark_is_refused_at_check_config(tmp_path: Path, capsys) -> None:
    (tmp_path / "logs").mkdir()
    pw = tmp_path / "pw"
    pw.write_bytes(BOM.encode() + b"\n")
    cfg = tmp_path / "c.yml"
    cfg.write_text(f"sources: [{{paths: ['{tmp_path}/logs/acct-*.csv']}}]\nstate_dir: {tmp_path}/state\n"
                   f"pmta: {{url: 'http://127.0.0.1:1', username: mon, password_file: '{pw}'}}\n")
    assert main(["check-config", str(cfg)]) == 2
    assert f"pmta.password_file: {pw} is empty: it holds no secret" in capsys.readouterr().err


@pytest.mark.parametrize("content", [BOM + "s3cret\n", "s3cret\n"])
def test_the_hubs_bearer_token_file_drops_a_byte_order_mark(tmp_path: Path, content: str) -> None:
    secret = tmp_path / "secret"
    secret.write_bytes(content.encode())
    assert _read_secret(secret) == "s3cret"


@pytest.mark.parametrize(("content", "password"), [(BOM + "s3cret \n# rotated\n", "s3cret "), ("pw\r\n", "pw"),
                                                   ("a\u2028b\n", "a\u2028b")])
def test_the_hubs_password_is_its_files_first_line_as_the_daemons_is(tmp_path: Path, content: str,
                                                                      password: str) -> None:
    """Review 2026-12-07: the hub sent the whole file stripped (`s3cret \n# rotated`), the daemon's poller its
    first line (`s3cret `), and the hub's check said nothing of the second line."""
    secret = tmp_path / "secret"
    secret.write_bytes(content.encode())
    assert read_password(secret) == password
    assert PmtaApiConfig(url="http://pmta", username="mon", password_file=secret).resolved_password() == password


@pytest.mark.parametrize("content", [b"\n s3cret\n", b" \t \r\ns3cret\n", b"\xef\xbb\xbf  \ns3cret\n"])
def test_a_hub_password_file_whose_first_line_is_blank_is_refused_at_start(tmp_path: Path, content: bytes) -> None:
    from hub.config import HubConfig
    from hub.preflight import problems

    secret = tmp_path / "secret"
    secret.write_bytes(content)
    config = HubConfig.model_validate({"hub": {"targets": ["http://127.0.0.1:9469"],
                                               "auth": {"username": "hub", "password_file": str(secret)}}})
    assert (f"hub.auth.password_file: {secret} holds no password on its first line (the password is the file's "
            "first line)") in problems(config)
