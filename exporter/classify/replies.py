"""Remote SMTP reply (PMTA dsnStatus / dsnDiag / bounceCat) -> one bounded reply class.

The reply code alone is not enough (Yahoo TS03 is a 4xx that will never pass, Gmail 550 5.2.1 is
either an inactive mailbox or one receiving too fast), so classes come from an ordered rule table
(`replies.yaml`) matched on (provider, reply code, enhanced code, text): first match wins. Then
PMTA's bounceCat, then the enhanced code's class/subject, then `other`.

Hot path: results are cached per (isp, reply text, dsnStatus, bounceCat), with what varies per
message (Gmail's id before `- gsmtp`, address local parts) taken out of the text first. On a miss,
one precompiled regex reads the codes, the rules are pre-selected per (isp, code, enhanced), and a
substring pre-check on literals each pattern requires skips most of the (slow) regex searches.

Batches (`classify_many`, what the aggregator uses: replies carrying queue ids are distinct per
message, thousands per chunk) find every rule literal in every new text in one vectorised pass
(polars' Aho-Corasick `extract_many`), then visit only the rules whose literals are present: the
same answers as `classify` (a property test compares them), at a fraction of the per-text cost.
"""

from __future__ import annotations

import functools
import itertools
import re
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import re2

from exporter.classify.isp import ISP_NAMES, check_keys, check_version, read_yaml

try:  # the stdlib regex parser, only for the literal pre-check (required_literals)
    from re import _constants as sre_c
    from re import _parser as sre_parse

    _REPEATS = {sre_c.MAX_REPEAT, sre_c.MIN_REPEAT, getattr(sre_c, "POSSESSIVE_REPEAT", sre_c.MAX_REPEAT)}
    _ATOMIC_GROUP = getattr(sre_c, "ATOMIC_GROUP", object())
except ImportError:  # pragma: no cover - a future Python without it: no pre-check (see required_literals)
    sre_c = sre_parse = None  # type: ignore[assignment]
    _REPEATS, _ATOMIC_GROUP = set(), object()

OTHER = "other"

# The closed set of reply classes (isp-responses.md §2.10), in dashboard order.
REPLY_CLASSES: tuple[str, ...] = (
    "throttled",
    "reputation",
    "blocklisted",
    "auth_failure",
    "tls",
    "content",
    "policy",
    "user_unknown",
    "mailbox_disabled",
    "mailbox_full",
    "recipient_rate",
    "bad_domain",
    "network",
    "transient_remote",
    "message_too_large",
    "protocol",
    "expired",
    OTHER,
)

_CACHE_LIMIT = 32_768  # cleared (not LRU-evicted) when full: one O(1) check per insert
_GSMTP = " - gsmtp"
# Reply text is the remote server's: every pattern run on it whole must take time linear in its length (Python's
# `re` backtracks, holding the GIL; tests/test_reply_regex_bounds.py lints them). The rules themselves run in RE2.
# s142si14934335lfe.256, fullmatched: the lookahead asks for the letter that `[A-Za-z0-9-]*[A-Za-z][A-Za-z0-9-]*`
# placed between two runs of the same characters, which tried every split of a long token (1.6 s for 40,000).
_GMAIL_ID = re.compile(r"(?=[0-9-]*[A-Za-z])[A-Za-z0-9-]*\.\d+")
_ADDRESS_END = r"\s<>()\[\]\"',;:"
"""Characters that end an address's local part (exporter.aggregate's reply_key has the same, for polars)."""
# The per-recipient part of an address in a reply: a run of other characters up to its last `@`, tried only where the
# run starts (the lookbehind). Unanchored, the run was read again from each of its characters: quadratic (4 s for
# 40,000 characters then ` @x`). Same matches: a later start in the run finds no `@` an earlier one missed.
_LOCAL_PART = re.compile(rf"(?<![^{_ADDRESS_END}])[^{_ADDRESS_END}]+@")
# Optional `smtp;` prefix, optional 3-digit reply code, optional enhanced code right after it.
_REPLY = re.compile(r"\s*(?:[A-Za-z][\w.-]*;\s*)?(?:([245]\d\d)(?:[ -]+|$))?(?:#?([245])\.(\d{1,3})\.(\d{1,3})(?!\d))?")
_STATUS = re.compile(r"\s*([245])\.(\d{1,3})\.(\d{1,3})(?!\d)")
_CODE_SPEC = re.compile(r"^[245]\d{0,2}$")
_ENHANCED_SPEC = re.compile(r"^([245x])(?:\.(\d{1,3}))?(?:\.(\d{1,3}))?$")
_RULE_KEYS = {"name", "isp", "code", "enhanced", "pattern", "class", "examples", "note"}
_TOP_KEYS = {"version", "date", "rules", "bounce_cat_override", "bounce_cat_fallback", "enhanced_fallback"}

