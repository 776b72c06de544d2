"""Redaction of recipient addresses in text bound for logs (when `correlator.hash_recipients` is on).

Hashing recipients in the store is pointless if a parser warning then logs the raw CSV line. The
local part of every address-like token is replaced (`[redacted]@gmail.com`): the domain stays,
since it says which ISP a bad line concerns and identifies nobody. Matching is deliberately loose
(found from the `@` leftwards, not by an address grammar): what mail carries is Unicode, quoted,
percent-encoded in URLs, escaped in JSON or repr text, or cut short, and a miss leaks a name.
"""

from __future__ import annotations

import logging
import numbers
import operator
import re
from bisect import bisect_right
from collections import deque
from collections.abc import Iterable, Mapping
from typing import Any
from urllib.parse import unquote

REDACTED = "[redacted]"

# What ends a local part on its left. Everything else belongs to it: ASCII atext, any non-ASCII letter
# (SMTPUTF8 local parts), `\` (a repr or JSON escape such as `\u00e9` inside the name) and `=` (VERP and
# SRS addresses: `bounces+u=example.com@lists.example`), so an unknown character errs toward redacting
# more, never less. Typographic apostrophes stay inside (`o’brien`).
_DELIMITERS = r"\s\"<>()\[\],;:@＠﹫«»‹›“”„‟「」『』【】〈〉《》〔〕（）［］｛｝＜＞，：；、。"
# After a percent-encoded `@` the text is a URL: httpx, browsers and urlencode encode `=&?/#` inside a
# value, so there a raw one is the URL's own punctuation (`?rcpt=alice%40gmail.com`).
_URL_DELIMITERS = _DELIMITERS + "=&?/#"
_LAST_DELIMITER = re.compile(f".*[{_DELIMITERS}]", re.S)  # .match: linear, from the right end
_LAST_URL_DELIMITER = re.compile(f".*[{_URL_DELIMITERS}]", re.S)
# `@`, or `%40` as URLs carry it (`%2540` once more encoded, and so on), or `\u0040` as JSON escapes it (`\\u0040`
# in the repr of such a text: every backslash before it belongs to the escape).
# \uff20: the full-width ＠ of CJK input methods; \ufe6b: small ﹫
_AT = re.compile(r"[@\uff20\ufe6b]|%(?:25)*40|(?<!\\)\\+u0040")  # a backslash run read from its start only
_LITERAL_ATS = ("@", "\uff20", "\ufe6b")
_JSON_AT = "\\u0040"
_ENCODED_AT = re.compile(r"%(?:25)*40")
# A local part is at most 64 octets; quoted, escaped or percent-encoded (twice) it can be ~1000 characters.
_QUOTED_MAX = 1024
_CLIP_MARGIN = 4 * _QUOTED_MAX
_SPACED_WORD_MAX = 253  # the word before a spaced comment looked at: past it, no SMTP word or IPv4 address
_OPENING = "'`/"  # a quote or URL slashes right before the name are kept: `'alice@x'`, `http://bob@host`


def might_hold_address(text: str) -> bool:
    """Cheap test run on every log line: does `text` hold an `@`, literal or percent-encoded?"""
    return "@" in text or "\uff20" in text or "\ufe6b" in text or _JSON_AT in text or (
        "%" in text and _ENCODED_AT.search(text) is not None)


def _backslashes(text: str, end: int) -> int:
    """How many backslashes come right before `end`."""
    n = end
    while n > 0 and text[n - 1] == "\\":
        n -= 1
    return end - n


def _closes_at(text: str, opening: int, closing: int) -> bool:
    """Does the quoted string opened at `opening` end at `closing` (honouring `\\x` escapes)?"""
    i = opening + 1
    while i < closing:
        c = text[i]
        if c == '"':
            return False
        i += 2 if c == "\\" else 1
    return i == closing


def _quoted_start(text: str, closing: int) -> int | None:
    """Start of the quoted local part (`"john doe"`) whose closing quote is at `closing`, or None.

    Raw, the opening quote is unescaped and the string parses (`\\x` escapes) up to `closing`. Escaped once
    or more, as JSON or repr text quoted into a message (`\\"john doe\\"@x`), each level doubles the
    backslashes: the opening quote has 2**level - 1 before it, which the closing quote's count tells.
    Both stay on one line.
    """
    k = _backslashes(text, closing)
    want = ((k + 1) & -(k + 1)) - 1  # 0 raw, 1 escaped once, 3 twice...
    low = max(0, closing - _QUOTED_MAX)  # (a line end looked for back to there only: from 0, a long line of
    floor = max(low, text.rfind("\n", low, closing) + 1)  # quoted local parts cost quadratic time, 24 s at 4 MB)
    doubled = _doubled_start(text, closing, floor) if not want else _doubled_escaped_start(text, closing, floor, want)
    j = closing - k
    for _ in range(32):
        found = _quote_before(text, floor, j)
        if found is None:
            break
        j, n = found
        if want and n == want:
            return j - n if doubled is None else min(j - n, doubled)
        if not want and n % 2 == 0 and _closes_at(text, j, closing):
            return j if doubled is None else min(j, doubled)
    return doubled


def _quote_before(text: str, floor: int, end: int) -> tuple[int, int] | None:
    """The last quote in text[floor:end] and the backslashes right before it; None when there is none."""
    q = text.rfind('"', floor, end)
    return None if q < 0 else (q, _backslashes(text, q))


def _doubled_escaped_start(text: str, closing: int, floor: int, level: int) -> int | None:
    """`_doubled_start` for such a field's text escaped as JSON or repr text escapes it (each quote after `level`
    backslashes: a daemon's JSON error quoting a bad CSV line): before the closing pair, the first pair of quotes at
    that level opens the name. A quote escaped deeper belongs to the name (its own `\\"`, doubled: the second quote
    of the pair at the level, the first deeper), and is looked through; so are the backslashes a name ends with (its
    own `\\\\`, each escaped as the quotes are: 2 * (level + 1) before the closing pair's first quote)."""
    unit = level + 1
    first = closing - unit
    trailing = _backslashes(text, first) - level if first >= floor else -1
    if first < floor or text[first] != '"' or trailing < 0 or trailing % (2 * unit):
        return None
    end = first - level - trailing
    for _ in range(32):
        found = _quote_before(text, floor, end)
        if found is None:
            return None
        q, n = found
        if n != level:  # escaped deeper: inside the name
            end = q - n
            continue
        before = q - unit
        if before < floor or text[before] != '"':
            return None  # a lone quote: no CSV field's text
        m = _backslashes(text, before)
        if m == level:
            return before - level
        if m < level:
            return None
        end = before - m  # the name's own escaped quote, doubled
    return None


