"""Regexes over remote text take time linear in its length (review 2026-12-05: reply normalisers, ReDoS).

Remote MXes, and anyone who mails a DSN, write the replies, addresses and header fields these modules read (a log
line may hold 16 MiB). Python's `re` backtracks: a pattern that can match in many ways from many start positions
held the GIL for seconds per crafted record (`normalize_reply`: 4 s for 40,000 characters; `normalise`: ~1 s for
1,600), and with it /metrics and the API. The project has no timing assertions; instead:

- every compiled pattern of these modules is declared below with how it is used, and passes a lint for the
  super-linear shapes the review found (a human still reads each new one: the lint knows those shapes only);
- reply-table rules are RE2 (linear whatever the pattern);
- the rewritten normalisers give the former patterns' results on every short text (hypothesis);
- on 200,000 adversarial characters every entry point answers what it answers for a short text of that shape.
"""

from __future__ import annotations

import ast
import importlib
import inspect
import re
from collections.abc import Iterator
from re import _compiler as sre_compile
from re import _constants as sre_c
from re import _parser as sre_parse
from typing import Any

import pytest
import re2
from hypothesis import given, settings
from hypothesis import strategies as st

from correlator import replies as correlator_replies
from correlator.render import safe
from correlator.replies import MAX_TEXT, NORMALISED_INPUT, normalise
from exporter.classify import IspClassifier, ReplyClassifier
from exporter.classify.replies import REPLY_CLASSES, is_success, normalize_reply, parse_codes
from exporter.redact import redact
from exporter.textrepair import repair_text

ANCHORED, SCAN = "anchored", "scan"
"""How a pattern is used: only by .match/.fullmatch (one start position), or by search/sub/finditer (every one)."""

PATTERNS: dict[str, dict[str, str]] = {
    "exporter.classify.replies": {"_GMAIL_ID": ANCHORED, "_LOCAL_PART": SCAN, "_REPLY": ANCHORED,
                                  "_STATUS": ANCHORED, "_CODE_SPEC": ANCHORED, "_ENHANCED_SPEC": ANCHORED},
    "exporter.classify.isp": {"_HOST": ANCHORED, "_MTA_TYPE": SCAN},
    "correlator.replies": {"_PREFIX": SCAN, "_EMAIL": SCAN, "_IPV4": SCAN, "_IPV6": SCAN, "_GMAIL_RUN": SCAN,
                           "_TOKEN_RUN": SCAN, "_LETTER": SCAN, "_DIGIT": SCAN, "_LONG_NUMBER": SCAN,
                           "_SPACES": SCAN},
    "correlator.render": {"_CONTROLS": SCAN},
    "correlator.api": {"_DURATION": ANCHORED, "_SPACE": SCAN},
    "exporter.redact": {"_LAST_DELIMITER": ANCHORED, "_LAST_URL_DELIMITER": ANCHORED, "_AT": SCAN,
                        "_ENCODED_AT": SCAN, "_HOST": ANCHORED, "_PRECISION": SCAN, "_TOKEN": SCAN,
                        "_PIECE": SCAN, "_VERP_EQUALS": SCAN, "_DOMAIN_RUN": ANCHORED, "_TOP_LEVEL": ANCHORED},
    "exporter.textrepair": {"UNSAFE_ESCAPE": SCAN, "_UNSAFE": SCAN, "_SURROGATE": SCAN},
    "exporter.parser": {"_LONE_CR": SCAN, "_NUL_RUN": SCAN, "_LONE_CR_TEXT": SCAN, "_HEADER_LIKE": ANCHORED,
                        "_NEXT_HEADER_LIKE": SCAN, "_NOT_BLANK": SCAN, "_QUOTED_FIELDS": ANCHORED},
    "exporter.jsonrecords": {"_NOT_TEXT": SCAN},
    "exporter.warmup": {"_HEADER_LINE": SCAN},
    "exporter.pmta_api": {"_NOT_IN_XML": SCAN},
    "exporter.timeparse": {"_RFC5322": ANCHORED},
}
"""Every module-level Python pattern of the modules that read record text, replies or request values. Not here:
the config, table and certificate readers (text the operator writes)."""