Enhanced = tuple[str, str, str]  # (class digit, subject, detail) as strings, e.g. ("4", "7", "28")
EnhancedSpec = tuple[str | None, str | None, str | None]  # None = any; a prefix on component boundaries
# (matcher(pattern) or None, required_literals() of the pattern or None, class, rule name,
# (..., literal_expansions() of the pattern or None)
_Candidate = tuple[Callable[[str], Any] | None, tuple[tuple[str, ...], ...] | None, str, str, frozenset[str] | None]
# (candidates, indexes of those without literals, literal -> indexes of those requiring it first, the plan's serial
#  number: `_order`'s key, never reused)
_Plan = tuple[tuple[_Candidate, ...], frozenset[int], dict[str, frozenset[int]], int]
_ORDER_LIMIT = 4_096
"""Most (plan, set of literals) -> order entries kept, all plans together (the bench corpus's 13,400 replies need 245);
cleared when full. Each costs about its set of literals: a set of more than `_ORDER_LITERALS` is not kept (a remote
server can make its replies hold every rule literal: 150 a text kept ~9 KB an entry)."""
_ORDER_LITERALS = 32
_ORDER_BUDGET = 1 << 20
"""Most candidate indexes the kept orders hold together (~8 MiB of tuples): an order is as long as the candidates a
text's literals allow, and each rule without a literal is always allowed, so an operator's table of 4,000 such rules
kept 4,000 a text (the review's 111 MiB at `_ORDER_LIMIT` entries). The shipped table's longest order is short."""


@dataclass(frozen=True, slots=True)
class Rule:
    """One validated row of the rule table; empty `isps`/`codes`/`enhanced` mean "any"."""

    index: int
    name: str
    cls: str
    isps: frozenset[str]
    codes: tuple[str, ...]
    enhanced: tuple[EnhancedSpec, ...]
    pattern: Any
    """The compiled pattern (RE2: `compile_pattern`), or None."""
    keywords: tuple[tuple[str, ...], ...] | None = None
    """required_literals(pattern): a cheap pre-check before the regex, or None (no pre-check)."""
    exact: frozenset[str] | None = None
    """literal_expansions(pattern): on an ASCII text the pattern matches iff one of these is in it, or None."""
    search: Callable[[str], bool] | None = field(init=False, default=None, compare=False, repr=False)
    """matcher(pattern), made once per rule (plans are shared by their candidates, which hold it), or None; always
    made from `pattern`. `keywords` and `exact` are given (None: no pre-check, which tests use): a rule made again
    with another pattern (`dataclasses.replace`) is given that pattern's, or None, as `_rule` does."""

    def __post_init__(self) -> None:
        if self.pattern is not None:
            object.__setattr__(self, "search", matcher(self.pattern))

    def __reduce__(self) -> tuple[Any, tuple[Any, ...]]:
        """Pickled (and copied) as its fields: the matcher (a closure) is made again from the pattern."""
        return type(self), (self.index, self.name, self.cls, self.isps, self.codes, self.enhanced, self.pattern,
                            self.keywords, self.exact)

    def selects(self, isp: str, code: str, enh: Enhanced | None) -> bool:
        """Whether the non-text conditions hold (the pattern is checked separately)."""
        if self.isps and isp not in self.isps:
            return False
        if self.codes and not any(code.startswith(c) for c in self.codes):
            return False
        if self.enhanced:
            if enh is None:
                return False
            return any(
                all(want is None or want == got for want, got in zip(spec, enh, strict=True)) for spec in self.enhanced
            )
        return True


def normalize_reply(dsn_diag: str) -> str:
    """The reply with what varies per message taken out (the cache key; exporter.aggregate mirrors it in polars)."""
    text = dsn_diag
    if text.endswith(_GSMTP):
        head, _, last = text[: -len(_GSMTP)].rpartition(" ")
        if _GMAIL_ID.fullmatch(last):
            text = head + _GSMTP
    if "@" in text:
        text = _LOCAL_PART.sub("*@", text)
    return text