def _doubled_start(text: str, closing: int, floor: int) -> int | None:
    """Start of a quoted local part written inside a CSV field, where every quote is doubled (RFC 4180: the name
    between two pairs of quotes), whose closing pair ends at `closing`; None unless it reads that way. Inside, a
    quote is a pair after a backslash (the local part's own escape); the opening pair is the last two quotes of the
    first run of two or more before it (three when the name starts the field: the field's quote, then the pair)."""
    if closing < 1 or text[closing - 1] != '"' or _backslashes(text, closing - 1) % 2:
        return None
    j = closing - 1
    for _ in range(32):
        j = text.rfind('"', floor, j)
        if j < 0:
            return None
        run = j
        while run > floor and text[run - 1] == '"':
            run -= 1
        if j - run < 1:
            return None  # a lone quote: no CSV field's text
        if not _backslashes(text, run) % 2:
            return j - 1
        j = run
    return None


_HOST = re.compile(f"[^{_DELIMITERS}/]*")
"""An address's domain after a literal `@`: up to a delimiter or a `/` (`<bob@x.org>`, `/bob@x.org/`)."""
_DOMAIN_END = "'`"  # no domain holds a quote: `'alice@x.org'` keeps its closing one
_URL_DOMAIN_END = _DOMAIN_END + "=&?#"


def _literal(sign: str) -> bool:
    """Is `sign` (an `_AT` match) an `@` of plain or JSON text, rather than a URL's `%40`?"""
    return sign[0] != "%"


class _Openings:
    """`_comment_open`'s results, closing -> opening (-1: none found), one table per way of reading quoted pairs
    (`_read_comment`), kept for the window before the `@` at hand only (a line of `)@)@...` would otherwise keep one
    per `)`)."""

    __slots__ = ("found", "order")

    def __init__(self) -> None:
        self.found: tuple[dict[int, int], dict[int, int]] = ({}, {})
        self.order: deque[int] = deque()

    def remember(self, closing: int, as_written: int | None, doubled: int | None) -> None:
        """Keep the results for `closing`, and drop up to two for a `)` a window before it: no later scan, which
        starts further right, goes back there."""
        self.found[0][closing] = -1 if as_written is None else as_written
        self.found[1][closing] = -1 if doubled is None else doubled
        self.order.append(closing)
        for _ in range(2):
            if not self.order or self.order[0] >= closing - _QUOTED_MAX:
                break
            old = self.order.popleft()
            self.found[0].pop(old, None)
            self.found[1].pop(old, None)


def _read_comment(text: str, closing: int, stop: int, found: dict[int, int], doubled: bool) -> int | None:
    """Where the comment closed at `closing` opens, read leftwards: a parenthesis after an odd run of backslashes is a
    quoted pair's (RFC 5322: text), or, `doubled`, after any run (the text escaped once more, as JSON or repr text
    quotes a line: `alice(x\\)y)@x` is written `alice(x\\\\)y)@x`). None when not found after `stop`, on the line.

    `found` holds this reading's earlier results (closing -> opening, -1 when none), of scans whose `stop` only grows:
    a comment met inside this one is passed over whole, and one not opened ends this one too (it could only open
    further left), so each character is read about once, not once per `@` of a line of `(((...)@)@)@` or `)@)@...`."""
    depth = 0
    j = closing
    while j >= stop:
        c = text[j]
        if c == ")" or c == "(":
            quoted = stop < j < closing and text[j - 1] == "\\"
            if quoted and not doubled:
                n = j - 1
                while n > stop and text[n - 1] == "\\":
                    n -= 1
                quoted = (j - n) % 2 == 1
            inner = found.get(j) if c == ")" and j < closing else None
            if inner is not None:  # read before, from there: passed over to its `(`
                if inner < stop:
                    return None
                j = inner
                if quoted:  # this `)` is text here: its `(` is one more
                    depth -= 1
                    if not depth:
                        return j
            elif quoted:
                pass
            elif c == ")":
                depth += 1
            else:
                depth -= 1
                if not depth:
                    return j
        elif c == "\n":
            return None
        j -= 1
    return None


def _comment_open(text: str, closing: int, stop: int, known: _Openings) -> int | None:
    """Where the RFC 5322 comment closed at `closing` opens: nested comments and quoted pairs (`\\(`, `\\)`) inside
    it honoured, an `@` in it passed over (`alice(a@b)@x`). None when its `(` is not found after `stop`, on the line.

    With a backslash about, quoted pairs are read both as written and as escaped once more (JSON or repr text), and
    the opening further left is taken: the one reading's `\\\\(` is the other's quoted pair, and the nearer `(` would
    show the name (`alice(x\\\\(y)@x`, `alice(x\\(y)@x` in repr). Failing both, a `\\(` right before with no `)`
    between (`bob\\()@x`) opens it: no quoted pair outside a comment, and the name before it goes. Linear over a line:
    see `_read_comment`."""
    i = text.rfind("(", stop, closing)
    if i < 0:  # (not remembered: a later comment holding this `)` finds no `(` either, and is remembered)
        return None
    if text.find("\\", stop, closing) < 0:  # both readings agree
        if text.find(")", i + 1, closing) < 0 and text.find("\n", i, closing) < 0:  # one comment, nothing nested
            opening: int | None = i
        else:
            opening = _read_comment(text, closing, stop, known.found[0], False)
        known.remember(closing, opening, opening)
        return opening
    as_written = _read_comment(text, closing, stop, known.found[0], False)
    doubled = _read_comment(text, closing, stop, known.found[1], True)
    known.remember(closing, as_written, doubled)
    if as_written is None or doubled is None:
        opening = doubled if as_written is None else as_written
    else:
        opening = min(as_written, doubled)
    if opening is None and text.find(")", i + 1, closing) < 0 and text.find("\n", i, closing) < 0:
        return i
    return opening


def _comments_before(text: str, at: int, known: _Openings) -> tuple[int, int, bool]:
    """(name_end, first, unopened) for the comments right before `at` (an `@`), which go with the name before them.

    RFC 5322 allows comments and whitespace (CFWS) around a local part's atoms: `alice(a)(b)@x`, `alice (home)@x`.
    `first` is where the first comment opens (`at` when no `)` is right before it), `name_end` where the name ends:
    `first`, or before the whitespace ahead of it when a word is there (not a delimiter: `<alice> (x)@y` is a comment
    alone; see `_spaced_name`). `unopened`: a `)` whose `(` is not found ends the run there (`x)@y`), and the name
    before it goes. All within `_QUOTED_MAX` before `at`."""
    stop = max(0, at - _QUOTED_MAX)
    pos = at
    ws = at
    while pos > stop and text[pos - 1] == ")":
        opening = _comment_open(text, pos - 1, stop, known)
        if opening is None:
            return pos - 1, pos - 1, True
        pos = ws = opening
        while ws > stop and text[ws - 1] in " \t":
            ws -= 1
        if ws < pos and ws > stop and text[ws - 1] == ")":  # another comment: `alice(a) (b)@x`
            pos = ws
    if ws < pos and ws > stop and (text[ws - 1] == '"' or _LAST_DELIMITER.match(text, ws - 1, ws) is None):
        return ws, pos, False  # (`.match` over one character: is it a delimiter)
    return pos, pos, False