_RE_CALLS = {"compile", "search", "match", "fullmatch", "sub", "subn", "findall", "finditer", "split"}


def _module_patterns(module: str) -> dict[str, re.Pattern[Any]]:
    return {name: value for name, value in vars(importlib.import_module(module)).items()
            if isinstance(value, re.Pattern)}


def _all_patterns() -> Iterator[tuple[str, str, re.Pattern[Any]]]:
    for module in PATTERNS:
        for name, rx in _module_patterns(module).items():
            yield module, name, rx


# --- the lint -----------------------------------------------------------------------------------------------------

_TEXT_SAMPLE = [chr(i) for i in range(0x3100)] + ["\ud800", "\udfff", "\U0001d7d8", "\U00020000"]
_BYTES_SAMPLE = [bytes([i]) for i in range(256)]
_REPEATS = {sre_c.MAX_REPEAT, sre_c.MIN_REPEAT, sre_c.POSSESSIVE_REPEAT}
_SINGLE = {sre_c.LITERAL, sre_c.NOT_LITERAL, sre_c.IN, sre_c.ANY}
_ZERO_WIDTH = {sre_c.AT, sre_c.ASSERT, sre_c.ASSERT_NOT}


def _unbounded(item: tuple[Any, Any]) -> bool:
    return item[0] in _REPEATS and item[1][1] == sre_c.MAXREPEAT


def _run_of(item: tuple[Any, Any]) -> tuple[Any, Any] | None:
    """The one-character item an unbounded repeat repeats (`[a-z]*`), else None."""
    if _unbounded(item) and len(item[1][2]) == 1 and item[1][2][0][0] in _SINGLE:
        return item[1][2][0]  # type: ignore[no-any-return]
    return None


def _children(item: tuple[Any, Any]) -> list[Any]:
    """The sub-sequences of one parsed item (a group's, a repeat's, an assertion's, each branch)."""
    op, av = item
    if op in _REPEATS:
        return [av[2]]
    if op is sre_c.SUBPATTERN:
        return [av[3]]
    if op in (sre_c.ASSERT, sre_c.ASSERT_NOT):
        return [av[1]]
    if op is sre_c.BRANCH:
        return list(av[1])
    if op is sre_c.ATOMIC_GROUP:
        return [av]
    return []


def _has_unbounded(seq: Any) -> bool:
    return any(_unbounded(item) or any(_has_unbounded(c) for c in _children(item)) for item in seq)


def _backtracks(seq: Any) -> bool:
    """Whether `seq` holds an unbounded repeat that gives characters back (not possessive): one that can be retried
    with fewer. Possessive repeats never are, so possessive ones nested in a possessive repeat match each place once."""
    return any((_unbounded(item) and item[0] is not sre_c.POSSESSIVE_REPEAT)
               or any(_backtracks(c) for c in _children(item)) for item in seq)