def parse_codes(dsn_status: str, dsn_diag: str) -> tuple[str, Enhanced | None, Enhanced | None]:
    """(reply code or '', enhanced code for rules, enhanced code for the fallback) of one record.

    Rules see the reply's own enhanced code; PMTA's dsnStatus stands in only when the diag carries
    no SMTP reply at all (connect errors, ''), because PMTA invents a status for code-only replies.
    """
    m = _REPLY.match(dsn_diag)  # every part is optional: it always matches
    assert m is not None
    code = m.group(1) or ""
    if m.group(2):
        enh: Enhanced = (m.group(2), m.group(3), m.group(4))
        return code, enh, enh
    s = _STATUS.match(dsn_status)
    status: Enhanced | None = (s.group(1), s.group(2), s.group(3)) if s else None
    return code, (None if code else status), status


_FAILURE_CLASSES = ("4", "5")
"""Enhanced-code classes the fallback reads: RFC 3463's subject codes (x.6 media, x.7 security) say what a
failure was about; under class 2 they describe a success (Outlook's `250 2.6.0 Queued mail for delivery`)."""


def is_success(dsn_status: str, dsn_diag: str) -> bool:
    """Does the record carry a success (a 2xx reply, or PMTA's status class 2 when the diag has no reply code)?
    A success has no failure class: a timeline shows none for it."""
    code, _enh, status = parse_codes(dsn_status, dsn_diag)
    return code.startswith("2") if code else status is not None and status[0] == "2"


