"""A sender logged in angle brackets (`<news@s.ex>`, as an SMTP path writes it) is the bare address.

A bracketed recipient was already read as the bare address; a bracketed sender was kept whole: a remote bounce
giving `<news@s.ex>` never joined the delivery sent from `news@s.ex` (a second timeline, the delivery left
`delivered`), its sender domain read `s.ex>`, and the null sender `<>` was labelled `none` rather than the empty
sender an empty field is (hostile review of the correlator's linking, 2026-12-08). The metrics labelled such a
sender's domain `s.ex>` too (pmta_sender_*_total{sender="s.ex>"}), apart from the same sender logged bare."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from correlator.prepare import _orig_key
from exporter.config import load_config
from tests.test_correlator_support import Harness, batch

ACCT = "type,timeLogged,timeQueued,orig,rcpt,dsnStatus,dsnDiag,vmta,jobId"
RB = "type,timeLogged,orig,rcpt,dsnAction,dsnStatus,dsnDiag,jobId"


def test_a_bracketed_sender_is_the_bare_address() -> None:
    assert _orig_key("<News@S.ex>") == _orig_key("news@s.ex") == ("news@s.ex", "s.ex")
    assert _orig_key("<>") == _orig_key("") == _orig_key(" < > ") == ("", "")
    assert _orig_key("bob") == ("bob", "none")


async def test_a_remote_bounce_with_a_bracketed_sender_joins_its_delivery(tmp_path: Path) -> None:
    h = Harness(tmp_path)
    h.commit(batch("/l/acct-1.csv", ACCT + """
d,2024-05-01 10:05:00+0000,2024-05-01 10:00:00+0000,news@s.ex,a1@gmail.com,2.0.0,smtp;250 ok,v1,
d,2024-05-01 10:05:00+0000,2024-05-01 10:00:00+0000,news@s.ex,a2@gmail.com,2.0.0,smtp;250 ok,v1,
"""))
    h.commit(batch("/l/bounce-1.csv", RB + """
rb,2024-05-02 08:00:00+0000,news@s.ex,<a1@gmail.com>,failed,5.2.2,smtp;552 full,
rb,2024-05-02 08:00:00+0000,<news@s.ex>,a2@gmail.com,failed,5.2.2,smtp;552 full,
"""))
    async with h.client() as c:
        items = (await c.get("/api/v1/search", params={"limit": 50})).json()["items"]
    h.close()
    assert sorted((i["rcpt"], i["orig"], i["sender_domain"], i["outcome"], i["remote_bounced"]) for i in items) == [
        ("a1@gmail.com", "news@s.ex", "s.ex", "bounced", True), ("a2@gmail.com", "news@s.ex", "s.ex", "bounced", True)]


@pytest.mark.parametrize("path", ["oneshot", "daemon"])
def test_the_sender_label_of_a_bracketed_sender_is_its_domain(tmp_path: Path, path: str) -> None:
    """Both folds: the oneshot's polars derivation and the daemon's (its small polls merged row by row)."""
    from exporter import daemon, oneshot

    (tmp_path / "acct-1.csv").write_text(ACCT + """
d,2024-05-01 10:05:00+0000,2024-05-01 10:00:00+0000,<News@S.ex>,a1@gmail.com,2.0.0,smtp;250 ok,v1,
d,2024-05-01 10:05:00+0000,2024-05-01 10:00:00+0000,news@s.ex,<a2@gmail.com>,2.0.0,smtp;250 ok,v1,
""")
    (tmp_path / "state").mkdir()
    (tmp_path / "c.yml").write_text(yaml.safe_dump({
        "sources": [{"name": "acct", "paths": [str(tmp_path / "acct-*.csv")]}], "state_dir": str(tmp_path / "state"),
        "correlator": {"enabled": False}}))
    config = load_config(tmp_path / "c.yml")
    page = (oneshot if path == "oneshot" else daemon).run_oneshot(config)
    assert re.findall(r"^pmta_sender_delivered_total\{.*", page, re.M) == [
        'pmta_sender_delivered_total{isp="gmail",sender="s.ex"} 2.0']