class _Lint:
    """The super-linear shapes of the review, found in one compiled pattern's parse tree."""

    def __init__(self, rx: re.Pattern[Any]):
        self.tree = sre_parse.parse(rx.pattern, rx.flags)
        self.sample = _BYTES_SAMPLE if isinstance(rx.pattern, bytes) else _TEXT_SAMPLE
        self.multiline = bool(rx.flags & re.MULTILINE)
        word = re.compile(rb"\w" if isinstance(rx.pattern, bytes) else r"\w")
        self.word = frozenset(i for i, c in enumerate(self.sample) if word.fullmatch(c))
        self._chars: dict[str, frozenset[int]] = {}

    def chars(self, item: tuple[Any, Any]) -> frozenset[int]:
        """The sample characters a one-character item matches."""
        key = repr(item)
        found = self._chars.get(key)
        if found is None:
            rx = sre_compile.compile(sre_parse.SubPattern(self.tree.state, [item]), self.tree.state.flags)
            found = self._chars[key] = frozenset(i for i, c in enumerate(self.sample) if rx.fullmatch(c))
        return found

    def problems(self, usage: str) -> list[str]:
        found: list[str] = []
        self._walk(self.tree, found, top=True)
        if usage == SCAN:
            found += self._scan(list(self.tree))
        return found

    def _walk(self, seq: Any, found: list[str], top: bool) -> None:
        """Nested unbounded repeats (`(a+)+`; not when possessive all through, `(?:a*+b)*+`: no split is tried
        again), and two runs that can take the same characters with only such characters between them and something
        after them that can fail (`[a-z0-9]*[a-z][a-z0-9]*\\.`): each split of a long run is tried."""
        items = list(seq)
        for item in items:
            if _unbounded(item) and _has_unbounded(item[1][2]) and (
                    item[0] is not sre_c.POSSESSIVE_REPEAT or _backtracks(item[1][2])):
                found.append(f"nested unbounded repeats: {item}")
            for child in _children(item):
                self._walk(child, found, top=False)
        runs = [i for i, item in enumerate(items) if _run_of(item) is not None]
        for i, j in zip(runs, runs[1:], strict=False):
            between = items[i + 1:j]
            if not all(op in _SINGLE or op in _ZERO_WIDTH for op, _av in between):
                continue
            shared = self.chars(_run_of(items[i])) & self.chars(_run_of(items[j]))  # type: ignore[arg-type]
            for item in between:
                if item[0] in _SINGLE:
                    shared &= self.chars(item)
            if shared and not (top and j == len(items) - 1):
                found.append(f"overlapping adjacent runs: {items[i]} ... {items[j]}")

    def _scan(self, items: list[Any]) -> list[str]:
        """A search tries every start position: a run (or a lookahead's run) read from each must be able to start
        only where such a run starts (a lookbehind excluding its characters, or `\\b` before a run of word
        characters only), or end the pattern (nothing after it to fail)."""
        guards: list[frozenset[int]] = []
        boundary = False
        scans: list[frozenset[int]] = []
        while items:
            op, av = item = items.pop(0)
            if op is sre_c.AT:
                if av is sre_c.AT_BEGINNING_STRING or (av is sre_c.AT_BEGINNING and not self.multiline):
                    return []
                boundary |= av is sre_c.AT_BOUNDARY
            elif op is sre_c.ASSERT_NOT and av[0] < 0 and len(av[1]) == 1 and av[1][0][0] in _SINGLE:
                guards.append(self.chars(av[1][0]))
            elif op in (sre_c.ASSERT, sre_c.ASSERT_NOT):
                scans += [self.chars(r) for r in map(_run_of, _flat(av[1])) if r is not None]
            elif op is sre_c.SUBPATTERN:
                items = list(av[3]) + items
            elif op is sre_c.ATOMIC_GROUP:
                items = list(av) + items
            elif op is sre_c.BRANCH:
                return [p for branch in av[1] for p in self._scan(list(branch) + items)]
            else:
                run = _run_of(item)
                if run is not None and (items or scans):
                    scans.append(self.chars(run))
                break
        return [f"a run read from every start position: {sorted(chr(c) if c < 0x110000 else c for c in s)[:12]}"
                for s in scans
                if not any(s <= g for g in guards) and not (boundary and (s <= self.word or not s & self.word))]


def _flat(seq: Any) -> Iterator[tuple[Any, Any]]:
    for item in seq:
        yield item
        for child in _children(item):
            yield from _flat(child)


# --- structure ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("module", sorted(PATTERNS))
def test_every_pattern_over_remote_text_is_declared(module: str) -> None:
    """A new pattern in these modules is linted only once declared here with its use: that is the review step."""
    assert sorted(_module_patterns(module)) == sorted(PATTERNS[module])


@pytest.mark.parametrize(("module", "name", "rx"), list(_all_patterns()),
                         ids=[f"{m}.{n}" for m, n, _ in _all_patterns()])