class ReplyClassifier:
    """Maps one PMTA reply to a member of `CLASSES`. Built once; `classify` is the hot path."""

    CLASSES: tuple[str, ...] = REPLY_CLASSES

    def __init__(
        self,
        rules: list[Rule],
        bounce_cat_override: dict[str, str] | None = None,
        bounce_cat_fallback: dict[str, str] | None = None,
        enhanced_fallback: dict[str, str] | None = None,
        date: str = "",
        source: str = "",
    ):
        self.rules = tuple(rules)
        self.date = date
        self.source = source
        self._override = dict(bounce_cat_override or {})
        self._bc_fallback = dict(bounce_cat_fallback or {})
        self._enh_fallback = dict(enhanced_fallback or {})
        self._cache: dict[tuple[str, str, str, str], str] = {}
        self._candidates: dict[tuple[str, str, Enhanced | None], tuple[_Candidate, ...]] = {}
        self._plans: dict[tuple[str, str, Enhanced | None], _Plan] = {}
        self._plan_of: dict[tuple[_Candidate, ...], _Plan] = {}
        """Plans by their candidates: the bench corpus's 255 (isp, code, enhanced) keys select only 36 distinct lists
        (with the cyclic garbage collector on, building the 255 plans cost ~50 ms; the oneshot runs without it)."""
        self._serials = itertools.count()
        self._tried: dict[tuple[int, frozenset[str]], tuple[int, ...]] = {}
        """`_order`'s: (plan serial, literals present) -> the candidates to try, in order."""
        self._tried_size = 0
        """Candidate indexes `_tried`'s orders hold together (`_ORDER_BUDGET`)."""
        self._literals = tuple(sorted({k for r in self.rules if r.keywords for g in r.keywords for k in g}
                                      | {k for r in self.rules if r.exact for k in r.exact}))
        # literal -> every literal it contains (itself included): presence is closed under substrings. Filled as
        # literals are found: made whole here it compared every literal with every other (a SIGHUP reload of a
        # table of 8,000 rules held the event loop 16 s)
        self._implied: dict[str, tuple[str, ...]] = {}

    def __reduce__(self) -> tuple[Any, tuple[Any, ...]]:
        """Pickled (multiprocessing, a process pool) as its table: its caches and plans hold the rules' matchers,
        closures, and are made again as it classifies."""
        return type(self), (list(self.rules), self._override, self._bc_fallback, self._enh_fallback, self.date,
                                 self.source)

    @classmethod
    def load(cls, path: Path | None = None) -> ReplyClassifier:
        """Read and validate a rule table (None -> the shipped replies.yaml)."""
        name, data = read_yaml(path, "replies.yaml")
        data = check_keys(name, "top level", data, _TOP_KEYS, {"date", "rules"})
        check_version(name, data)
        if not isinstance(data["rules"], list):
            raise ValueError(f"{name}: rules: expected a list of rules")
        rules = [_rule(name, i, raw) for i, raw in enumerate(data["rules"])]
        maps = {}
        for key in ("bounce_cat_override", "bounce_cat_fallback", "enhanced_fallback"):
            table = data.get(key) or {}
            if not isinstance(table, dict):
                raise ValueError(f"{name}: {key}: expected a mapping of name -> class")
            for k, v in table.items():
                if isinstance(k, float):
                    raise ValueError(f"{name}: {key}: key {k!r} must be quoted (YAML reads 4.10 as 4.1)")
                _check_class(name, f"{key}.{k}", v)
                if key == "enhanced_fallback" and not _ENHANCED_SPEC.match(str(k)):
                    raise ValueError(f"{name}: {key}: bad enhanced code {k!r} (expected e.g. 5.4.4, x.1.1, x.7)")
            maps[key] = {str(k): v for k, v in table.items()}
        return cls(rules, **maps, date=str(data["date"]), source=name)

    def classify(self, isp: str, dsn_status: str, dsn_diag: str, bounce_cat: str = "") -> str:
        """Class of one reply; `isp` is an IspClassifier value, the rest are PMTA fields ('' if absent).

        Rules see the reply with what varies per message taken out, so that it can be the cache key:
        Gmail's message id before ` - gsmtp`, and the local part of any address (`*@example.com`).
        """
        text = normalize_reply(dsn_diag)
        key = (isp, text, dsn_status, bounce_cat)
        found = self._cache.get(key)
        if found is None:
            found = self.explain(isp, dsn_status, text, bounce_cat)[0]
            if len(self._cache) >= _CACHE_LIMIT:
                self._cache.clear()
            self._cache[key] = found
        return found

    def classify_many(self, items: list[tuple[str, str, str, str]]) -> list[str]:
        """`classify(*item)` of each (isp, dsn_status, dsn_diag, bounce_cat), new texts decided in one batch."""
        keys = [(isp, normalize_reply(diag), status, cat) for isp, status, diag, cat in items]
        cache = self._cache
        out = [cache.get(k) for k in keys]
        todo = list(dict.fromkeys(k for k, hit in zip(keys, out, strict=True) if hit is None))
        if not todo:
            return out  # type: ignore[return-value]
        decided: dict[tuple[str, str, str, str], str] = {}
        texts = [searchable(k[1]) for k in todo]  # the literals and the regex read the same text
        for key, text, found in zip(todo, texts, self._present([t.lower() for t in texts]), strict=True):
            isp, _key_text, status, cat = key
            decided[key] = cls = self._decide(isp, status, text, cat, found, text.isascii())
            if len(cache) >= _CACHE_LIMIT:
                cache.clear()
            cache[key] = cls
        return [hit if hit is not None else decided[k] for k, hit in zip(keys, out, strict=True)]

    def _present(self, lowered: list[str]) -> list[frozenset[str]]:
        """The rule literals each lowered text contains (one Aho-Corasick pass over all of them)."""
        literals = self._literals
        if not literals:
            return [frozenset()] * len(lowered)
        if len(lowered) < 8:
            return [frozenset(k for k in literals if k in text) for text in lowered]
        try:
            import polars as pl  # the classifier itself loads without polars

            found = pl.Series(lowered, dtype=pl.String).str.extract_many(list(literals), overlapping=True).to_list()
        except Exception:  # noqa: BLE001 - no polars, an old one, or a str polars refuses (lone surrogates)
            return [frozenset(k for k in literals if k in text) for text in lowered]
        implied, within = self._implied, self._within
        none: frozenset[str] = frozenset()
        sets: dict[frozenset[str], frozenset[str]] = {}  # texts alike but for ids and IPs find the same literals
        out = []
        for hits in found:
            if not hits:
                out.append(none)
                continue
            key = frozenset(hits)  # the distinct literals only: a reply repeating one 300,000 times keys by one
            present = sets.get(key)
            if present is None:
                present = sets[key] = frozenset(x for k in key for x in (implied.get(k) or within(k)))
            out.append(present)
        return out

    def _within(self, literal: str) -> tuple[str, ...]:
        """The rule literals `literal` contains (itself included), kept for the next text that holds it."""
        found = self._implied[literal] = tuple(o for o in self._literals if o in literal)
        return found

    def _decide(self, isp: str, dsn_status: str, text: str, bounce_cat: str, present: frozenset[str],
                ascii_text: bool) -> str:
        """explain(...)[0] of `text` (as `searchable` made it) given the rule literals present in text.lower(): only
        rules they allow are tried, and on an ASCII text a pattern that is a set of literals (`Rule.exact`) is
        decided by them, no regex."""
        found = self._override.get(bounce_cat)
        if found is not None:
            return found
        code, enh, fallback_enh = parse_codes(dsn_status, text)
        plan = self._plans.get((isp, code, enh))
        if plan is None:
            plan = self._plan(isp, code, enh)
        candidates = plan[0]
        order = self._tried.get((plan[3], present))
        if order is None:
            order = self._order(plan, present)
        for i in order:
            search, _groups, cls, _name, exact = candidates[i]
            if search is None or (not present.isdisjoint(exact) if exact is not None and ascii_text
                                  else search(text)):
                return cls
        found = self._bc_fallback.get(bounce_cat)
        if found is not None:
            return found
        if fallback_enh is not None and fallback_enh[0] in _FAILURE_CLASSES:
            c, s, d = fallback_enh
            for k in (f"{c}.{s}.{d}", f"x.{s}.{d}", f"{c}.{s}", f"x.{s}"):
                found = self._enh_fallback.get(k)
                if found is not None:
                    return found
        return OTHER

    def _plan(self, isp: str, code: str, enh: Enhanced | None) -> _Plan:
        """The candidates of (isp, code, enhanced) indexed by a literal each one requires (built once per distinct
        list of candidates)."""
        candidates = self._candidates.get((isp, code, enh)) or self._select(isp, code, enh)
        plan = self._plan_of.get(candidates)
        if plan is None:
            always: set[int] = set()
            index: dict[str, set[int]] = {}
            for i, (_search, groups, _cls, _name, _exact) in enumerate(candidates):
                if groups is None:
                    always.add(i)
                else:
                    for k in groups[0]:
                        index.setdefault(k, set()).add(i)
            plan = (candidates, frozenset(always), {k: frozenset(v) for k, v in index.items()}, next(self._serials))
            if len(self._plan_of) >= _CACHE_LIMIT:
                self._plan_of.clear()
            self._plan_of[candidates] = plan
        if len(self._plans) >= _CACHE_LIMIT:
            self._plans.clear()
        self._plans[(isp, code, enh)] = plan
        return plan

    def _order(self, plan: _Plan, present: frozenset[str]) -> tuple[int, ...]:
        """The candidates of `plan` whose required literals are all in `present`, in rule order: what decides a text
        with those literals (its regexes aside). Kept per plan and distinct set of literals, which texts alike but for
        ids and addresses share (`_present`): each text then skips straight to its regexes. Bounded all plans
        together (`_ORDER_LIMIT`, `_ORDER_LITERALS`, `_ORDER_BUDGET`)."""
        candidates, always, index, serial = plan
        picked = always
        for k in present:
            more = index.get(k)
            if more is not None:
                picked = picked | more
        order = tuple(i for i in sorted(picked)
                      if (groups := candidates[i][1]) is None or all(not present.isdisjoint(g) for g in groups))
        if len(present) <= _ORDER_LITERALS:
            if len(self._tried) >= _ORDER_LIMIT or self._tried_size + len(order) > _ORDER_BUDGET:
                self._tried.clear()
                self._tried_size = 0
            self._tried[(serial, present)] = order
            self._tried_size += len(order)
        return order

    def explain(self, isp: str, dsn_status: str, dsn_diag: str, bounce_cat: str = "") -> tuple[str, str]:
        """(class, what decided it): a rule name, `bounceCat:<cat>`, `enhanced:<key>` or `none`.

        Uncached and applied to the text exactly as given; for debugging rules and for tests.
        """
        found = self._override.get(bounce_cat)
        if found is not None:
            return found, f"bounceCat:{bounce_cat}"
        code, enh, fallback_enh = parse_codes(dsn_status, dsn_diag)
        candidates = self._candidates.get((isp, code, enh))
        if candidates is None:
            candidates = self._select(isp, code, enh)
        lowered = None
        dsn_diag = searchable(dsn_diag)
        for search, keywords, cls, rule_name, _exact in candidates:
            if keywords is not None:
                if lowered is None:
                    lowered = dsn_diag.lower()
                if not all([any(map(lowered.__contains__, group)) for group in keywords]):
                    continue  # the pattern cannot match: skip the (slow, case-insensitive) regex
            if search is None or search(dsn_diag):
                return cls, rule_name
        found = self._bc_fallback.get(bounce_cat)
        if found is not None:
            return found, f"bounceCat:{bounce_cat}"
        if fallback_enh is not None and fallback_enh[0] in _FAILURE_CLASSES:
            c, s, d = fallback_enh
            for k in (f"{c}.{s}.{d}", f"x.{s}.{d}", f"{c}.{s}", f"x.{s}"):
                found = self._enh_fallback.get(k)
                if found is not None:
                    return found, f"enhanced:{k}"
        return OTHER, "none"

    def _select(self, isp: str, code: str, enh: Enhanced | None) -> tuple[_Candidate, ...]:
        """The rules that can apply to this (isp, code, enhanced), in order; memoised per key."""
        picked: list[_Candidate] = []
        for rule in self.rules:
            if rule.selects(isp, code, enh):
                picked.append((rule.search, rule.keywords, rule.cls, rule.name, rule.exact))
                if rule.pattern is None:
                    break  # an unconditional match: nothing after it can be reached
        if len(self._candidates) >= _CACHE_LIMIT:
            self._candidates.clear()
        self._candidates[(isp, code, enh)] = found = tuple(picked)
        return found


