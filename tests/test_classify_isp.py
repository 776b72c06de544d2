"""ISP classifier: the domain table, MX suffixes from dsnMta, learned domains, `other`, bad tables."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from exporter.classify import isp as isp_module
from exporter.classify.isp import ISP_NAMES, IspClassifier

EXPECTED_VALUES = (
    "gmail",
    "google_workspace",
    "yahoo",
    "microsoft",
    "office365",
    "apple",
    "comcast",
    "gmx",
    "mailru",
    "yandex",
    "orange",
    "other",
)


@pytest.fixture(scope="module")
def shipped() -> IspClassifier:
    return IspClassifier.load()


@pytest.fixture
def fresh() -> IspClassifier:
    return IspClassifier.load()


DOMAINS = [
    ("gmail.com", "gmail"),
    ("googlemail.com", "gmail"),
    ("GMail.COM", "gmail"),
    ("gmail.com.", "gmail"),
    ("yahoo.com", "yahoo"),
    ("yahoo.co.uk", "yahoo"),
    ("yahoo.fr", "yahoo"),
    ("ymail.com", "yahoo"),
    ("rocketmail.com", "yahoo"),
    ("aol.com", "yahoo"),
    ("aim.com", "yahoo"),
    ("verizon.net", "yahoo"),
    ("att.net", "yahoo"),
    ("frontier.com", "yahoo"),  # Yahoo's partners (Badsender list): `other` for a deferral naming no MX
    ("sky.com", "yahoo"),
    ("rogers.com", "yahoo"),
    ("sbcglobal.net", "yahoo"),
    ("bellsouth.net", "yahoo"),
    ("worldnet.att.net", "yahoo"),
    ("YMAIL.COM", "yahoo"),
    ("yahoo.co.jp", "other"),
    ("yahoo.ne.jp", "other"),
    ("ybb.ne.jp", "other"),
    ("hotmail.com", "microsoft"),
    ("hotmail.co.uk", "microsoft"),
    ("outlook.com", "microsoft"),
    ("outlook.fr", "microsoft"),
    ("live.com", "microsoft"),
    ("live.co.uk", "microsoft"),
    ("msn.com", "microsoft"),
    ("icloud.com", "apple"),
    ("me.com", "apple"),
    ("mac.com", "apple"),
    ("comcast.net", "comcast"),
    ("gmx.de", "gmx"),
    ("gmx.net", "gmx"),
    ("gmx.com", "gmx"),
    ("web.de", "gmx"),
    ("mail.com", "gmx"),
    ("mail.ru", "mailru"),
    ("bk.ru", "mailru"),
    ("inbox.ru", "mailru"),
    ("list.ru", "mailru"),
    ("yandex.ru", "yandex"),
    ("yandex.com", "yandex"),
    ("ya.ru", "yandex"),
    ("orange.fr", "orange"),
    ("wanadoo.fr", "orange"),
    ("example.com", "other"),
    ("mail.gmail.com", "other"),  # exact table: subdomains are not the provider's mailboxes
    ("", "other"),
]


@pytest.mark.parametrize(("domain", "expected"), DOMAINS)
def test_domain_table(shipped: IspClassifier, domain: str, expected: str) -> None:
    assert shipped.classify(domain) == expected


MX_HOSTS = [
    ("gmail-smtp-in.l.google.com (64.233.161.27)", "gmail"),
    ("alt1.gmail-smtp-in.l.google.com (142.250.153.27)", "gmail"),
    ("gmail-smtp-in.l.google.com", "gmail"),
    ("GMAIL-SMTP-IN.L.GOOGLE.COM. (64.233.161.27)", "gmail"),
    ("aspmx.l.google.com (142.250.102.27)", "google_workspace"),
    ("alt4.aspmx.l.google.com (1.2.3.4)", "google_workspace"),
    ("smtp.google.com (1.2.3.4)", "google_workspace"),
    ("aspmx2.googlemail.com (1.2.3.4)", "google_workspace"),
    ("outlook-com.olc.protection.outlook.com (52.101.8.36)", "microsoft"),
    ("hotmail-com.olc.protection.outlook.com (1.2.3.4)", "microsoft"),
    ("eur.olc.protection.outlook.com (1.2.3.4)", "microsoft"),
    ("acme-com.mail.protection.outlook.com (52.101.1.1)", "office365"),
    ("acme-com.o-v1.mx.microsoft (1.2.3.4)", "office365"),
    ("mta7.am0.yahoodns.net (66.196.118.35)", "yahoo"),
    ("mx-aol.mail.gm0.yahoodns.net (1.2.3.4)", "yahoo"),
    ("mx-att.mail.am0.yahoodns.net (1.2.3.4)", "yahoo"),
    ("mailin-01.mx.aol.com (1.2.3.4)", "yahoo"),
    ("mx01.mail.icloud.com (17.57.154.6)", "apple"),
    ("mx2c1.comcast.net (96.102.18.149)", "comcast"),
    ("mx00.emig.gmx.net (212.227.15.9)", "gmx"),
    ("mx-ha03.web.de (1.2.3.4)", "gmx"),
    ("mxs.mail.ru (94.100.180.31)", "mailru"),
    ("mx.yandex.net (77.88.21.249)", "yandex"),
    ("mx.yandex.ru (1.2.3.4)", "yandex"),
    ("smtp-in.orange.fr (80.12.242.27)", "orange"),
    ("mx1.destindomain.com (2.2.2.2)", "other"),
    ("uniqsoft.net (204.93.177.138)", "other"),
    ("mx.gmail.com", "other"),
    ("evilgoogle.com (1.2.3.4)", "other"),  # suffixes match on label boundaries only
    ("notyahoodns.net", "other"),
    ("64.233.161.27", "other"),
    ("", "other"),
    ("dns; mta7.am0.yahoodns.net", "yahoo"),  # named the DSN way (RFC 3464 Remote-MTA): the type goes
    ("DNS;mx01.mail.icloud.com (17.57.154.6)", "apple"),
    ("dns; hotmail.com", "other"),  # a dsnMta is an MX host: the domain table does not apply (see reporters)
]


@pytest.mark.parametrize(("dsn_mta", "expected"), MX_HOSTS)
def test_mx_suffix(fresh: IspClassifier, dsn_mta: str, expected: str) -> None:
    assert fresh.classify("custom-domain.example", dsn_mta) == expected
    assert fresh.classify_mx(dsn_mta) == expected


def test_domain_table_wins_over_mx(fresh: IspClassifier) -> None:
    assert fresh.classify("comcast.net", "mta5.am0.yahoodns.net (1.2.3.4)") == "comcast"
    assert fresh.classify("yahoo.co.jp", "mx.yahoodns.net") == "other"


def test_mx_result_is_learned_for_later_records_without_dsn_mta(fresh: IspClassifier) -> None:
    assert fresh.classify("acme.io") == "other"
    assert fresh.classify("acme.io", "aspmx.l.google.com (1.2.3.4)") == "google_workspace"
    assert fresh.classify("acme.io") == "google_workspace"
    assert fresh.classify("ACME.io", "") == "google_workspace"
    assert fresh.classify_rcpt("bob@Acme.IO") == "google_workspace"
    # the domain moved to a host we do not know: forget it
    assert fresh.classify("acme.io", "mx.acme.io (1.2.3.4)") == "other"
    assert fresh.classify("acme.io") == "other"


def test_learned_cache_is_bounded(fresh: IspClassifier, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(isp_module, "_CACHE_LIMIT", 10)
    for i in range(25):
        assert fresh.classify(f"d{i}.example", f"mx{i}.mail.protection.outlook.com (1.2.3.{i})") == "office365"
    assert 0 < len(fresh._learned) <= 10
    assert 0 < len(fresh._mx_cache) <= 10
    assert fresh.classify("d24.example") == "office365"


REPORTERS = [
    ("dns; hotmail.com", "microsoft"),  # JMRP, recipient hidden (pmta-formats.md §1.2, §3.3)
    ("DNS; Hotmail.COM.", "microsoft"),
    ("hotmail.com", "microsoft"),
    ("dns; mta.yahoo.com", "yahoo"),  # suffixes walked in the domain table: yahoo.com
    ("dns; comcast.net", "comcast"),
    ("dns;feedback.yahoodns.net", "yahoo"),  # no domain: the MX suffixes
    ("dns; x.mail.protection.outlook.com", "office365"),  # the longest suffix wins, whichever table lists it
    ("dns; fbl.yahoo.co.jp", "other"),  # a domain pinned to `other` stays so
    ("dns; fbl.example", "other"),
    ("dns; hotmail.com.evil.example", "other"),  # suffixes on label boundaries only
    ("", "other"),
]


@pytest.mark.parametrize(("reporter", "expected"), REPORTERS)
def test_a_reporting_mta_is_resolved_by_its_domain_then_its_mx(fresh: IspClassifier, reporter: str,
                                                                expected: str) -> None:
    assert fresh.classify_reporter(reporter) == expected
    assert fresh.classify_reporter(reporter) == expected  # cached
    assert fresh._learned == {}


RCPTS = [
    ("user@Example.COM", "", "other"),
    ("koul.vibhawxxxx1@gmail.com", "gmail-smtp-in.l.google.com (64.233.161.27)", "gmail"),
    ("VJAYPRAKASH@YMAIL.COM", "mta7.am0.yahoodns.net (66.196.118.35)", "yahoo"),
    ("<x@hotmail.com>", "", "microsoft"),
    ('"odd@name"@icloud.com', "", "apple"),
    ("bob@example.com", "example-com.mail.protection.outlook.com (1.2.3.4)", "office365"),
    ("no-at-sign", "", "other"),
    ("", "", "other"),
]


@pytest.mark.parametrize(("rcpt", "dsn_mta", "expected"), RCPTS)
def test_classify_rcpt(fresh: IspClassifier, rcpt: str, dsn_mta: str, expected: str) -> None:
    assert fresh.classify_rcpt(rcpt, dsn_mta) == expected


def test_values_are_the_closed_set(shipped: IspClassifier) -> None:
    assert ISP_NAMES == EXPECTED_VALUES
    assert shipped.VALUES == EXPECTED_VALUES
    assert IspClassifier.VALUES == EXPECTED_VALUES
    assert shipped.date == "2026-03-15"


def test_every_provider_in_the_shipped_yaml_is_in_the_closed_set() -> None:
    raw = yaml.safe_load(Path(isp_module.__file__).with_name("isps.yaml").read_text())
    assert set(raw["providers"]) <= set(EXPECTED_VALUES)
    assert set(raw["providers"]) == set(EXPECTED_VALUES)


def test_every_result_is_in_values(shipped: IspClassifier) -> None:
    for domain, _ in DOMAINS:
        for dsn_mta, _ in MX_HOSTS:
            assert shipped.classify(domain, dsn_mta) in shipped.VALUES


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "isps.yaml"
    path.write_text(text)
    return path


def test_user_table_replaces_the_shipped_one(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "date: 2026-01-02\nproviders:\n  gmail:\n    domains: [Corp.Example]\n    mx_suffixes: ['*.mx.corp.example']\n",
    )
    table = IspClassifier.load(path)
    assert table.VALUES == ("gmail", "other")
    assert table.date == "2026-01-02"
    assert table.classify("corp.example") == "gmail"
    assert table.classify("x.example", "a.mx.corp.example (1.2.3.4)") == "gmail"
    assert table.classify("gmail.com") == "other"


BAD_TABLES = [
    ("providers: {gmail: {domains: [gmail.com]}}\n", "top level: missing key(s) ['date']"),
    ("date: 2026-01-01\n", "top level: missing key(s) ['providers']"),
    ("date: 2026-01-01\nproviders: {}\nextra: 1\n", "top level: unknown key(s) ['extra']"),
    ("date: 2026-01-01\nproviders: []\n", "providers: expected a non-empty mapping"),
    ("date: 2026-01-01\nproviders: {hotmail: {domains: [hotmail.com]}}\n", "providers.hotmail: unknown provider"),
    ("date: 2026-01-01\nproviders: {gmail: {domain: [gmail.com]}}\n", "providers.gmail: unknown key(s) ['domain']"),
    ("date: 2026-01-01\nproviders: {gmail: {domains: gmail.com}}\n", "providers.gmail.domains: expected a list"),
    (
        "date: 2026-01-01\nproviders: {gmail: {domains: [localhost]}}\n",
        "providers.gmail.domains: bad entry 'localhost'",
    ),
    ("date: 2026-01-01\nproviders: {gmail: {domains: [a b.com]}}\n", "providers.gmail.domains: bad entry 'a b.com'"),
    ("date: 2026-01-01\nproviders: {gmail: {domains: [7]}}\n", "providers.gmail.domains: bad entry 7"),
    (
        "date: 2026-01-01\nproviders: {gmail: {domains: [x.com]}, yahoo: {domains: [X.com]}}\n",
        "providers.yahoo.domains: 'x.com' is already listed for 'gmail'",
    ),
    (
        "date: 2026-01-01\nproviders: {gmail: {mx_suffixes: [g.com]}, other: {mx_suffixes: ['.g.com']}}\n",
        "providers.other.mx_suffixes: 'g.com' is already listed for 'gmail'",
    ),
    ("date: 2026-01-01\nproviders: {gmail: {domains: [gmail.com]\n", "not valid YAML"),
    ("- just\n- a list\n", "top level: expected a mapping, got list"),
    ("version: 2\ndate: 2026-01-01\nproviders: {gmail: {domains: [gmail.com]}}\n",
     "version: 2 is not a table version this watchtower reads (1)"),
    ("version: '1'\ndate: 2026-01-01\nproviders: {gmail: {domains: [gmail.com]}}\n",
     "version: '1' is not a table version this watchtower reads (1)"),
]


@pytest.mark.parametrize(("text", "message"), BAD_TABLES)
def test_bad_table_names_the_file_and_the_entry(tmp_path: Path, text: str, message: str) -> None:
    path = write(tmp_path, text)
    with pytest.raises(ValueError) as info:
        IspClassifier.load(path)
    assert str(info.value).startswith(f"{path}: ")
    assert message in str(info.value)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"nope\.yaml: cannot read"):
        IspClassifier.load(tmp_path / "nope.yaml")


@pytest.mark.parametrize(("domain", "dsn_mta"), [
    ("gmail.com", ""), ("GMAIL.com.", ""), ("corp.example", "aspmx.l.google.com (1.2.3.4)"),
    ("corp.example", "mx.nowhere.example"), ("", "mta5.am0.yahoodns.net"), ("corp.example", ""), ("", ""),
])
def test_known_answers_what_classify_answers_and_learns_nothing(fresh: IspClassifier, domain: str,
                                                                 dsn_mta: str) -> None:
    """The aggregator's grouping thread asks `known` ahead of the fold: it must give classify's answer
    whenever it gives one, never one that depends on what earlier records taught, and teach nothing."""
    fresh.classify("corp.example", "aspmx.l.google.com")  # corp.example learned as google_workspace
    learned = dict(fresh._learned)
    answer = fresh.known(domain, dsn_mta)
    assert fresh._learned == learned
    if dsn_mta or domain.lower().rstrip(".") in fresh._domains:
        assert answer == fresh.classify(domain, dsn_mta)
    else:  # only the learned MX could tell (corp.example here): left to the reader in file order
        assert answer is None


@pytest.mark.parametrize("loader", ["isp", "replies"])
def test_a_table_that_is_not_yaml_is_one_line_naming_the_file_and_line(tmp_path: Path, loader: str) -> None:
    """check-config promises one line per problem, and a SIGHUP reload logs it in one line: PyYAML's own message
    runs over several (`in "<unicode string>", line 2, column 8`)."""
    from exporter.classify import IspClassifier, ReplyClassifier

    table = tmp_path / "table.yaml"
    table.write_text("version: 1\ngmail: [\n")
    with pytest.raises(ValueError) as exc:
        (IspClassifier if loader == "isp" else ReplyClassifier).load(table)
    assert str(exc.value) == (f"{table}: line 3, column 1: not valid YAML: did not find expected node content "
                              "(while parsing a flow node started on line 3)")


# --- a table that is not UTF-8 names the file and the byte, at start and on SIGHUP -------------------
NOT_UTF8 = [(b"\xffversion: 1\n", 0xFF, 0), (b"version: 1\n# caf\xe9\n", 0xE9, 16)]


@pytest.mark.parametrize("loader", ["isp", "replies"])
@pytest.mark.parametrize(("raw", "byte", "offset"), NOT_UTF8, ids=["first-byte", "in-a-comment"])
def test_a_table_that_is_not_utf8_is_one_line_naming_the_file_and_the_byte(tmp_path: Path, loader: str,
                                                                           raw: bytes, byte: int, offset: int) -> None:
    from exporter.classify import ReplyClassifier

    table = tmp_path / "table.yaml"
    table.write_bytes(raw)
    with pytest.raises(ValueError) as exc:
        (IspClassifier if loader == "isp" else ReplyClassifier).load(table)
    assert str(exc.value) == f"{table}: not UTF-8 (byte 0x{byte:02x} at offset {offset}); save the file as UTF-8"


@pytest.mark.parametrize("key", ["isp_file", "replies_file"])
def test_a_table_that_is_not_utf8_is_named_at_start_and_on_sighup(tmp_path: Path, watchtower_factory,
                                                                  key: str) -> None:
    import shutil
    import signal
    import subprocess
    import sys
    import time

    from tests.conftest import REPO, write_config

    table = tmp_path / "table.yaml"
    shutil.copy(REPO / "exporter" / "classify" / ("isps.yaml" if key == "isp_file" else "replies.yaml"), table)
    cfg = write_config(tmp_path, classify={key: str(table)})
    said = f"{table}: not UTF-8 (byte 0xff at offset 0); save the file as UTF-8"
    wt = watchtower_factory(cfg).start()
    table.write_bytes(b"\xff" + table.read_bytes())
    wt.proc.send_signal(signal.SIGHUP)
    deadline = time.monotonic() + 10
    while "not reloaded" not in wt.log.read_text() and time.monotonic() < deadline:
        time.sleep(0.05)
    (line,) = [x for x in wt.log.read_text().splitlines() if "not reloaded" in x]
    assert f"not reloaded ({said}" in line, line  # the table's own words, not `ValueError: ...`
    assert "UnicodeDecodeError" not in line and "ValueError" not in line
    assert wt.stop() == 0
    start = subprocess.run([sys.executable, "-m", "exporter", "run", "--config", str(cfg)], cwd=REPO,
                           capture_output=True, text=True, timeout=30)
    assert start.returncode != 0 and f"classify.{key}: {said}" in start.stderr
    assert "Traceback" not in start.stderr and "codec" not in start.stderr


@pytest.mark.parametrize("kind", ["fifo", "zero", "huge"])
def test_a_table_that_is_no_small_regular_file_is_refused_at_once(tmp_path: Path, kind: str) -> None:
    """A SIGHUP reload read `classify.isp_file` whole, unchecked: /dev/zero grew the daemon to 20 GB, a FIFO hung it
    (no /metrics, SIGTERM ignored). Bounded, and a pipe is not waited for: one line naming the file."""
    import os
    import threading

    from exporter.classify.isp import read_yaml

    path = {"fifo": tmp_path / "isps.fifo", "zero": Path("/dev/zero"), "huge": tmp_path / "isps.yaml"}[kind]
    if kind == "fifo":
        os.mkfifo(path)
    elif kind == "huge":
        path.write_text("# " + "x" * (5 << 20) + "\n")
    outcome: list[BaseException] = []

    def read() -> None:
        try:
            read_yaml(path, "isps.yaml")
        except BaseException as exc:  # noqa: BLE001 - handed to the test's thread
            outcome.append(exc)

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    reader.join(timeout=30)  # a hang guard (a refusal is at once): a pipe waited for blocks for ever
    if reader.is_alive():
        if kind == "fifo":  # a writer lets the blocked open return
            os.close(os.open(path, os.O_WRONLY | os.O_NONBLOCK))
        pytest.fail(f"reading {path} hung: no answer after 30 s")
    cap = "a classification table is at most 4MiB (is this the right file?)"
    want = {"fifo": f"{path}: a pipe with nothing written to it; give a YAML classification table",
            "zero": f"{path}: more than 4MiB; {cap}",
            "huge": f"{path}: {(5 << 20) + 3} bytes; {cap}"}[kind]
    assert [(isinstance(e, ValueError), str(e)) for e in outcome] == [(True, want)], outcome


class _CountingDict(dict):  # type: ignore[type-arg]
    """A table that counts its lookups."""

    lookups = 0

    def get(self, key, default=None):  # type: ignore[no-untyped-def]
        _CountingDict.lookups += 1
        return super().get(key, default)


@pytest.mark.parametrize("call", ["classify_mx", "classify", "classify_reporter"])
def test_a_host_of_many_labels_costs_lookups_of_its_last_253_characters_only(fresh: IspClassifier, call: str) -> None:
    """A crafted dsnMta or reporting MTA of 100,000 labels (`a.a.a...`) cost one lookup, and one copy of the rest of
    the host, per label: quadratic, 3 s for 200,000 characters (review 2026-12-05). No listed name is longer than a
    DNS name (253 characters), so only the suffixes within that many are looked up: at most 127 labels a table."""
    host = "a." * 100_000 + "mx.gmail-smtp-in.l.google.com"
    fresh._domains = _CountingDict(fresh._domains)
    fresh._suffixes = _CountingDict(fresh._suffixes)
    _CountingDict.lookups = 0
    if call == "classify_mx":
        got = fresh.classify_mx(f"{host} (1.2.3.4)")
    elif call == "classify":
        got = fresh.classify("unknown.example", host)
    else:
        got = fresh.classify_reporter(host)
    assert got == "gmail"
    assert _CountingDict.lookups <= 2 * 128


def test_a_recipient_domain_read_from_an_address_in_angle_brackets_is_its_domain(shipped: IspClassifier) -> None:
    """Privacy review 2026-12-07: a recipient logged as `<bob@gmail.com>` has the domain `gmail.com>` when split at
    its `@`; its provider is gmail's, on either path (a listed domain, or one learned from dsnMta)."""
    assert [shipped.classify(d) for d in ("gmail.com>", "GMAIL.com.>", "gmail.com", "gmail.com> ", "gmail.com>\t",
                                           "gmail.com >")] == ["gmail"] * 6  # (the metrics' domain is not stripped)
    assert shipped.known("gmail.com>") == "gmail"
    assert shipped.classify("shop-mail.example>", "mx.shop-mail.example (1.2.3.4)") == shipped.classify(
        "shop-mail.example", "mx.shop-mail.example (1.2.3.4)")


def test_an_operators_table_refuses_a_repeated_key_and_unbounded_merges(tmp_path: Path) -> None:
    """SIGHUP review 2026-12-07: an operator's table was read by plain PyYAML: a second `providers:` dropped the
    first silently (yahoo.com read `other`), and 2,000 copies of a 9,999-key anchor held the event loop 33 s."""
    shipped = (Path(isp_module.__file__).parent / "isps.yaml").read_text(encoding="utf-8")
    lines = shipped.count("\n")
    doubled = tmp_path / "doubled.yaml"
    doubled.write_text(shipped + "providers:\n  gmail:\n    domains: [gmail.com]\n")
    with pytest.raises(ValueError, match=f"duplicate key 'providers' \\(first on line \\d+, again on line {lines + 1}\\)"):
        IspClassifier.load(doubled)
    bomb = tmp_path / "bomb.yaml"
    bomb.write_text(shipped + "a: &a {" + ", ".join(f"k{i}: 1" for i in range(9999)) + "}\nx:\n"
                    + "  - {<<: *a}\n" * 2000)
    with pytest.raises(ValueError, match="merges copy more than 100,000 keys in all"):
        IspClassifier.load(bomb)