def _spaced_name(word: str) -> bool:
    """Is `word`, parted by whitespace from the comments before an `@`, their address's name (True), or is the address
    the comments alone (False)?

    An SMTP word (`MAIL (FROM)@x`) or an IPv4 address with a note (`1.2.3.4 (mx)@y`) is no name: taken as one, it
    would be redacted all over the line. Any other word is the local part, however it looks (`alice (home)@x`,
    `JOHN (x)@y`, `wei.li (Wei Li)@gmail.com`: a name shaped like a host name is a name too)."""
    if word in _PROTOCOL_WORDS:
        return False
    labels = word.split(".")
    return not (len(labels) == 4 and all(label.isascii() and label.isdigit() for label in labels))


_PROTOCOL_WORDS = frozenset({"MAIL", "RCPT", "FROM", "TO", "HELO", "EHLO", "DATA", "VRFY", "EXPN", "AUTH", "BDAT",
                             "NOTIFY", "ORCPT", "ENVID", "RET", "SIZE", "BODY", "XCLIENT", "XFORWARD"})
"""SMTP commands and parameters (RFC 5321, 3461, 1870, 6152), in capitals as a session transcript writes them."""


def _tld_like(label: str) -> bool:
    """Is `label` a common or a two-letter country top-level domain?"""
    return label in _COMMON_TLDS or (len(label) == 2 and label.isascii() and label.isalpha())


def _near_delimiter(last: re.Pattern[str], text: str, floor: int, end: int) -> re.Match[str] | None:
    """`last.match(text, floor, end)`, looked for in windows growing leftwards from `end`: it costs about the length
    of the name before `end`, not the distance to `floor` (the names before comments holding an `@` can all lie
    far from the `@` before them: `((((...(a@)@)@)@`)."""
    size = 16
    while True:
        low = max(floor, end - size)
        d = last.match(text, low, end)
        if d or low == floor:
            return d
        size *= 4


def _local_spans(text: str, names: list[tuple[int, int]] | None = None) -> list[tuple[int, int]]:
    """(start, end) of each local part in `text`, merged where they overlap; `end` is where its `@` is. `names`, when
    given, gets (start, end) of the name before each one's comments (`alice` of `alice (home)@x`), and of the local
    parts such a local part swallowed (`bob` of `alice(bob@b)@x`): the names a line may show on their own.

    The comments right before the `@` (`alice(home)@x`, `alice(a) (b)@x`, `<(home)@x>`) belong to the local part: they
    go with the name before them (a comment is free text, and the `)` would otherwise end an empty local part), unless
    a space parts them from an SMTP word or an IPv4 address (`MAIL (FROM)@x`: the comments alone), see `_spaced_name`.

    Each character is looked at a bounded number of times, so a line of `%40%40...` or `a@a@...` costs
    linear time: a literal `@` looks left up to the previous literal one (a delimiter anyway), a `%40`
    up to the previous match, continuing the previous `%40`'s run when nothing separates them; comments are looked
    for within `_QUOTED_MAX`, each once (`_comment_open`), and a name before one holding an `@` from the `@` before it.
    """
    spans: list[tuple[int, int]] = []
    after_at = 0  # the end of the previous literal `@`
    prev_end = 0  # the end of the previous match, literal or encoded
    run: int | None = None  # where the previous `%40`'s unbroken run began
    literal_ends: list[int] = []  # the ends of the literal `@`s so far, and of all matches: for a name before a
    match_ends: list[int] = []  # comment that holds an `@` (`alice(a@b)@x`), the `@` before it
    known = _Openings()
    held: list[list[tuple[int, int]]] = []  # with each span, the unmerged local parts it holds not named yet
    for m in _AT.finditer(text):
        at = m.start()
        literal = _literal(m.group())
        last, floor = (_LAST_DELIMITER, after_at) if literal else (_LAST_URL_DELIMITER, prev_end)
        name_end, first, unopened = at, at, False  # the name ends before the comments, which go with it
        if at and text[at - 1] == ")":
            name_end, first, unopened = _comments_before(text, at, known)
        crossed = name_end < floor  # a comment holding an `@`: the name is looked for from the `@` before it
        if crossed:
            ends = literal_ends if literal else match_ends
            k = bisect_right(ends, name_end)
            floor = max(ends[k - 1] if k else 0, name_end - _QUOTED_MAX)
        if name_end > 0 and text[name_end - 1] == '"':
            start = _quoted_start(text, name_end - 1)
            if start is None:  # its opening quote is not on the line: the name before the quote goes
                end = name_end - 1 - _backslashes(text, name_end - 1)
                d = _near_delimiter(last, text, floor, end) if crossed else last.match(text, floor, end)
                start = d.end() if d else floor
                if start >= end:
                    start = name_end
            run = None
        else:
            d = _near_delimiter(last, text, floor, name_end) if crossed else last.match(text, floor, name_end)
            if d:
                start = d.end()
            else:
                start = floor if literal or run is None or crossed else run
            while start < name_end and text[start] in _OPENING:
                start += 1
            run = None if literal else start
            if name_end < first:  # a word, whitespace, the comments: `alice (home)@x`, `MAIL (FROM)@x`
                if start >= name_end or not _spaced_name(text[start:name_end]):
                    start = first  # the comments alone
        prev_end = m.end()
        match_ends.append(prev_end)
        if literal:
            after_at = prev_end
            literal_ends.append(prev_end)
        if start >= at or (unopened and start >= name_end):
            continue
        commented = name_end < at
        if commented and names is not None and 0 < name_end - start <= _QUOTED_MAX:  # (longer: no local part, a run
            names.append((start, name_end))  # of `)%40)%40...` carried on from the line's start)
        own = [(start, at)] if at - start <= _QUOTED_MAX else []
        while spans and spans[-1][1] > start:  # a quoted local part, or a comment, holding an `@` covers the one before
            swallowed = spans.pop()
            parts = held.pop()
            if commented and names is not None:  # each unmerged one, once: the merged spans grow with a line of
                names += parts  # `)%40)%40...`, and naming each (sliced, read) cost quadratic time and memory
            elif len(parts) > len(own):  # carried on, the smaller list into the larger: linear
                parts += own
                own = parts
            else:
                own += parts
            start = min(start, swallowed[0])
        spans.append((start, at))
        held.append(own)
    return spans