def _check_class(name: str, where: str, value: Any) -> str:
    if value not in REPLY_CLASSES:
        raise ValueError(f"{name}: {where}: unknown class {value!r} (allowed: {', '.join(REPLY_CLASSES)})")
    return str(value)


def _strings(name: str, where: str, value: Any) -> list[str]:
    """A YAML scalar or list as strings; floats are refused because YAML reads 4.10 as the number 4.1."""
    items = value if isinstance(value, list) else [value]
    if not items:
        raise ValueError(f"{name}: {where}: empty list")
    out = []
    for item in items:
        if isinstance(item, bool) or not isinstance(item, str | int):
            raise ValueError(f"{name}: {where}: {item!r} must be a quoted string")
        out.append(str(item).strip())
    return out


def _rule(name: str, index: int, raw: Any) -> Rule:
    """Validate one rule; errors name the file and `rules[index]` (plus the rule's name if it has one)."""
    label = f"rules[{index}]"
    if isinstance(raw, dict) and isinstance(raw.get("name"), str):
        label += f" ({raw['name']})"
    raw = check_keys(name, label, raw, _RULE_KEYS, {"class"})
    cls = _check_class(name, label, raw["class"])
    isps = _strings(name, f"{label}.isp", raw["isp"]) if "isp" in raw else []
    for isp in isps:
        if isp not in ISP_NAMES:
            raise ValueError(f"{name}: {label}.isp: unknown provider {isp!r} (allowed: {', '.join(ISP_NAMES)})")
    codes = _strings(name, f"{label}.code", raw["code"]) if "code" in raw else []
    for code in codes:
        if not _CODE_SPEC.match(code):
            raise ValueError(f"{name}: {label}.code: bad reply code {code!r} (expected a prefix such as 4, 42 or 421)")
    specs: list[EnhancedSpec] = []
    for text in _strings(name, f"{label}.enhanced", raw["enhanced"]) if "enhanced" in raw else []:
        m = _ENHANCED_SPEC.match(text)
        if not m or (m.group(3) and not m.group(2)):
            raise ValueError(f"{name}: {label}.enhanced: bad enhanced code {text!r} (expected e.g. 4.7.28, x.2.2, 5.7)")
        c, s, d = m.groups()
        specs.append((None if c == "x" else c, s, d))
    pattern = None
    if "pattern" in raw:
        if not isinstance(raw["pattern"], str) or not raw["pattern"]:
            raise ValueError(f"{name}: {label}.pattern: expected a non-empty string")
        try:
            pattern = compile_pattern(raw["pattern"])
        except ValueError as exc:
            raise ValueError(f"{name}: {label}.pattern: {exc}") from None
    if not (isps or codes or specs or pattern):
        raise ValueError(f"{name}: {label}: a rule needs at least one of isp, code, enhanced, pattern")
    keywords = required_literals(pattern.pattern) if pattern else None
    exact = literal_expansions(pattern.pattern) if pattern else None
    rule = Rule(
        index, str(raw.get("name") or label), cls, frozenset(isps), tuple(codes), tuple(specs), pattern, keywords,
        exact,
    )
    examples = raw.get("examples") or []
    if not isinstance(examples, list):
        raise ValueError(f"{name}: {label}.examples: expected a list of reply texts")
    for example in examples:
        code, enh, _ = parse_codes("", str(example))
        isp = next(iter(sorted(rule.isps)), OTHER)
        if not rule.selects(isp, code, enh) or (pattern and not pattern.search(str(example))):
            raise ValueError(f"{name}: {label}.examples: the rule does not match its own example {example!r}")
    return rule


