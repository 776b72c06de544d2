"""ReplyClassifier.classify_many (the aggregator's batch entry point) answers exactly as classify does.

The batch path finds rule literals with polars' Aho-Corasick and visits only the rules they allow;
these tests hold it to the one-at-a-time path on the reference catalogue, on generated replies that
mix rule literals, overlapping literals, case and non-ASCII text, and through a bounded cache.
"""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from exporter.classify import replies as replies_module
from exporter.classify.isp import ISP_NAMES
from exporter.classify.replies import ReplyClassifier

_SHIPPED = ReplyClassifier.load()
LITERALS = sorted(_SHIPPED._literals)
CODES = ["", "421 ", "450-", "451 ", "452 ", "550 ", "552 ", "554 ", "smtp;421-", "smtp;550 "]
ENHANCED = ["", "4.7.0 ", "4.7.28 ", "4.3.0 ", "4.2.2 ", "5.1.1 ", "5.7.1 ", "5.2.2 ", "#5.1.1 "]
STATUSES = ["", "4.7.28 (delivery not authorized)", "5.1.1 (bad destination mailbox address)", "4.4.1", "2.0.0"]
CATS = ["", "bad-mailbox", "spam-related", "policy-related", "quota-issues", "success", "other"]


def _fresh() -> ReplyClassifier:
    """A classifier with empty caches (the shipped rules, without parsing the YAML again)."""
    return ReplyClassifier(list(_SHIPPED.rules), _SHIPPED._override, _SHIPPED._bc_fallback, _SHIPPED._enh_fallback)


def _word() -> st.SearchStrategy[str]:
    literal = st.sampled_from(LITERALS)
    return (literal | literal.map(str.upper) | literal.map(str.title)
            | st.text(alphabet="abcdeiklmnorstuxyzKİẞ.- @:[]()0123456789", max_size=10) | st.text(max_size=6))


@settings(max_examples=200, deadline=None)
@given(items=st.lists(st.tuples(st.sampled_from(ISP_NAMES), st.sampled_from(STATUSES),
                                st.tuples(st.sampled_from(CODES), st.sampled_from(ENHANCED),
                                          st.lists(_word(), max_size=10)),
                                st.sampled_from(CATS)), min_size=1, max_size=24))
def test_classify_many_equals_classify(items: list[tuple[str, str, tuple[str, str, list[str]], str]]) -> None:
    batch = [(isp, status, code + enh + " ".join(words), cat) for isp, status, (code, enh, words), cat in items]
    single = _fresh()
    assert _fresh().classify_many(batch) == [single.classify(*item) for item in batch]


def test_classify_many_on_the_reference_catalogue() -> None:
    from tests.test_classify_replies import ALL_CASES

    batch = [tuple(case[:4]) for case in ALL_CASES]
    assert _fresh().classify_many(batch) == [case[4] for case in ALL_CASES]  # type: ignore[misc]
    assert _fresh().classify_many(batch * 3)[: len(batch)] == [case[4] for case in ALL_CASES]  # type: ignore[misc]


def test_every_rule_literal_found_even_when_literals_overlap() -> None:
    rc = _fresh()
    texts = [" ".join(LITERALS), "".join(LITERALS), "xx" + LITERALS[0] + LITERALS[-1], "", "no literal here ÿ"]
    texts += [k[1:] + k for k in LITERALS]  # overlapping partial repeats
    want = [frozenset(k for k in LITERALS if k in t) for t in texts]
    assert rc._present(texts) == want  # polars' Aho-Corasick (batch of 8 or more)
    assert rc._present(texts[:3]) == want[:3]  # the plain substring loop (small batches)