def redact(text: str) -> str:
    """`text` with the local part of every e-mail address replaced by `[redacted]`, the domain kept.

    An address is whatever is left of an `@` (or of `%40`, `%2540`...) up to a delimiter: Unicode, quoted
    or percent-encoded local parts and any domain, dotless or IDN, even none at all (a line cut right
    after the `@`). A word right before an `@` is redacted even when it was no address (`pkg@1.2`): the
    cost of that is a less readable line, the cost of the opposite a leaked name.
    """
    if not might_hold_address(text):
        return text
    return _replace_spans(text, _local_spans(text))


def _replace_spans(text: str, spans: list[tuple[int, int]]) -> str:
    if not spans:
        return text
    out: list[str] = []
    pos = 0
    for start, end in spans:
        out.append(text[pos:start])
        out.append(REDACTED)
        pos = end
    out.append(text[pos:])
    return "".join(out)


# --- bare local parts (log lines only) ---------------------------------------------------------------------------

BARE_MIN = 3
"""A local part is looked for on its own (`<ivan.bare>`) when at least this long: the store's rule for the recipient's
bare local part in a reply (correlator.linking.LOCAL_PART_MIN)."""
_SOFT = "'`=&?#\\/"
"""Inside a run of local-part characters, what may quote, escape or separate a name (`'bob'`, `\\"bob\\"`, `u=bob`,
`/var/mail/bob`): a piece between them (or between full stops, `..`) is compared on its own as well. A slash too: a
mailbox path names its owner (`cannot update mailbox /var/mail/ivan.bare`), so a directory named like a local part in
the same line is redacted as well. The file a bad-line warning names is not at risk: its sample is redacted before the
line is formatted (`Clipped.redacted`), and what the second pass then finds holds no local part."""
_EDGES = ".'`\\"  # stripped from both ends of a run (a full stop, a quote, an escape) before it is compared
_TOKEN = re.compile(f"[^{_DELIMITERS}]+")
"""A run of characters that may belong to a local part (everything but `_DELIMITERS`): a bare copy is a whole run
(or a whole piece of one), never part of a longer word. Each character is read once."""
_PIECE = re.compile(r"(?:[^'`=&?#\\/.]|\.(?!\.))+")
"""A piece of a run: between `_SOFT` characters and runs of full stops (`ivan.bare...User`: no local part holds two)."""
_LOOSE_MAX = 8  # local parts holding a delimiter (`"john doe"`), each looked for with one scan of the text
_FORMS_PREFILTER = 64  # up to this many local parts, each is looked for in the text (C scans) before the run scan


_COMMON_TLDS = frozenset({"com", "net", "org", "edu", "gov", "mil", "int", "info", "biz", "name", "mobi", "io"})


def _verp_domain(local: str, piece: str) -> bool:
    """Is `piece`, the last piece of `local`, a VERP sender's recipient domain: after a `=` that follows a `+`
    (`bounces+u=example.com`), and a dotted name whose last label is a common or a two-letter country top-level domain?
    A line shows that domain anyway (after its `@`, in a queue name `example.com/vmta1`). Without the `+` it is a
    name (`rcpt=wei.li`), however it ends."""
    before, eq, _ = local.rpartition("=")
    if not eq or "+" not in before:
        return False
    head, dot, tld = piece.strip(".").rpartition(".")
    return bool(dot and head) and _tld_like(tld)


def _bare_forms(local: str) -> set[str]:
    """The lower-case forms of a local part (the text before an `@`, as `_local_spans` found it) that a message may
    quote on their own: as written, without its quotes, percent-decoded, and its last piece after a `=` or a quote
    (`rcpt=bob@x`), unless that piece reads as a domain (`_verp_domain`: in a VERP sender, `bounces+u=example.com@x`,
    it is the recipient's domain, which a line shows anyway). None for one ending with a comment (`alice(home)`):
    the name before it is looked for (`_local_spans` gives it), the comment is no name (`MAIL (FROM)@x` had `from`
    redacted all over the line)."""
    if local.endswith(")"):
        return set()
    forms: set[str] = set()
    texts = [local, unquote(local)] if "%" in local else [local]
    for t in texts:
        t = t.strip(_EDGES + '"').lower()
        forms.add(t)
        last = _PIECE.findall(t)
        if last and (last[-1] == t or not _verp_domain(t, last[-1])):  # VERP: `bounces+u=example.com`
            forms.add(last[-1].strip("."))
    forms.discard(REDACTED.strip("[]"))
    return {f for f in forms if len(f) >= BARE_MIN}


def _bare_in_run(run: str, forms: set[str]) -> str:
    """`run` (a `_TOKEN` match) with itself, or each piece of it, redacted where it is one of `forms`."""
    core = run.strip(_EDGES)
    if core.lower() in forms:
        i = len(run) - len(run.lstrip(_EDGES))
        return run[:i] + REDACTED + run[i + len(core):]
    if ".." not in run and not any(c in run for c in _SOFT):
        return run
    out: list[str] = []
    pos = 0
    for p in _PIECE.finditer(run):
        piece = p.group()
        core = piece.strip(".")
        if len(core) >= BARE_MIN and core.lower() in forms:
            i = p.start() + len(piece) - len(piece.lstrip("."))
            out += (run[pos:i], REDACTED)
            pos = i + len(core)
    if not out:
        return run
    out.append(run[pos:])
    return "".join(out)


def _joins(c: str) -> bool:
    """Would `c`, next to a name, make it a longer word (a local part's character other than a full stop)?"""
    return c.isalnum() or c in "!#$%&*+-=?^_{|}~"


def _without_loose(text: str, form: str) -> str:
    """`text` with each whole-word occurrence of `form` (lower case, holding a delimiter: `john doe`) redacted."""
    low = text.lower()
    if len(low) != len(text):  # lowering changed the length: looked for as written in the text instead
        low = text
    out: list[str] = []
    pos = at = 0
    while (i := low.find(form, at)) >= 0:
        at = i + len(form)
        if (i == 0 or not _joins(text[i - 1])) and (at == len(text) or not _joins(text[at])):
            out += (text[pos:i], REDACTED)
            pos = at
    if not out:
        return text
    out.append(text[pos:])
    return "".join(out)


