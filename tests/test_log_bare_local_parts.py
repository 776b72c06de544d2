"""A recipient's bare local part quoted elsewhere in a log line is redacted as its address is (hashing on).

A reply quotes the recipient's local part alone (sendmail's `550 5.1.1 <ivan.bare>... User unknown`): the bad-line
warning redacted the rcpt column (`[redacted]@gmail.com`) and kept the name in the reply next to it (privacy review,
reproduced with `watchtower oneshot` and `run`). The store already replaced it (`<<rcpt>>`); the log filter now
redacts, anywhere in a message that holds addresses, each of their local parts (3 characters or more) standing as
a whole token, and a bad line's bare copies of an address the 120-character cut removed.
"""

from __future__ import annotations

import io
import logging
import subprocess
from pathlib import Path

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from exporter import redact as redaction
from exporter.logsetup import setup
from exporter.parser import ErrorLog
from exporter.redact import REDACTED, Clipped, RedactFilter, redact
from tests.test_log_redaction import oneshot_over, parser_lines

SECRETS = ("ivan.bare", "judy.json", "kim.far", "lena.way", "mona.late")


def _write_logs(logs: Path) -> dict[str, str]:
    """Bad lines whose reply quotes the recipient's bare local part; the reasons they are logged with."""
    logs.mkdir()
    (logs / "acct-1.csv").write_text(
        "type,rcpt,dsnDiag,dsnAction,dsnStatus,vmta,timeLogged,timeQueued\n"
        'b,ivan.bare@gmail.com,"smtp;550 5.1.1 <ivan.bare>... User unknown",failed,5.1.1,v,'
        "2024-01-01 00:00:00+0000,2024-01-01 00:00:00+0000,EXTRA\n",
        encoding="utf-8")
    pad = "p" * 200  # the rcpt after the 120-character cut: the address is gone from what is shown
    far = "q" * 6000  # ...and beyond what the filter redacts of a bad line (the cut plus a margin)
    lines = [
        '{"type":"b","rcpt":"judy.json@gmail.com","dsnDiag":"smtp;550 5.1.1 <judy.json>... User unknown",'
        '"dsnStatus":',  # cut short: bad_json
        '{"type":"zz","rcpt":"judy.json@gmail.com","dsnDiag":"smtp;550 5.1.1 <judy.json>... User unknown"}',
        f'{{"type":"zz","dsnDiag":"smtp;550 5.1.1 <kim.far>... User unknown","n":"{pad}","rcpt":"kim.far@gmail.com"}}',
        f'{{"type":"zz","dsnDiag":"smtp;550 5.1.1 <Lena.Way>... User unknown","n":"{far}","rcpt":"lena.way@gmail.com"}}',
        f'{{"type":"zz","dsnDiag":"550 mona.late: no such user","n":"{far}","rcpt":"mona.late%40gmail.com"}}',
    ]
    (logs / "acct-2.json").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return {"acct-1.csv": "long_row", "acct-2.json": "bad_json"}


def _oneshot(tmp_path: Path, hashing: bool, fmt: str = "text") -> subprocess.CompletedProcess[str]:
    logs = tmp_path / "logs"
    _write_logs(logs)
    return oneshot_over(tmp_path, logs / "acct-*", hashing, fmt)


@pytest.mark.parametrize("fmt", ["text", "json"])
def test_oneshot_logs_no_bare_local_part_of_a_recipient(tmp_path: Path, fmt: str) -> None:
    proc = _oneshot(tmp_path, hashing=True, fmt=fmt)
    got = parser_lines(proc, fmt)
    assert len(got) == 6, proc.stderr
    for secret in SECRETS:
        assert secret not in proc.stderr.lower(), secret
    csv_line = next(x for x in got if "acct-1.csv:2: long_row" in x)
    assert "'b,[redacted]@gmail.com,smtp;550 5.1.1 <[redacted]>... User unknown," in csv_line
    json_lines = [x for x in got if "acct-2.json" in x]
    assert [x.split(": ", 2)[1] for x in json_lines] == [
        "bad_json (source acct)", "unknown_type (source acct)", "unknown_type (source acct)",
        "unknown_type (source acct)", "unknown_type (source acct)"]
    assert '"dsnDiag":"smtp;550 5.1.1 <[redacted]>... User unknown"' in json_lines[1]
    assert '"rcpt":"[redacted]@gmail.com"' in json_lines[1]
    assert '<[redacted]>... User unknown",...' in json_lines[2]  # its address cut away, the name still known
    assert '<[redacted]>... User unknown",...' in json_lines[3]  # the address 6000 characters on
    assert '"dsnDiag":"550 [redacted]: no such user",...' in json_lines[4]