def test_no_pattern_over_remote_text_has_a_super_linear_shape(module: str, name: str, rx: re.Pattern[Any]) -> None:
    usage = PATTERNS[module].get(name, SCAN)  # undeclared: linted as the worst use, and the test above fails
    assert _Lint(rx).problems(usage) == [], f"{module}.{name} = {rx.pattern!r}"


@pytest.mark.parametrize("module", sorted(PATTERNS))
def test_patterns_are_compiled_once_at_module_level(module: str) -> None:
    """`re.sub(pattern, ...)` inside a function would escape the inventory (and the lint)."""
    tree = ast.parse(inspect.getsource(importlib.import_module(module)))
    inline = [f"line {node.lineno}" for fn in ast.walk(tree) if isinstance(fn, ast.FunctionDef | ast.AsyncFunctionDef)
              for node in ast.walk(fn)
              if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
              and isinstance(node.func.value, ast.Name) and node.func.value.id == "re" and node.func.attr in _RE_CALLS]
    assert inline == []


def test_reply_rules_run_in_re2() -> None:
    """Operators can load their own rule table: its patterns run in RE2, linear whatever they are."""
    regexp = type(re2.compile("x"))
    assert all(isinstance(r.pattern, regexp) for r in ReplyClassifier.load().rules if r.pattern is not None)


@pytest.mark.parametrize(("pattern", "usage"), [
    (r"[^\s<>()\[\]\"',;:]+@", SCAN),  # the former _LOCAL_PART
    (r"[A-Za-z0-9-]*[A-Za-z][A-Za-z0-9-]*\.\d+", ANCHORED),  # the former classifier _GMAIL_ID
    (r"[^\s<>()\[\]\"',;:]+@[^\s<>()\[\]\"',;:]+", SCAN),  # the former _EMAIL
    (r"\b[A-Za-z0-9-]*[A-Za-z][A-Za-z0-9-]*\.\d+(?= - gsmtp)", SCAN),  # the former correlator _GMAIL_ID
    (r"\b(?=[A-Za-z0-9_-]*\d)(?=[A-Za-z0-9_-]*[A-Za-z])[A-Za-z0-9_-]{12,}\b", SCAN),  # the former _TOKEN_ID
    (r"(a+)+$", ANCHORED),
    (r"(a++)+$", ANCHORED),  # possessive inside only: the outer repeat tries every split again
    (r"(?:a+b?)*+$", ANCHORED),  # possessive outside only
    (r"\s+$", SCAN),
])
def test_the_lint_finds_the_shapes_of_the_review(pattern: str, usage: str) -> None:
    assert _Lint(re.compile(pattern)).problems(usage)


# --- the rewrites give the former results -------------------------------------------------------------------------

_OLD_ADDRESS_END = r"\s<>()\[\]\"',;:"
_OLD_GMAIL_ID = re.compile(r"[A-Za-z0-9-]*[A-Za-z][A-Za-z0-9-]*\.\d+")
_OLD_LOCAL_PART = re.compile(rf"[^{_OLD_ADDRESS_END}]+@")
_OLD_EMAIL = re.compile(rf"[^{_OLD_ADDRESS_END}]+@[^{_OLD_ADDRESS_END}]+")
_OLD_GMAIL_ID_BEFORE_GSMTP = re.compile(r"\b[A-Za-z0-9-]*[A-Za-z][A-Za-z0-9-]*\.\d+(?= - gsmtp)")
_OLD_TOKEN_ID = re.compile(r"\b(?=[A-Za-z0-9_-]*\d)(?=[A-Za-z0-9_-]*[A-Za-z])[A-Za-z0-9_-]{12,}\b")


def _old_normalize_reply(text: str) -> str:
    if text.endswith(" - gsmtp"):
        head, _, last = text[:-8].rpartition(" ")
        if _OLD_GMAIL_ID.fullmatch(last):
            text = head + " - gsmtp"
    return _OLD_LOCAL_PART.sub("*@", text) if "@" in text else text