def _without_bare(text: str, forms: set[str]) -> str:
    """`text` (redacted already) with every whole-token occurrence of `forms` redacted. Linear: one scan of the runs
    (a set lookup each), plus one scan per local part holding a delimiter (at most `_LOOSE_MAX`)."""
    forms = {f for f in forms if f}
    loose = sorted(f for f in forms if _TOKEN.fullmatch(f) is None)[:_LOOSE_MAX]
    for form in loose:
        text = _without_loose(text, form)
    if len(forms) <= _FORMS_PREFILTER:
        low = text.lower()
        if not any(f in low for f in forms):
            return text

    def one(m: re.Match[str]) -> str:
        if m.start() and text[m.start() - 1] in _LITERAL_ATS:  # a domain
            return m.group()
        return _bare_in_run(m.group(), forms)

    return _TOKEN.sub(one, text)


def redact_log_text(text: str, extra: Iterable[str] = ()) -> str:
    """`redact(text)`, and then every bare occurrence of those addresses' local parts (and of `extra`: lower-case
    local parts found elsewhere) as a whole token: `ivan.bare@gmail.com ... <ivan.bare>` is logged as
    `[redacted]@gmail.com ... <[redacted]>`. What the log filter applies: a reply quotes the recipient's local part
    alone (`550 5.1.1 <ivan.bare>... User unknown`) next to the line's rcpt column. A local part is looked for on its
    own when at least `BARE_MIN` characters long, as a run of local-part characters (or a piece of one between `=`,
    quotes or slashes, `?u=ivan.bare`), ending full stops aside, in any case: `ivanhoe`, `ivan-b` or `b.ivan` are
    other words than `ivan`. A domain (the run after an `@`) is never touched."""
    forms = set(extra)
    spans: list[tuple[int, int]] = []
    if might_hold_address(text):
        names: list[tuple[int, int]] = []
        spans = _local_spans(text, names)
        for local in {text[start:end] for start, end in spans} | {text[start:end] for start, end in names}:
            forms |= _bare_forms(local)
    text = _replace_spans(text, spans)
    return _without_bare(text, forms) if forms else text


def _shown_tokens(text: str) -> set[str]:
    """The lower-case runs and pieces of `text` (a shown cut: short) that could be a local part."""
    found: set[str] = set()
    for m in _TOKEN.finditer(text):
        run = m.group()
        found.add(run.strip(_EDGES).lower())
        if ".." in run or any(c in run for c in _SOFT):
            found.update(p.strip(".").lower() for p in _PIECE.findall(run))
    found.discard(REDACTED.strip("[]"))
    return {f for f in found if len(f) >= BARE_MIN}


def _local_parts_among(candidates: set[str], text_at: str) -> set[str]:
    """Those of `candidates` written right before an `@` somewhere in `text_at` (lower case, every `@` sign made `@`,
    closing quotes before it dropped): one C scan each. What comes before them is not looked at (`poweruser@x`
    makes `user` one): the price is a word redacted too many, never a name kept."""
    return {c for c in candidates if c + "@" in text_at}


def cut_point(text: str, limit: int) -> int:
    """Where to cut `text` to at most `limit` characters without splitting a local part from its `@`.

    A line cut first and redacted later (the redacting log handler formats it) would show a local part's head with
    no `@` left to recognise it by: the cut moves back to where that local part starts. Only the first
    `limit + _CLIP_MARGIN` characters are looked at (a longer local part is no real one)."""
    if len(text) <= limit:
        return len(text)
    head = text[: limit + _CLIP_MARGIN]
    for start, at in _local_spans(head):
        sign = _AT.match(head, at)  # `@`, or `%40`, `%2540`...: a cut inside an encoded one splits it as well
        if start < limit < (sign.end() if sign else at + 1):
            return start
    return limit


def clip(text: str, limit: int) -> str:
    """`text` cut to at most `limit` characters at `cut_point`, `...` after it when cut: for a text quoted in a log
    line or an error, which the log handler redacts later."""
    end = cut_point(text, limit)
    return text if end >= len(text) else text[:end] + "..."


def without_address(text: str, address_l: str, mark: str = "<rcpt>") -> str:
    """`text` with every occurrence of `address_l` (lower case), in any case, replaced by `mark`. Linear.

    Found in the lowered text, cut from the original: lowering can change a text's length ("İ" becomes two
    characters, and every one before the address would shift the cut, leaving the address's first letters), so
    outside ASCII each lowered character maps back to the original one it came from. A final sigma is compared as
    any sigma (`_sigma`): lowered, `Σ` is `ς` or `σ` by the letters around it, which differ in a text and alone."""
    low, address_l = _sigma(text.lower()), _sigma(address_l)
    if not address_l or address_l not in low:
        return text
    origin = None
    if len(low) != len(text):
        origin = [i for i, char in enumerate(text) for _ in char.lower()]
        origin.append(len(text))
    spans, at = [], 0
    while (i := low.find(address_l, at)) >= 0:
        at = i + len(address_l)
        spans.append((i, at) if origin is None else (origin[i], origin[at - 1] + 1))
    return _replaced(text, spans, mark)


def _replaced(text: str, spans: list[tuple[int, int]], mark: str) -> str:
    """`text` with each of `spans` (in order, none overlapping) replaced by `mark`."""
    out, last = [], 0
    for begin, end in spans:
        out += (text[last:begin], mark)
        last = end
    out.append(text[last:])
    return "".join(out)


def without_recipient(text: str, rcpt_l: str, mark: str = "<rcpt>") -> str:
    """`text` with the recipient's address (`rcpt_l`, lower case) replaced by `mark`, in any case, as written and in
    its VERP form (`bounces+alice=gmail.com@lists.example` encodes `alice@gmail.com` as `alice=gmail.com`). A reply
    loses it so (then every other address as `<addr>`: correlator.linking)."""
    if not text or "@" not in rcpt_l:  # a recipient logged without `@` (`ab`) is no address to look for
        return text
    text = without_address(text, rcpt_l, mark)
    local, at, domain = rcpt_l.rpartition("@")
    return without_address(text, f"{local}={domain}", mark) if at and local and domain else text


def key_without_recipient(text: str, rcpt_l: str, kind: str = "sender") -> str:
    """What the correlator keeps of a sender, a Message-Id or a jobId (`kind`: sender, message_id, job_id) when
    recipients are hashed: `without_recipient`, and the address (or its VERP form) with any of its characters
    percent-encoded (`alice%40gmail.com`, `alice%2Btag@gmail.com`: review 2026-12-07), as `<rcpt>`; then a key's
    other addresses (`key_without_addresses`: one Message-Id sent to many recipients may hold one of theirs). The
    rest stays (they are keys a page links by), and the same recipient gives the same text (the report fallback
    compares senders; the API echoes a caller's key so)."""
    if not text:
        return text
    local, at, domain = rcpt_l.rpartition("@")
    if "%" in text and at:  # written with escapes or not (a literal pass first found one inside an escape: `%31a`)
        forms = (rcpt_l, f"{local}={domain}") if local and domain else (rcpt_l,)
        for layers in range(1, ESCAPE_LAYERS + 1):  # encoded once, then again (`alice%2540gmail.com`): a layer at a
            if layers > 1 and "%25" not in text:  # time, `%25de` being also an address's own `%de` encoded once
                break  # (`alice%de.example@relay`)
            text = _without_encoded(text, forms, layers=layers)
    # then as written: a `%` before the address (`x.%12345@qq.com`) or of its own (`alice%de.example@relay`, the
    # percent hack) decoded as an escape no longer reads as the address
    text = without_recipient(text, rcpt_l)
    return key_without_addresses(text, kind)