def test_oneshot_with_hashing_off_logs_the_lines_as_they_are(tmp_path: Path) -> None:
    proc = _oneshot(tmp_path, hashing=False)
    assert "ivan.bare@gmail.com,smtp;550 5.1.1 <ivan.bare>... User unknown," in proc.stderr
    assert '"rcpt":"judy.json@gmail.com","dsnDiag":"smtp;550 5.1.1 <judy.json>... User unknown"' in proc.stderr
    assert '<kim.far>... User unknown",...' in proc.stderr
    assert "[redacted]" not in proc.stderr


# --- the filter ---------------------------------------------------------------------------------------------------

def _filtered(msg: str, *args: object) -> str:
    record = logging.LogRecord("t", logging.WARNING, __file__, 1, msg, args or None, None)
    RedactFilter().filter(record)
    return record.getMessage()


@pytest.mark.parametrize(("text", "want"), [
    ("b,ivan.bare@gmail.com,smtp;550 5.1.1 <ivan.bare>... User unknown",
     "b,[redacted]@gmail.com,smtp;550 5.1.1 <[redacted]>... User unknown"),
    ("smtp;550 5.1.1 <Ivan.Bare>... User unknown (rcpt ivan.bare@gmail.com)",  # before the address, any case
     "smtp;550 5.1.1 <[redacted]>... User unknown (rcpt [redacted]@gmail.com)"),
    ("rcpt=ivan.bare@gmail.com said 'ivan.bare' and \\\"ivan.bare\\\" and ivan.bare.",
     "[redacted]@gmail.com said '[redacted]' and \\\"[redacted]\\\" and [redacted]."),
    ("to ivan.bare@gmail.com: no user ivan.bare; ivan.bare, ivan.bare...",
     "to [redacted]@gmail.com: no user [redacted]; [redacted], [redacted]..."),
    ("ivan.bare@gmail.com: 550 ivan.bare...User unknown", "[redacted]@gmail.com: 550 [redacted]...User unknown"),
    ("GET /x?rcpt=ivan.bare%40gmail.com&u=ivan.bare", "GET /x?rcpt=[redacted]%40gmail.com&u=[redacted]"),
    ("josé.garcía@gmail.com: <JOSÉ.GARCÍA> unknown", "[redacted]@gmail.com: <[redacted]> unknown"),
    ("d,用户名@例子.中国,「用户名」", "d,[redacted]@例子.中国,「[redacted]」"),
])
def test_the_filter_redacts_bare_local_parts_of_the_message_addresses(text: str, want: str) -> None:
    assert redaction.redact_log_text(text) == want
    assert _filtered("%s", text) == want
    assert _filtered(text) == want
    assert redaction.redact_log_text(want) == want


@pytest.mark.parametrize(("text", "want"), [
    # a longer word holding the local part is no copy of it
    ("ivan@gmail.com: ivanhoe, xivan, ivan-b, ivan_b, ivan.b, b.ivan, ivan+x",
     "[redacted]@gmail.com: ivanhoe, xivan, ivan-b, ivan_b, ivan.b, b.ivan, ivan+x"),
    # fewer than 3 characters: the store's rule (`<ab>` could be anything)
    ("ab@gmail.com: <ab> User unknown", "[redacted]@gmail.com: <ab> User unknown"),
    # the domain stays, even when it is also a local part
    ("gmail.com@x.org and a@gmail.com", "[redacted]@x.org and [redacted]@gmail.com"),
])
def test_the_filter_leaves_other_words_and_the_domains(text: str, want: str) -> None:
    assert redaction.redact_log_text(text) == want
    assert _filtered(text) == want


@pytest.mark.parametrize("text", ["smtp;550 5.1.1 <ivan.bare>... User unknown", "no address here ivan", ""])
def test_a_message_without_addresses_is_left_alone(text: str) -> None:
    assert redaction.redact_log_text(text) == text
    assert _filtered(text) == text