def _old_normalise(diag: str) -> str:
    cr = correlator_replies
    text = cr._PREFIX.sub("", diag[:NORMALISED_INPUT])
    text = _OLD_EMAIL.sub("<addr>", text)
    text = cr._IPV4.sub("<ip>", text)
    text = cr._IPV6.sub("<ip>", text)
    text = _OLD_GMAIL_ID_BEFORE_GSMTP.sub("<id>", text)
    text = _OLD_TOKEN_ID.sub("<id>", text)
    text = cr._LONG_NUMBER.sub("<n>", text)
    text = cr._SPACES.sub(" ", text).strip()
    return text[:MAX_TEXT] + ("…" if len(text) > MAX_TEXT or len(diag) > NORMALISED_INPUT else "")


# Pieces that make each pattern's edge cases likely: runs of id characters with and without letters, digits (ASCII
# and Arabic-Indic, which `\d` reads too), word characters the ASCII classes miss (é, _), delimiters, whitespace
# that is Unicode only, a lone surrogate, and the Gmail suffix.
_PIECES = ["a", "Zq", "7", "٣", "-", "--", "_", ".", ".12", "@", " ", "<", ">", ";", ":", '"', "'", "é", "\xa0",
           "\x1c", "\ud800", " - gsmtp", "gsmtp", "smtp;", "x1si2", "abcdef123456", "1-2-3-4-5-6-7", "a-b-c-d-e-f-g"]
_TEXTS = st.lists(st.sampled_from(_PIECES), max_size=20).map("".join)


@settings(max_examples=3000, deadline=None)
@given(_TEXTS)
def test_normalize_reply_is_the_former_normalisation(text: str) -> None:
    assert normalize_reply(text) == _old_normalize_reply(text)
    assert normalize_reply(text + " - gsmtp") == _old_normalize_reply(text + " - gsmtp")


@settings(max_examples=3000, deadline=None)
@given(_TEXTS)
def test_normalise_is_the_former_normalisation(text: str) -> None:
    cr = correlator_replies
    assert cr._EMAIL.sub("<addr>", text) == _OLD_EMAIL.sub("<addr>", text)
    assert cr._GMAIL_RUN.sub(cr._gmail_id, text) == _OLD_GMAIL_ID_BEFORE_GSMTP.sub("<id>", text)
    assert cr._TOKEN_RUN.sub(cr._token_id, text) == _OLD_TOKEN_ID.sub("<id>", text)
    assert normalise(text) == _old_normalise(text)


# --- 200,000 adversarial characters -------------------------------------------------------------------------------

N = 200_000
_UNITS = ["a", "-", ".", "1", "@", "-a", "-1", "a.", "1.", "a1-_.@", "%25", " ", "\\", '"@']
_FRAMES = [("smtp;451 ", " @x"), ("smtp;451 ", "@x"), ("smtp;421 4.7.0 b", " - gsmtp"),
           ("smtp;452 4.2.2 ", ".256 - gsmtp"), ("", "")]
_CASES = [(unit, head, tail) for unit in _UNITS for head, tail in _FRAMES]
_IDS = [f"{unit!r}-{head!r}-{tail!r}" for unit, head, tail in _CASES]