_RE2_OPTIONS = re2.Options()
_RE2_OPTIONS.case_sensitive = False
_RE2_OPTIONS.log_errors = False  # the error is raised, with the rule named: not also printed on stderr
_RE2_OPTIONS.never_capture = True  # a match or none is all a rule asks (capture positions cost ~5x on a long reply)


def compile_pattern(text: str) -> Any:
    """A rule's pattern, compiled by RE2: its time is linear in the reply's length whatever the pattern, where
    Python's backtracking `re` can take exponential time (`(a+)+$`) or polynomial time (`\\w+\\s*\\w+ x`) on a reply
    crafted by the remote server, on the hot path. RE2 syntax, as Prometheus' own regexes: no lookarounds,
    backreferences, possessive or atomic groups (refused, with RE2's reason)."""
    try:
        return re2.compile(text, _RE2_OPTIONS)
    except re2.error as exc:
        reason = exc.args[0] if exc.args else exc
        if isinstance(reason, bytes):
            reason = reason.decode("utf-8", "replace")
        raise ValueError(f"bad regular expression (RE2 syntax, as Prometheus' own; lookarounds, backreferences, "
                         f"possessive and atomic groups are not supported): {reason}") from None


_UNANCHORED = getattr(getattr(re2, "_Anchor", None), "UNANCHORED", None)