def test_redact_itself_is_unchanged() -> None:
    """`redact` (the store's reply text, the hub, /healthz) keeps its behaviour: the bare copies are the logs'."""
    assert redact("ivan.bare@gmail.com <ivan.bare>") == "[redacted]@gmail.com <ivan.bare>"


def test_a_clipped_bad_line_loses_the_bare_local_part_of_an_address_past_the_cut() -> None:
    for gap in (0, 100, 1000, 5000, 100_000):
        sample = "b,smtp;550 5.1.1 <ivan.bare>... User unknown," + "x" * gap + ",ivan.bare@gmail.com,end"
        shown = repr(Clipped(sample, 120, ",").redacted())
        assert "ivan" not in shown, gap
        assert shown.startswith("'b,smtp;550 5.1.1 <[redacted]>... User unknown,"), gap
    sample = "b,<ivan.bare> unknown," + "x" * 10_000 + ",ivan.bare%2540gmail.com,end"
    assert "ivan" not in repr(Clipped(sample, 120, ",").redacted())


def test_the_parser_warning_through_the_handler(tmp_path: Path) -> None:
    stream = io.StringIO()
    handler = setup("info", "text", stream=stream, redact_addresses=True)
    try:
        ErrorLog().report("acct", "/l/acct.json", 3, "bad_json",
                          '{"type":"b","dsnDiag":"smtp;550 5.1.1 <judy.json>... User unknown","n":"' + "z" * 300
                          + '","rcpt":"judy.json@gmail.com"}')
        logging.getLogger("other").warning("rcpt %s: %s", "judy.json@gmail.com", "550 <judy.json> unknown")
    finally:
        logging.getLogger().removeHandler(handler)
    out = stream.getvalue()
    assert "judy" not in out
    assert "<[redacted]>... User unknown" in out and "550 <[redacted]> unknown" in out


def test_hashing_off_leaves_the_bare_local_part() -> None:
    stream = io.StringIO()
    handler = setup("info", "text", stream=stream, redact_addresses=False)
    try:
        ErrorLog().report("acct", "/l/acct.csv", 2, "long_row", "b,ivan.bare@gmail.com,<ivan.bare>... User unknown")
    finally:
        logging.getLogger().removeHandler(handler)
    assert stream.getvalue().rstrip().endswith("'b,ivan.bare@gmail.com,<ivan.bare>... User unknown'")


@pytest.mark.parametrize("text", [
    "a@x " * 500_000,  # two million characters, half a million addresses
    "abc1@x " + "abc1 " * 400_000,  # one address, its bare copy 400,000 times
    "".join(f"u{i:06d}@x " for i in range(150_000)) + "u000001 " * 100_000,  # many distinct local parts
    "abc@x " + "abcd" * 500_000,  # a run holding the local part many times
])
def test_a_long_message_is_redacted_whole(text: str) -> None:
    """Messages of millions of characters (the cost is linear by construction: its patterns are linted in
    tests/test_reply_regex_bounds.py; no timing is asserted here)."""
    out = redaction.redact_log_text(text)
    assert "abc1 " not in out and "u000001 " not in out
    long = "b,<abc1> x," + text + ",abc1@x"
    shown = repr(Clipped(long, 120, ",").redacted())
    assert "abc1" not in shown


# --- properties ---------------------------------------------------------------------------------------------------

_ATOM = st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789_-+", min_size=1, max_size=8)
_LOCAL = st.lists(_ATOM, min_size=1, max_size=3).map(".".join).filter(lambda x: len(x) >= 3)
_AROUND = st.text(alphabet=" ,;:<>()[]\"'abcxyz.=/\\", max_size=30)
_BRACKETS = st.sampled_from([("<", ">"), ("<", ">..."), ("'", "'"), ('"', '"'), (" ", " "), ("(", ")"), ("=", "&"),
                             ("\\\"", "\\\""), ("「", "」"), (" ", ". "), (" ", "...")])