def test_cache_stays_bounded_and_answers_stay_right(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(replies_module, "_CACHE_LIMIT", 16)
    rc = ReplyClassifier.load()
    batch = [("other", "", f"550 5.1.1 user unknown queue {i}", "") for i in range(40)]
    batch += [("gmail", "", f"421 4.7.28 rate limited {i} s1si{i}.2 - gsmtp", "") for i in range(40)]
    got = rc.classify_many(batch)
    assert got == ["user_unknown"] * 40 + ["throttled"] * 40
    assert 0 < len(rc._cache) <= 16
    assert rc.classify_many(batch) == got


def test_text_polars_cannot_hold_falls_back_to_the_substring_loop() -> None:
    rc = _fresh()
    batch = [("other", "", f"550 5.1.1 user unknown \ud800 {i}", "") for i in range(10)]  # lone surrogate
    assert rc.classify_many(batch) == [_fresh().classify(*item) for item in batch]


_EXACT = [rule for rule in _SHIPPED.rules if rule.exact]


def test_most_shipped_patterns_are_decided_by_their_literals() -> None:
    assert len(_EXACT) >= 40 and any(rule.name == "transient-remote" for rule in _EXACT)
    assert replies_module.literal_expansions(r"\bspam\b") is None  # a word boundary: the regex decides
    assert replies_module.literal_expansions(r"4\.16\.5\d") is None  # a class
    assert replies_module.literal_expansions("a(?-i:B)") is None  # an inline flag change
    assert replies_module.literal_expansions("x?") is None  # matches the empty string
    assert replies_module.literal_expansions("a?+a") is None  # possessive: "a" has no match, though it holds "a"
    assert replies_module.literal_expansions("ex[ck]eeded|Over ?Quota") == frozenset(
        {"exceeded", "exkeeded", "over quota", "overquota"})


@settings(max_examples=300, deadline=None)
@given(rule=st.sampled_from(_EXACT), data=st.data())
def test_literal_expansions_decide_exactly_what_the_regex_decides_on_ascii_text(rule, data) -> None:
    """On an ASCII text, `pattern.search` finds a match iff a literal expansion is in the lowered text."""
    expansions = sorted(rule.exact)
    piece = st.sampled_from(expansions).flatmap(
        lambda e: st.sampled_from([e, e.upper(), e.title(), e[:-1], e[1:], e.replace(" ", "  ")]))
    words = data.draw(st.lists(piece | st.text(alphabet="abeiklnorstuy .-()[]0123", max_size=8), max_size=6))
    text = " ".join(words)
    assert (rule.pattern.search(text) is not None) == any(e in text.lower() for e in rule.exact)


RE2_FORMS = [  # (pattern, replies): forms Python's parser reads otherwise than RE2, and a lone surrogate
    ("user[[:space:]]unknown", ["550 5.1.1 user unknown", "550 user]unknown", "550 user:unknown"]),
    ("[[:alpha:]]x", ["550 ax", "550 a]x", "550 :x", "550 1x"]),
    ("[[:^alpha:]]x", ["550 1x", "550 ax"]),
    ("ab{,2}c", ["550 abc", "550 ab{,2}c", "550 ac"]),
    ("unknown\\?", ["550 user unknown\udcff", "550 user unknown?"]),
]


@pytest.mark.parametrize(("pattern", "replies"), RE2_FORMS)
def test_the_pre_checks_agree_with_re2_on_forms_pythons_parser_reads_otherwise(tmp_path, pattern: str,
                                                                               replies: list[str]) -> None:
    """The literal pre-checks came from Python's parser: `[[:space:]]` (a POSIX class in RE2) read as a set then a
    `]`, so `user[[:space:]]unknown` required `]unknown` and never fired; `{,2}` (literal in RE2) read as a count; a
    lone surrogate was `?` to the regex and itself to the literals. classify, classify_many and explain must answer
    what the pattern itself (RE2) answers."""
    import warnings

    import yaml

    warnings.simplefilter("ignore")  # as in the daemon: the suite's warnings-as-errors would hide the old misreading
    path = tmp_path / "replies.yaml"
    path.write_text(yaml.safe_dump({"date": "1", "rules": [{"name": "r", "pattern": pattern, "class": "content"}]}))
    classifier = ReplyClassifier.load(path)
    rule = classifier.rules[0]
    for reply in replies:
        want = "content" if rule.pattern.search(replies_module.searchable(reply)) else "other"
        got = (classifier.explain("other", "", reply)[0], ReplyClassifier.load(path).classify("other", "", reply),
               ReplyClassifier.load(path).classify_many([("other", "", reply, "")] * 9)[0])
        assert got == (want, want, want), (pattern, reply)
    assert any(rule.pattern.search(r) for r in replies if r.isascii())  # each pattern matches one of its replies


def test_keys_that_select_the_same_rules_share_one_plan():
    """A plan (the candidates indexed by literal) is built once per distinct list of candidates, not once per
    (provider, code, enhanced) key: the 250k-line bench corpus has 255 such keys and 36 lists. Keys of different lists
    keep plans of their own, and the answers stay those of `classify`."""
    c = _fresh()
    items = [(isp, "", f"smtp;{code} {enhanced}.{detail} mailbox unavailable", "")
             for isp in ("gmail", "other") for code, enhanced in (("450", "4.2"), ("550", "5.1"))
             for detail in range(1, 5)]
    assert c.classify_many(items) == [_fresh().classify(*item[:3]) for item in items]
    lists = {k: c._candidates[k] for k in c._plans}
    assert len(lists) == 16
    assert 1 < len(set(lists.values())) < 16
    assert len({id(plan) for plan in c._plans.values()}) == len(set(lists.values()))
    for key, plan in c._plans.items():
        assert plan[0] == lists[key]  # each key's plan is of its own candidates


def test_texts_finding_the_same_literals_share_one_set_of_them():
    """`_present` builds one set per distinct set of literal hits (a batch's replies differ mostly by ids and IPs),
    the same literals whatever their order or repeats."""
    c = _fresh()
    texts = ["user unknown at 10.0.0.1", "user unknown at 10.0.0.2", "unknown user unknown user unknown",
             "mailbox full", "nothing here"] + ["pad"] * 8  # past the one-at-a-time path (< 8 texts)
    found = c._present([t.lower() for t in texts])
    assert found[0] is found[1] and found[0] == found[2] and found[3] != found[0]
    assert found[4] == frozenset() and found[0] == frozenset(k for k in LITERALS if k in texts[0])


def _table(tmp_path, rules: str) -> ReplyClassifier:
    from tests.test_classify_replies import write

    return ReplyClassifier.load(write(tmp_path, f"version: 1\ndate: '2026-12-07'\nrules:\n{rules}"))


def test_texts_with_the_same_literals_still_run_their_own_regexes(tmp_path):
    """The candidates to try are kept per set of literals present (`_order`); whether a regex then matches is each
    text's own: `\\b5\\.7\\.1\\b` needs its literal `5.7.1` in both texts below and matches only the first. Within a
    batch (the polars path, 8 texts or more) and in the next batch, which finds the kept order."""
    c = _table(tmp_path, "  - {name: auth, pattern: '\\b5\\.7\\.1\\b', class: auth_failure}\n"
                         "  - {name: full, pattern: 'mailbox full', class: mailbox_full}\n")
    texts = ["550 rejected 5.7.1 by policy", "550 rejected 15.7.10 by policy 5.7.1x", "550 mailbox full",
             "550 mailbox full 5.7.1", "550 nothing"]
    want = ["auth_failure", "other", "mailbox_full", "auth_failure", "other"]
    items = [("gmail", "", t, "") for t in texts * 2]
    assert c.classify_many(items) == want * 2
    again = [("yahoo", "", t, "") for t in reversed(texts * 2)]
    assert c.classify_many(again) == list(reversed(want * 2))


@settings(max_examples=300, deadline=None)
@given(rule=st.sampled_from([r for r in _SHIPPED.rules if r.pattern is not None]),
       text=st.text(alphabet="abcdeiklmnorstuxyzKİẞ5.7 -@:[]()0123456789ÿ\u2028", max_size=40)
       | st.sampled_from(LITERALS).map(lambda k: f"550 {k.upper()} x"))
def test_the_direct_match_answers_as_the_bindings_search(rule, text) -> None:
    """`matcher` asks RE2 with the text's UTF-8 bytes, past the binding's Python wrapper: the same answer as
    `pattern.search`, on every shipped pattern, ASCII or not."""
    assert replies_module._UNANCHORED is not None  # the direct path is the one compared (not `search` with itself)
    assert rule.search is not None
    assert rule.search(text) is (rule.pattern.search(text) is not None)


def test_a_binding_without_the_direct_interface_falls_back_to_its_search() -> None:
    class Plain:  # a pattern object with `search` only (another binding, a later version)
        def search(self, text: str) -> object:
            return "m" if "x" in text else None

    found = replies_module.matcher(Plain())
    assert (found("axb"), found("ab")) == (True, False)


def test_the_kept_orders_are_bounded_all_plans_together(monkeypatch: pytest.MonkeyPatch) -> None:
    """A remote server chooses which rule literals its replies hold and, by its codes, which plan they meet: the
    orders kept per (plan, set of literals) are bounded over every plan (`_ORDER_LIMIT`), and a text holding more
    than `_ORDER_LITERALS` literals keeps none (the review's 150 literals a text kept ~9 KB an entry, per plan up to
    32,768: 2.4 GB). The answers stay those of `classify`."""
    monkeypatch.setattr(replies_module, "_ORDER_LIMIT", 8)
    c = _fresh()
    prefixes = ["421 4.7.0 ", "450 4.2.2 ", "550 5.1.1 ", "552 5.2.2 ", "554 5.7.1 "]
    items = [("other", "", f"{code}{LITERALS[i]} {LITERALS[(i * 7) % len(LITERALS)]} x{i}", "")
             for code in prefixes for i in range(0, len(LITERALS), 3)]
    plans_together = 0
    for start in range(0, len(items), 40):
        batch = items[start:start + 40]
        assert c.classify_many(batch) == [_fresh().classify(*item) for item in batch]
        assert len(c._tried) <= 8
        plans_together = max(plans_together, len({serial for serial, _ in c._tried}))
    assert plans_together >= 2  # one map, bounded over several plans at once
    c._tried.clear()
    many = [("other", "", "550 5.1.1 " + " ".join(LITERALS[:replies_module._ORDER_LITERALS + 1]) + f" {i}", "")
            for i in range(10)]
    assert c.classify_many(many) == [_fresh().classify(*item) for item in many]
    assert c._tried == {}


def test_the_kept_orders_are_bounded_by_the_candidates_they_hold(monkeypatch: pytest.MonkeyPatch) -> None:
    """An order holds every candidate a text's literals allow, each rule without a literal always: a table of 4,000
    such rules kept 4,000 indexes a text (the review's +130 MiB at 4,096 entries). The orders kept hold at most
    `_ORDER_BUDGET` indexes together; the answers stay those of `classify`."""
    monkeypatch.setattr(replies_module, "_ORDER_BUDGET", 50)
    c = _fresh()
    items = [("other", "", f"550 5.1.1 {LITERALS[i]} {LITERALS[(i * 5) % len(LITERALS)]} x{i}", "")
             for i in range(len(LITERALS))]
    for start in range(0, len(items), 20):
        batch = items[start:start + 20]
        assert c.classify_many(batch) == [_fresh().classify(*item) for item in batch]
        held = sum(len(order) for order in c._tried.values())
        assert held == c._tried_size
        assert held <= 50


def test_a_classifier_pickles_after_use_and_answers_alike() -> None:
    """multiprocessing and process pools pickle what they are handed: a rule's matcher is a closure, so a Rule and a
    classifier pickle as their table (their caches made again as they classify), as they did before the matcher."""
    import pickle

    c = _fresh()
    items = [("gmail", "5.1.1", "smtp;550 5.1.1 The email account that you tried to reach does not exist", ""),
             ("yahoo", "", "421 4.7.0 [TSS04] Messages from 10.0.0.1 temporarily deferred", "")]
    want = c.classify_many(items)
    again = pickle.loads(pickle.dumps(c))
    assert again.classify_many(items) == want
    assert (again.date, again.source, len(again.rules)) == (c.date, c.source, len(c.rules))


def test_a_rule_made_again_with_another_pattern_matches_by_it() -> None:
    """`dataclasses.replace` handed the old matcher to the new rule: it matched by a pattern it no longer had. Given
    the new pattern's pre-checks too (Rule's docstring), the batch, one-at-a-time and explain paths agree."""
    import dataclasses

    rule = next(r for r in _SHIPPED.rules if r.name == "mailbox-full-text")
    zzz = replies_module.compile_pattern("zzz")
    other = dataclasses.replace(rule, pattern=zzz, keywords=replies_module.required_literals(zzz.pattern),
                                exact=replies_module.literal_expansions(zzz.pattern))
    assert other.search is not None
    assert (other.search("a zzz b"), other.search("mailbox full")) == (True, False)
    texts = [("gmail", "5.0.0", "552 5.2.2 mailbox full", ""), ("gmail", "5.0.0", "552 5.2.2 zzz mailbox", "")]
    alone = ReplyClassifier([other])
    want = [ReplyClassifier([other]).classify(*t) for t in texts]
    assert alone.classify_many(texts) == want == [alone.explain(*t)[0] for t in texts] == ["other", "mailbox_full"]