def matcher(pattern: Any) -> Callable[[str], bool]:
    """Whether `pattern` (compile_pattern's) matches somewhere in a text, as `pattern.search(text) is not None`.

    The binding's `search` wraps RE2's match in Python (a generator, offsets mapped back to characters, a Match
    object: ~2.7 us a call, 5x the match itself on a reply); a rule asks only whether it matches, so this asks RE2
    directly with the text's UTF-8 bytes, which is what the binding hands it. Where a binding lacks that interface,
    its `search`. A closure (a call costs less than an object's `__call__`): a Rule and a classifier pickle without
    it (their `__reduce__`) and make it again."""
    match = getattr(getattr(pattern, "_regexp", None), "Match", None)
    if match is None or _UNANCHORED is None:
        return lambda text: pattern.search(text) is not None
    anchor = _UNANCHORED

    def search(text: str) -> bool:
        data = text.encode("utf-8")
        return match(anchor, data, 0, len(data))[0][0] >= 0

    return search


def searchable(text: str) -> str:
    """`text` as RE2 can read it (UTF-8): a lone surrogate (a byte no UTF-8 decoder made a character of, kept by
    exporter.textrepair) becomes U+FFFD, which no ASCII pattern matches; any other text is itself. Both the literal
    pre-checks and the regex read this text, so that they agree."""
    if text.isascii():
        return text
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return "".join("\ufffd" if "\ud800" <= c <= "\udfff" else c for c in text)
    return text


def required_literals(pattern: str) -> tuple[tuple[str, ...], ...] | None:
    """Groups of lower-case literals such that every match of `pattern` holds one literal of each group.

    A case-insensitive regex scan of a long reply takes several µs; plain substring tests on the lowercased
    text rule most patterns out first. Uses the stdlib regex parser (`re._parser`) on patterns it reads as RE2
    does (`_parse`); anything unexpected means None, "no pre-check", which is always correct, only slower.
    """
    try:
        groups = _requirements(_parse(pattern))
    except Exception:  # a private module: never let its changes break loading
        return None
    best = sorted(set(groups), key=_rank)[:3]
    # within a group "exceeded" already covers "exceeded storage"
    return tuple(tuple(sorted(k for k in g if not any(o != k and o in k for o in g))) for g in best) or None