_VERP_EQUALS = re.compile(r"=|%(?:25)*3[dD]")
"""The `=` of a VERP form (`alice=gmail.com`), written or percent-encoded (once or more: `%3D`, `%253D`)."""
_DOMAIN_RUN = re.compile(r"[\w.-]++")
"""The characters a domain after a VERP form's `=` may be made of, as one run (it ends at the next `=`)."""
_TOP_LEVEL = re.compile(r"[^\W\d_]{2,63}(?![^\W\d_])|xn--")
"""A top-level domain of letters (what follows it is no letter of it: `com.77`, `com-1`, `com_1`, `com1`), or an
IDN's `xn--`."""


def _domain_follows(text: str, pos: int) -> bool:
    """Whether a domain starts at `pos` (after a VERP form's `=`): labels, then a top-level domain (`_TOP_LEVEL`),
    whatever follows it (`alice=gmail.com.77@`). Looked at in Python, label by label, over one run: linear (a
    pattern of nested repeats could try each split of a long run)."""
    run = _DOMAIN_RUN.match(text, pos)
    if run is None:
        return False
    labels = run.group().split(".")
    for i in range(1, len(labels)):
        before = labels[i - 1]
        if not before or not before[0].isalnum() or not before[-1].isalnum():  # a label starts and ends with a letter
            return False  # or digit (`=_Part_1.JavaMail.app@`, a MIME boundary's form, is no domain)
        if _TOP_LEVEL.match(labels[i]):
            return True
    return False


def _run_start(text: str, floor: int, end: int) -> int:
    """Where the run of local-part characters ending at `end` starts: after the last delimiter before it, or at
    `floor` (a run goes back no further: each scan stays in its own stretch of the text, linear in all)."""
    stop = _LAST_DELIMITER.match(text, floor, end)
    return stop.end() if stop is not None else floor


def _without_verp_forms(text: str) -> str:
    """`text` with the local part of every VERP form of an address in it (`alice=gmail.com`, `alice%3Dgmail.com`) as
    `[redacted]`: the whole run before its `=` up to a delimiter (`_DELIMITERS`: an unknown character, a combining
    mark, `’`, belongs to the local part) or the VERP form before it (where a prefix such as `bounce+` ends is not
    known; an `=` of a local part, `john=doe=gmail.com`, is in the run). Each `=` is looked at once, forwards to its
    domain's end, and each run back no further than the form before it: linear in `text` (a scan back past earlier
    `%3D`s was quadratic: 40 s for 100 kB)."""
    spans: list[tuple[int, int]] = []
    floor = 0
    for equals in _VERP_EQUALS.finditer(text):
        if _domain_follows(text, equals.end()):
            begin = _run_start(text, floor, equals.start())
            if begin < equals.start():
                spans.append((begin, equals.start()))
            floor = equals.end()
    return _replaced(text, spans, REDACTED) if spans else text


_RCPT_MARK = "<rcpt>"


def _whole_recipient_marks(text: str) -> str:
    """`text` (a Message-Id) with the run before each `<rcpt>` back to a delimiter taken into it:
    the row's recipient found inside a longer address (`smith@gmail.com` in `x.john.smith=gmail.com`) left the rest
    of that one (`x.john.<rcpt>`: review 2026-12-07). Linear: each run back no further than the mark before it."""
    spans: list[tuple[int, int]] = []
    floor = 0
    while (mark := text.find(_RCPT_MARK, floor)) >= 0:
        begin = _run_start(text, floor, mark)
        if begin < mark:
            spans.append((begin, mark))
        floor = mark + len(_RCPT_MARK)
    return _replaced(text, spans, "") if spans else text


def key_without_addresses(text: str, kind: str) -> str:
    """A key's addresses other than its recipient's, local parts as `[redacted]`: any in a jobId, those before a
    Message-Id's own last `@` (`alice@x.example.77@shop` is served `[redacted]@x.example.77@shop` on the timelines of
    its other recipients, whose address the row does not know), and in the whole Message-Id every VERP form
    (`x.alice=gmail.com.7@shop` as `[redacted]=gmail.com.7@shop`) and the run before the row's `<rcpt>` (reviews
    2026-12-07). A sender's own local part is the sender: kept."""
    if kind == "job_id":
        return redact(text)
    if kind == "message_id":
        left, at, right = text.rpartition("@")
        if at and might_hold_address(left):
            text = redact(left) + at + right
        if "=" in text or "%" in text:  # (anywhere: a Message-Id logged without `@`, or one after it)
            text = _without_verp_forms(text)
        if _RCPT_MARK in text:
            text = _whole_recipient_marks(text)
    return text


ESCAPE_LAYERS = 4
"""Percent-encodings of a key's recipient undone at most, each looked at (`%40`, `%2540`, ... `%25252540`): a form
encoded again in each URL it passed through. A bound: each layer is another pass over the key."""


def _without_encoded(text: str, forms: tuple[str, ...], mark: str = "<rcpt>", layers: int = 1) -> str:
    """`text` with each of `forms` (lower case, as `str.lower` writes them) replaced by `mark` where it is written with
    any of its characters percent-encoded (`alice%2Btag%40x.example`, `jos%C3%A9%40x.example`; escapes in either
    case, letters too: `%41lice`), `layers` times (`%2540` is `@` at 2). The text is decoded (`_decoded`, a layer at a
    time) and lowered, each resulting character keeping where its source began, and the forms are found in that:
    linear in the text, whatever the forms are."""
    chars, begins = _decoded(text)
    for _ in range(layers - 1):
        chars, where = _decoded("".join(chars))
        begins = [begins[k] for k in where]
    raw = "".join(chars)
    low = raw.lower()
    if len(low) != len(raw):  # a character lowering to more (`İ`): one at a time, each part where its source began
        pairs = [(part, begin) for char, begin in zip(chars, begins, strict=True) for part in char.lower()]
        low, begins = "".join(part for part, _ in pairs), [begin for _, begin in pairs]
    low, forms = _sigma(low), tuple(_sigma(form) for form in forms)
    begins.append(len(text))
    spans: list[tuple[int, int]] = []
    for form in forms:  # in order: a later form's match overlapping an earlier one's is not taken (as the literal
        at, taken, before = 0, [], 0  # pass, which replaces the address before looking for its VERP form)
        while form and (k := low.find(form, at)) >= 0:  # matches in order: the earlier forms' spans walked once
            begin, end = begins[k], begins[k + len(form)]  # (each was checked against all of them: quadratic)
            while before < len(spans) and spans[before][1] <= begin:
                before += 1
            if before == len(spans) or spans[before][0] >= end:
                taken.append((begin, end))
            at = k + len(form)
        spans = sorted(spans + taken)
    return _replaced(text, spans, mark) if spans else text