@settings(max_examples=300, deadline=None)
@given(local=_LOCAL, before=_AROUND, after=_AROUND, brackets=_BRACKETS, upper=st.booleans(), first=st.booleans())
def test_property_a_bare_copy_of_a_local_part_never_stays(local: str, before: str, after: str,
                                                          brackets: tuple[str, str], upper: bool, first: bool) -> None:
    bare = brackets[0] + (local.upper() if upper else local) + brackets[1]
    address = f" {local}@gmail.com "
    text = before + (bare + after + address if first else address + after + bare) + " end"
    assume(local not in before + after + " gmail.com end" and local not in REDACTED)  # (`red` is in `[redacted]`)
    out = redaction.redact_log_text(text)
    assert local not in out.lower()
    assert redaction.redact_log_text(out) == out
    for limit in (0, 10, 40, 120):
        shown = repr(Clipped(text + "," + "~" * 5000 + "," + address, limit, ",").redacted())
        assert local not in shown.lower()


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=200))
def test_property_any_text_redacts_without_error_and_idempotently(text: str) -> None:
    out = redaction.redact_log_text(text)
    assert redaction.redact_log_text(out) == out
    if not redaction.might_hold_address(text):
        assert out == text


def test_a_bare_copy_cut_by_the_clip_is_looked_for_whole() -> None:
    """The cut falls inside the bare copy (no field boundary before it): its head alone is no word before an `@`."""
    sample = "x" * 100 + " <ivan.bareback.person> unknown" + "y" * 5000 + " ivan.bareback.person@gmail.com"
    shown = repr(Clipped(sample, 120, ",").redacted())
    assert "ivan" not in shown and shown.endswith(" <[redacted]> unknow...'")


def test_what_a_line_must_keep_beside_an_address() -> None:
    """Regression review 2026-12-06: a queue lost its domain (`[redacted]/vmta1`) whenever the line held a VERP sender
    whose recipient domain was that word: a piece after a `=` preceded by a `+` reads as a domain, not a name."""
    out = redaction.redact_log_text("queue gmail.com/vmta1: sender bounces+alice=gmail.com@news.example")
    assert "gmail.com/vmta1" in out and "alice" not in out, out


def test_a_bad_lines_warning_keeps_the_file_it_names(caplog: pytest.LogCaptureFixture) -> None:
    """The bad-line warning redacts its sample before the line is formatted (`Clipped.redacted`), so a directory
    named like a sender's local part stays (`/var/log/pmta/...` beside `pmta@news.example`)."""
    stream = io.StringIO()
    handler = setup("info", "text", stream=stream, redact_addresses=True)
    try:
        ErrorLog().report("acct", "/var/log/pmta/acct-1.csv", 3, "long_row", "d,pmta@news.example,x")
    finally:
        logging.getLogger().removeHandler(handler)
    out = stream.getvalue()
    assert "/var/log/pmta/acct-1.csv:3: long_row" in out and "pmta@" not in out, out


@pytest.mark.parametrize(("text", "name"), [
    # regression review 2026-12-06: with `/` no longer a separator a name in a mailbox path was shown
    ("smtp;552 5.2.2 cannot update mailbox /var/mail/ivan.bare for user x,ivan.bare@gmail.com", "ivan.bare"),
    ("smtp;550 5.1.1 <users/kim.far>: Recipient address rejected,kim.far@gmail.com", "kim.far"),
    ("550 5.2.2 /home/lena.way/Maildir: over quota rcpt lena.way@gmail.com", "lena.way"),
    # ...and a name whose last label reads like a top-level domain, after a `=` that is no VERP's
    ("smtp;550 5.1.1 <wei.li>... User unknown,rcpt=wei.li@gmail.com", "wei.li"),
    ("smtp;550 5.1.1 <anna.de>... User unknown,x=anna.de@gmail.com", "anna.de"),
])
def test_a_name_in_a_path_or_after_a_plain_equals_sign_is_redacted(text: str, name: str) -> None:
    out = redaction.redact_log_text(text)
    assert name not in out.lower(), out


class _BadRepr:
    def __repr__(self) -> str:
        raise RuntimeError("no repr")


def test_a_record_that_cannot_be_formatted_is_one_line_not_an_exception() -> None:
    """A %r of an object whose repr raises, or a missing argument, raised from the filter into the code that logged."""
    stream = io.StringIO()
    handler = setup("info", "text", stream=stream, redact_addresses=True)
    try:
        logging.getLogger("watchtower.test").warning("value %r", _BadRepr())
        logging.getLogger("watchtower.test").warning("two %s %s", "only-one")
    finally:
        logging.getLogger().removeHandler(handler)
    lines = stream.getvalue().splitlines()
    assert len(lines) == 2 and all("could not be formatted" in x for x in lines), lines
    assert "Traceback" not in stream.getvalue()