_EXPANSIONS = 512
_BACKTRACKING = {sre_c.MAX_REPEAT, sre_c.MIN_REPEAT} if sre_c is not None else set()


def literal_expansions(pattern: str) -> frozenset[str] | None:
    """The lower-case strings a case-insensitive `pattern` matches, when they are a short finite list of
    ASCII literals (alternations, optional parts, one-character sets of them); else None.

    Then, on an ASCII text, the pattern (`compile_pattern`: RE2, case-insensitive) finds a match iff one of them is a
    substring of `text.lower()` (ASCII letters fold to ASCII letters only): the batch path reads that off
    the literals it finds anyway instead of running the regex. Anchors, word boundaries, classes such as
    \\d or \\s, wide repeats and inline flag changes make it None (the regex decides, as always)."""
    try:
        found = _expand(_parse(pattern))
    except Exception:  # a private module: never let its changes break loading
        return None
    return frozenset(found) if found and "" not in found else None


_READ_OTHERWISE = ("[:", "{,")
"""Text RE2 reads otherwise than Python's parser: `[[:alpha:]]` is a POSIX class in RE2, a set of `[:alph` then a `]`
in Python; `a{,2}` is literal text in RE2, a count in Python. A pattern holding either gets no pre-check."""


@functools.lru_cache(maxsize=1)
def _parse(pattern: str) -> Any:
    """The stdlib parser's tree of a case-insensitive pattern (shared by the two readers of a rule's pattern), for
    patterns it reads as RE2 does (others raise: no pre-check). Its warnings (`[[`: "possible nested set") are its
    own business: the pattern runs in RE2. The last tree is kept: `_rule` asks for each pattern's twice in a row
    (required_literals, then literal_expansions; the parse is most of a table's load). Neither reader changes it."""
    if any(form in pattern for form in _READ_OTHERWISE):
        raise ValueError("read otherwise by RE2")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return sre_parse.parse(pattern, re.IGNORECASE)


def _expand(seq: Any) -> set[str] | None:
    out = {""}
    for op, av in seq:
        options: set[str] | None
        if op is sre_c.LITERAL:
            options = {chr(av).lower()} if av < 128 else None
        elif op is sre_c.SUBPATTERN:
            options = None if av[1] or av[2] else _expand(av[-1])  # no inline flag changes
        elif op is sre_c.BRANCH:
            options = set()
            for branch in av[1]:
                more = _expand(branch)
                if more is None:
                    return None
                options |= more
        elif op in _BACKTRACKING and av[1] <= 3:  # a possessive repeat may refuse a match its strings allow
            item = _expand(av[2])
            options = None if item is None else {
                "".join(combo) for k in range(av[0], av[1] + 1) for combo in itertools.product(item, repeat=k)}
        elif op is sre_c.IN and all(kind is sre_c.LITERAL and ch < 128 for kind, ch in av):
            options = {chr(ch).lower() for _kind, ch in av}
        else:
            return None
        if options is None:
            return None
        out = {head + tail for head in out for tail in options}
        if len(out) > _EXPANSIONS:
            return None
    return out


def _rank(group: frozenset[str]) -> tuple[int, int]:
    return len(group), -min(map(len, group))  # fewer alternatives first, then longer literals


def _requirements(seq: Any) -> list[frozenset[str]]:
    """Literal sets (3+ chars each) that a parsed regex sequence requires: one of each set appears."""
    out: list[frozenset[str]] = []
    run: list[str] = []
    for op, av in [*seq, (None, None)]:  # the sentinel flushes the last run of literals
        if op is sre_c.LITERAL:
            run.append(chr(av))
            continue
        if len(run) >= 3:
            out.append(frozenset(["".join(run).lower()]))
        run = []
        if op is sre_c.SUBPATTERN:
            out += _requirements(av[-1])
        elif op is _ATOMIC_GROUP:
            out += _requirements(av)
        elif op in _REPEATS and av[0] >= 1:
            out += _requirements(av[2])
        elif op is sre_c.BRANCH:
            options = [min(_requirements(branch), key=_rank, default=None) for branch in av[1]]
            if all(options):
                out.append(frozenset().union(*options))  # type: ignore[arg-type]
    return out