def _sigma(text: str) -> str:
    """Lowered text with every final sigma as a sigma: `str.lower` writes `Σ` as `ς` at a word's end, and an address
    lowered alone and in a text around it may end its words differently (`b:Σ@x.gr`). One character for one: the
    positions stay."""
    return text.replace("\u03c2", "\u03c3") if "\u03c2" in text else text


def _decoded(text: str) -> tuple[list[str], list[int]]:
    """`text`'s characters with its `%XX` escapes decoded (a run of them as UTF-8: each character from its bytes, a
    byte that starts none as U+FFFD, found in no address), and where each began in `text`."""
    chars: list[str] = []
    begins: list[int] = []
    i, n = 0, len(text)
    while i < n:
        if not _escape_at(text, i, n):
            chars.append(text[i])
            begins.append(i)
            i += 1
            continue
        run: list[tuple[int, int]] = []  # (byte, where its escape began)
        while _escape_at(text, i, n):
            run.append((int(text[i + 1 : i + 3], 16), i))
            i += 3
        j = 0
        while j < len(run):
            size = _utf8_size(run[j][0])
            piece = bytes(b for b, _ in run[j : j + size])
            try:
                char = piece.decode("utf-8") if size and len(piece) == size else None
            except UnicodeDecodeError:
                char = None
            if char is None:  # not the start of a whole character: this byte alone, the next may start one
                char, size = "\ufffd", 1
            chars.append(char)
            begins.append(run[j][1])
            j += size
    return chars, begins


def _utf8_size(lead: int) -> int:
    """How many bytes a UTF-8 character starting with `lead` has (0: no character starts with it)."""
    if lead < 0x80:
        return 1
    if 0xC2 <= lead <= 0xDF:
        return 2
    if 0xE0 <= lead <= 0xEF:
        return 3
    if 0xF0 <= lead <= 0xF4:
        return 4
    return 0


def _escape_at(text: str, i: int, n: int) -> bool:
    """Is a `%XX` escape (two hex digits) at `i`?"""
    return i + 2 < n and text[i] == "%" and text[i + 1] in _HEX and text[i + 2] in _HEX


_HEX = frozenset("0123456789abcdefABCDEF")


ADDRESS = "<addr>"
"""What `without_addresses` puts in place of a whole address (the placeholder of /api/v1/replies' texts)."""


def _domain_end(text: str, start: int, stop: int, literal: bool) -> int:
    """End of the domain that starts at `start` (right after an `@` or `%40`), looked for before `stop`."""
    end = _HOST.match(text, start, stop).end()  # type: ignore[union-attr]  # `*`: always matches
    for c in _DOMAIN_END if literal else _URL_DOMAIN_END:
        k = text.find(c, start, end)
        if k >= 0:
            end = k
    while end > start and text[end - 1] == ".":  # a sentence's full stop is no part of it
        end -= 1
    return end


def without_addresses(text: str, mark: str = ADDRESS) -> str:
    """`text` with every e-mail address, local part and domain, replaced by `mark` (`<addr>`).

    The same addresses `redact` finds (Unicode, quoted, percent-encoded, cut short after the `@`), taken whole: what
    the correlator keeps of a remote reply when recipients are hashed, where the domain of another address than the
    recipient's (a forwarding target) may itself name a person. Linear: each domain is looked for only up to the
    next `@` found."""
    if not might_hold_address(text):
        return text
    ats = [(m.start(), m.end(), _literal(m.group())) for m in _AT.finditer(text)]
    spans = _local_spans(text)
    if not spans:
        return text
    out: list[str] = []
    pos = 0
    i = 0  # the next `@` match not yet passed
    for start, at in spans:
        if at < pos:  # its `@` was in the previous address (`a@b@c`)
            continue
        start = max(start, pos)
        while i < len(ats) and ats[i][0] < at:
            i += 1
        _, after, literal = ats[i]
        stop = ats[i + 1][0] if i + 1 < len(ats) else len(text)
        end = _domain_end(text, after, stop, literal)
        while end == stop and i + 1 < len(ats) and ats[i + 1][0] == stop:  # `a@b@c`: one address to the last `@`
            i += 1
            _, after, literal = ats[i]
            stop = ats[i + 1][0] if i + 1 < len(ats) else len(text)
            end = _domain_end(text, after, stop, literal)
        out.append(text[pos:start])
        out.append(mark)
        pos = end
    out.append(text[pos:])
    return "".join(out)


def _without_comments(text: str) -> str:
    """`text` without the comments right before an `@` (`alice(home)@x`, `alice (a)(b)@x` -> `alice@x`), as
    `_local_spans` takes them (an SMTP word's stays: `MAIL (FROM)@x` -> `MAIL@x`). Linear: each comment is looked
    for once, within `_QUOTED_MAX` (`_comment_open`)."""
    cuts: list[tuple[int, int]] = []
    known = _Openings()
    i = 0
    while (i := text.find(")@", i)) >= 0:
        at = i + 1
        name_end, first, _ = _comments_before(text, at, known)
        i = at + 1
        if name_end < first:
            low = max(0, name_end - _SPACED_WORD_MAX)  # (`_spaced_name`: a longer word is a name anyway)
            d = _LAST_DELIMITER.match(text, low, name_end)
            if not _spaced_name(text[d.end() if d else low:name_end].lstrip(_OPENING)):
                name_end = first
        while cuts and cuts[-1][1] > name_end:  # an `@` in this one's comment (`alice(a(b)@c)@x`)
            name_end = min(name_end, cuts.pop()[0])
        cuts.append((name_end, at))
    out: list[str] = []
    pos = 0
    for start, end in cuts:
        out.append(text[pos:start])
        pos = end
    out.append(text[pos:])
    return "".join(out)