def _long(unit: str, head: str, tail: str) -> str:
    return head + unit * (N // len(unit)) + tail


def _short(unit: str, head: str, tail: str) -> str:
    return head + unit * (48 // len(unit)) + tail


@pytest.fixture(scope="module")
def rc() -> ReplyClassifier:
    return ReplyClassifier.load()


@pytest.mark.parametrize(("unit", "head", "tail"), _CASES, ids=_IDS)
def test_a_long_crafted_reply_is_classified_as_its_short_form(rc: ReplyClassifier, unit: str, head: str,
                                                               tail: str) -> None:
    """What the ingest path (classify_many), the timeline (classify) and `explain` answer: no repeat count
    changes a class."""
    long, short = _long(unit, head, tail), _short(unit, head, tail)
    for isp in ("gmail", "other"):
        want = rc.classify(isp, "", short)
        assert want in REPLY_CLASSES
        assert rc.classify(isp, "", long) == want
        assert rc.explain(isp, "", long)[0] == rc.explain(isp, "", normalize_reply(short))[0]
    assert ReplyClassifier.load().classify_many([("gmail", "", long, ""), ("other", "4.0.0", long, "")]) == [
        rc.classify("gmail", "", short), rc.classify("other", "4.0.0", short)]
    assert parse_codes("", long) == parse_codes("", short)
    assert is_success("2.0.0", long) == is_success("2.0.0", short)


@pytest.mark.parametrize(("diag", "want"), [
    ("smtp;451 " + "a" * N + " @x", "smtp;451 " + "a" * N + " @x"),  # the `@` starts its run: no local part
    ("smtp;451 " + "a" * N + "@x", "smtp;451 *@x"),
    ("x " + "@" * N, "x *@"),
    ("smtp;451 " + "a" * N + " - gsmtp", "smtp;451 " + "a" * N + " - gsmtp"),  # no dot: not an id
    ("smtp;452 " + "a" * N + ".256 - gsmtp", "smtp;452 - gsmtp"),  # id-shaped, however long
    ("smtp;452 " + "-" * N + ".256 - gsmtp", "smtp;452 " + "-" * N + ".256 - gsmtp"),  # no letter: not an id
    ("smtp;452 " + "a" * N + "-@" + "b" * N + " - gsmtp", "smtp;452 *@" + "b" * N + " - gsmtp"),
])
def test_normalize_reply_of_a_long_crafted_reply(diag: str, want: str) -> None:
    assert normalize_reply(diag) == want


@pytest.mark.parametrize(("diag", "want"), [
    ("smtp;421 4.7.0 b" + "-a" * N + " - gsmtp", ("421 4.7.0 b" + "-a" * 800)[:MAX_TEXT] + "…"),
    ("smtp;421 4.7.0 b" + "-a" * 700 + ".5 - gsmtp", "421 4.7.0 <id> - gsmtp"),
    ("smtp;421 4.7.0 b" + "-a" * 700 + " - gsmtp", ("421 4.7.0 b" + "-a" * 700)[:MAX_TEXT] + "…"),
    ("smtp;421 " + "-1" * 700 + "x", "421 -<id>"),
    ("smtp;421 " + "a" * 1500 + "@x", "421 <addr>"),
    ("smtp;421 " + "a" * N + "@x", ("421 " + "a" * MAX_TEXT)[:MAX_TEXT] + "…"),  # the `@` is past the cut
    ("smtp;421 " + "1." * N, ("421 " + "1." * MAX_TEXT)[:MAX_TEXT] + "…"),  # no IPv4 inside a longer dotted run
])
def test_normalise_of_a_long_crafted_reply(diag: str, want: str) -> None:
    assert normalise(diag) == want


@pytest.mark.parametrize(("unit", "head", "tail"), _CASES, ids=_IDS)
def test_normalise_of_any_long_crafted_reply_is_its_first_characters(unit: str, head: str, tail: str) -> None:
    long = _long(unit, head, tail)
    assert normalise(long) == normalise(long[:NORMALISED_INPUT] + "x")


@pytest.mark.parametrize("unit", _UNITS)
def test_the_other_readers_of_remote_text_on_long_crafted_text(unit: str) -> None:
    """Their patterns are linear already (anchored, or each start reads a bounded part): kept so."""
    text = unit * (N // len(unit))
    if "." not in unit:  # a host of 100,000 labels: IspClassifier._walk copies the rest of it per label (not a regex)
        isp = IspClassifier.load()
        assert isp.classify(text, "dns; " + text) == "other"
        assert isp.classify_reporter("dns; " + text + " (1.2.3.4)") == "other"
    assert safe(text) == text
    assert repair_text(text) == (text, False)
    assert redact(text + "@x").endswith("@x")


def test_redact_of_a_long_local_part() -> None:
    assert redact("a" * N + "@x") == "[redacted]@x"
    assert redact("to " + "b" * N + "%40gmail.com") == "to [redacted]%40gmail.com"

