"""A sender logged in angle brackets (`<news@s.ex>`, as an SMTP path writes it) is the bare address.

A bracketed recipient was already read as the bare address; a bracketed sender was kept whole: a remote bounce
giving `<news@s.ex>` never joined the delivery sent from `news@s.ex` (a second timeline, the delivery left
`delivered`), its sender domain read `s.ex>`, and the null sender `<>` was labelled `none` rather than the empty
sender an empty field is (hostile review of the correlator's linking, 2026-12-08). The metrics labelled such a
sender's domain `s.ex>` too (pmta_sender_*_total{sender="s.ex>"}), apart from the same sender logged bare."""

from __future__ import annotations

import re
import time
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


@pytest.mark.parametrize(("logged", "domain"), [
    ("<News@S.ex>", "s.ex"), ("< news@s.ex >", "s.ex"), ("<news@s.ex> ", "s.ex"), ("y@t.ex>", "t.ex"),
    ("<<x@r.ex>>", "r.ex"), ("news@s.ex\t", "s.ex"), ("<w@v.ex\t>", "v.ex"), ("z@u.ex\x1c", "u.ex"),
    ("<news@s.ex> >", "s.ex"), ("y@t.ex> >", "t.ex")])
def test_a_senders_domain_is_the_same_in_timelines_and_in_the_metrics(tmp_path: Path, logged: str, domain: str) -> None:
    """Review: `< news@s.ex >` was `s.ex ` in the metrics' sender label and `s.ex` in timelines; `y@t.ex>` the
    other way round."""
    from exporter import daemon, oneshot

    assert _orig_key(logged)[1] == domain
    (tmp_path / "acct-1.csv").write_text(
        ACCT + f'\nd,2024-05-01 10:05:00+0000,2024-05-01 10:00:00+0000,"{logged}",a1@gmail.com,2.0.0,ok,v1,\n')
    (tmp_path / "state").mkdir()
    (tmp_path / "c.yml").write_text(yaml.safe_dump({
        "sources": [{"name": "acct", "paths": [str(tmp_path / "acct-*.csv")]}], "state_dir": str(tmp_path / "state"),
        "correlator": {"enabled": False}}))
    config = load_config(tmp_path / "c.yml")
    for fold in (oneshot, daemon):
        page = fold.run_oneshot(config)
        assert re.findall(r"^pmta_sender_delivered_total\{.*", page, re.M) == [
            f'pmta_sender_delivered_total{{isp="gmail",sender="{domain}"}} 1.0'], fold


async def test_a_remote_bounce_joins_a_delivery_stored_with_its_bracketed_sender_before(tmp_path: Path) -> None:
    """Review: a store written before senders lost their brackets holds `<news@s.ex>`; a remote bounce read after the
    upgrade (bounces come days later) is keyed `news@s.ex` and split from its delivery."""
    h = Harness(tmp_path)
    h.commit(batch("/l/acct-1.csv", ACCT + """
d,2024-05-01 10:05:00+0000,2024-05-01 10:00:00+0000,<news@s.ex>,a1@gmail.com,2.0.0,smtp;250 ok,v1,
"""))
    h.conn.execute("UPDATE corr_timelines SET orig = '<news@s.ex>'")  # as the version before stored it
    h.commit(batch("/l/bounce-1.csv", RB + """
rb,2024-05-02 08:00:00+0000,<news@s.ex>,a1@gmail.com,failed,5.2.2,smtp;552 full,
"""))
    async with h.client() as c:
        items = (await c.get("/api/v1/search", params={"limit": 50})).json()["items"]
    h.close()
    assert [(i["outcome"], i["remote_bounced"]) for i in items] == [("bounced", True)]


def test_a_complaint_naming_the_bracketed_sender_is_counted_on_its_deliverys_vmta(tmp_path: Path) -> None:
    """The metrics' attribution compared senders as logged: a complaint giving `<news@s.ex>` for a delivery from
    news@s.ex (sent from v7) matched only on the recipient alone (or not at all); its sender is the bare address."""
    from exporter import daemon  # the oneshot with the correlator on (exporter/cli.py)

    now = int(time.time())  # within the store's retention
    (tmp_path / "acct-1.csv").write_text(ACCT + f"""
d,{now - 7200},{now - 7300},news@s.ex,a1@gmail.com,2.0.0,ok,v7,
d,{now - 3600},{now - 3700},other@o.ex,a1@gmail.com,2.0.0,ok,v8,
""")
    (tmp_path / "fbl-1.csv").write_text("type,timeLogged,orig,rcpt,feedbackType\n"
                                        f"f,{now - 60},<news@s.ex>,a1@gmail.com,abuse\n")
    (tmp_path / "state").mkdir()
    (tmp_path / "c.yml").write_text(yaml.safe_dump({
        "sources": [{"name": "acct", "paths": [str(tmp_path / "acct-*.csv")]},
                    {"name": "fbl", "paths": [str(tmp_path / "fbl-*.csv")], "records": ["f"]}],
        "state_dir": str(tmp_path / "state"), "correlator": {"enabled": True}}))
    page = daemon.run_oneshot(load_config(tmp_path / "c.yml"))
    assert re.findall(r"^pmta_complaints_total\{.*", page, re.M) == [
        'pmta_complaints_total{feedback_type="abuse",isp="gmail",vmta="v7",vmta_pool="none"} 1.0']


@pytest.mark.parametrize("hashed", [False, True])
async def test_reports_read_after_the_upgrade_reach_a_delivery_stored_with_brackets(tmp_path: Path,
                                                                                     hashed: bool) -> None:
    """Review: a store written before holds the sender in brackets (`<news@s.ex>`; hashed: `<bounce-<rcpt>@s.ex>`).
    The timelines compared the bracketed form of the bare sender only, the hashed one not at all, and the metrics'
    attribution neither: the complaint and the remote bounce read after the upgrade were `unknown` (and, hashed,
    the bounce a timeline of its own)."""
    from exporter.config import CorrelatorConfig

    config = CorrelatorConfig(hash_recipients=True, hmac_key_file=tmp_path / "k") if hashed else None
    h = Harness(tmp_path, config)
    h.commit(batch("/l/acct-1.csv", ACCT + """
d,2024-05-01 10:05:00+0000,2024-05-01 10:00:00+0000,<bounce-a1=gmail.com@s.ex>,a1@gmail.com,2.0.0,ok,v7,
d,2024-05-01 10:05:00+0000,2024-05-01 10:00:00+0000,<news@s.ex>,a2@gmail.com,2.0.0,ok,v7,
"""))
    h.conn.execute("UPDATE corr_timelines SET orig = '<' || orig || '>' WHERE orig != ''")  # as stored before
    reports = [batch("/l/fbl-1.csv", "type,timeLogged,orig,rcpt,feedbackType\n"
                                     "f,2024-05-02 08:00:00+0000,<news@s.ex>,a2@gmail.com,abuse\n"),
               batch("/l/bounce-1.csv", RB + "\nrb,2024-05-02 08:00:00+0000,<bounce-a1=gmail.com@s.ex>,a1@gmail.com,"
                                             "failed,5.2.2,smtp;552 full,\n")]
    assert [[d.vmta for d in h.sink.lookup_vmta(b.columns, b.rows)] for b in reports] == [["v7"], ["v7"]]
    for b in reports:
        h.commit(b)
    async with h.client() as c:
        items = (await c.get("/api/v1/search", params={"limit": 50})).json()["items"]
    h.close()
    assert sorted((i["outcome"], i["complained"], i["remote_bounced"]) for i in items) == [
        ("bounced", False, True), ("complained", True, False)]