class InContext(str):
    """A text to log that is an excerpt of a longer one, `context` (a `bad_json` line shows the one field of a JSON
    record that holds an array or object; the record is the context): formatted by `RedactFilter` as a `Clipped`, the
    bare local parts of the context's addresses are redacted where the excerpt shows them, as those of a line's
    addresses past its cut are (`Clipped.redacted`). Without the filter (hashing off), it is just the excerpt."""

    context: str

    def __new__(cls, text: str, context: str) -> InContext:
        obj = super().__new__(cls, text)
        obj.context = context
        return obj

    def __reduce__(self) -> tuple[type[InContext], tuple[str, str]]:
        """Pickled and copied with its context (a log record sent to another process)."""
        return InContext, (str(self), self.context)

    def replace(self, old: str, new: str, count: int = -1) -> InContext:  # type: ignore[override]
        """Still an excerpt of its context (the parser puts a lone CR back: `FileParser._error`)."""
        return InContext(str.replace(self, old, new, count), self.context)


class Clipped:
    """A log argument cut to `limit` characters when formatted (at the last `sep` before the limit, if any).

    Cutting first and redacting later could leave half a local part with no `@` to recognise it by:
    `RedactFilter` redacts the text before the cut. Formatted without the filter (hashing off), it is just
    the cut text. `%r` gives the repr of the cut text, `%s` the cut text.
    """

    __slots__ = ("limit", "more", "sep", "text")

    def __init__(self, text: str, limit: int, sep: str = "", more: bool = False) -> None:
        self.text, self.limit, self.sep, self.more = text, limit, sep, more  # more: text was cut already

    def cut(self) -> str:
        """The text, shortened to `limit` characters plus `...` when longer."""
        if len(self.text) <= self.limit and not self.more:
            return self.text
        head = self.text[: self.limit]
        if self.sep and self.sep in head:
            return head.rsplit(self.sep, 1)[0] + self.sep + "..."
        return head + "..."

    def redacted(self) -> Clipped:
        """The same cut of the text with its addresses, and the bare copies of their local parts, redacted
        (`redact_log_text`): what `RedactFilter` formats.

        Only the first `limit + _CLIP_MARGIN` characters are redacted (a bad line can be megabytes): an
        address whose `@` lies beyond would have a local part longer than any real one. The local parts of the
        addresses further on are still looked for among the words shown, in the uncut text (C scans, one per
        word shown): a reply's `<ivan.bare>` before the cut and the rcpt column after it."""
        head = self.text[: self.limit + _CLIP_MARGIN]
        more = self.more or len(head) < len(self.text)
        red = redact_log_text(head)
        context = getattr(self.text, "context", "")  # an excerpt (InContext): the record it was taken from
        if len(head) < len(self.text) or context:
            # An address past that part is not redacted (it is not shown), but a bare copy of its local part before
            # the cut would be (`<ivan.bare>... User unknown,` and the rcpt 6000 characters on): each word shown is
            # looked for right before an `@` in the whole text. Shown again after each change, until stable.
            whole = _AT.sub("@", f"{self.text}\n{context}" if context else self.text)
            if ")@" in whole:  # a comment before the `@` (`alice(home)@x`): the name before it is a local part (as
                whole = _without_comments(whole)  # written: `_spaced_name` reads capitals; before the quotes go:
            whole = whole.replace('\\"@', "@").replace('"@', "@")  # `"alice"(c)@` is then `alice@`)
            whole = whole.lower()
            checked: set[str] = set()
            far: set[str] = set()
            while candidates := _shown_tokens(self._shown_words(red)) - checked:
                checked |= candidates
                found = _local_parts_among(candidates, whole)
                if found:
                    far |= found
                    red = redact_log_text(head, far)
        return Clipped(red, self.limit, self.sep, more)

    def _shown_words(self, text: str) -> str:
        """What `cut` shows of `text` (at most `limit` characters), with the word it may cut into whole."""
        rest = _TOKEN.match(text, self.limit)
        return text[: self.limit] + (rest.group() if rest else "")

    def __str__(self) -> str:
        return self.cut()

    def __repr__(self) -> str:
        return repr(self.cut())


class _RedactedArg:
    """Formats as its object with addresses redacted: for `%.50s`-style arguments, cut while formatting."""

    __slots__ = ("obj",)

    def __init__(self, obj: object) -> None:
        self.obj = obj

    def __str__(self) -> str:
        return redact_log_text(str(self.obj))

    def __repr__(self) -> str:
        return redact_log_text(repr(self.obj))

    def __int__(self) -> int:  # `%d` of an object with __int__
        return int(self.obj)

    def __index__(self) -> int:  # `%x` of one with __index__
        return operator.index(self.obj)

    def __float__(self) -> float:
        return float(self.obj)


# A %-format with a precision (`%.120r`, `%-8.3s`, `%(x).5s`): it cuts an argument before the filter sees it.
_PRECISION = re.compile(r"%(?:\([^)]*\))?[-#0 +]*(?:\d+|\*)?\.")


def _redacted_arg(arg: Any, cutting: bool) -> Any:
    """`arg` redacted before formatting: a Clipped always, the others only when the format cuts (numbers never,
    so `%d` and `%.2f` still work)."""
    if isinstance(arg, Clipped):
        return arg.redacted()
    if not cutting or arg is None or isinstance(arg, numbers.Number):
        return arg
    if isinstance(arg, str):
        return redact_log_text(arg)
    return _RedactedArg(arg)


class RedactFilter(logging.Filter):
    """A handler filter applying `redact_log_text` to each record's final message and traceback text: addresses,
    and the bare copies of their local parts.

    Arguments are redacted before the message is formatted where formatting cuts them (a `Clipped`
    argument, a precision such as `%.120r`): a cut local part no longer has the `@` that marks it.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            self._redact(record)
        except Exception as exc:  # noqa: BLE001 - a record that cannot be formatted (a repr that raises, a missing
            # argument) must neither raise into the code that logged it nor print logging's traceback: one plain line
            record.msg = (f"a log record from {record.name} ({record.module}.py:{record.lineno}) could not be "
                          f"formatted: {type(exc).__name__}")
            record.args, record.exc_info, record.exc_text, record.stack_info = None, None, None, None
        return True

    def _redact(self, record: logging.LogRecord) -> None:
        args = record.args
        if args:
            msg = record.msg
            cutting = isinstance(msg, str) and "%" in msg and _PRECISION.search(msg) is not None
            values = args.values() if isinstance(args, Mapping) else args
            if cutting or any(isinstance(a, Clipped) for a in values):
                if isinstance(args, Mapping):
                    record.args = {k: _redacted_arg(v, cutting) for k, v in args.items()}
                else:
                    record.args = tuple(_redacted_arg(a, cutting) for a in args)
        message = record.getMessage()
        if might_hold_address(message):
            record.msg, record.args = redact_log_text(message), None
        if record.exc_info:
            record.exc_text = redact_log_text(logging.Formatter().formatException(record.exc_info))
            record.exc_info = None
        elif record.exc_text:
            record.exc_text = redact_log_text(record.exc_text)
        if record.stack_info:
            record.stack_info = redact_log_text(record.stack_info)
