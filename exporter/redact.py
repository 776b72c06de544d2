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
from collections.abc import Mapping
from typing import Any

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
# `@`, or `%40` as URLs carry it (`%2540` once more encoded, and so on).
_AT = re.compile(r"[@\uff20\ufe6b]|%(?:25)*40")  # \uff20: the full-width ＠ of CJK input methods; \ufe6b: small ﹫
_LITERAL_ATS = ("@", "\uff20", "\ufe6b")
_ENCODED_AT = re.compile(r"%(?:25)*40")
# A local part is at most 64 octets; quoted, escaped or percent-encoded (twice) it can be ~1000 characters.
_QUOTED_MAX = 1024
_CLIP_MARGIN = 4 * _QUOTED_MAX
_OPENING = "'`/"  # a quote or URL slashes right before the name are kept: `'alice@x'`, `http://bob@host`


def might_hold_address(text: str) -> bool:
    """Cheap test run on every log line: does `text` hold an `@`, literal or percent-encoded?"""
    return "@" in text or "\uff20" in text or "\ufe6b" in text or (
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
    floor = max(0, closing - _QUOTED_MAX, text.rfind("\n", 0, closing) + 1)
    j = closing - k
    for _ in range(32):
        j = text.rfind('"', floor, j)
        if j < 0:
            return None
        n = _backslashes(text, j)
        if want and n == want:
            return j - n
        if not want and n % 2 == 0 and _closes_at(text, j, closing):
            return j
    return None


_HOST = re.compile(f"[^{_DELIMITERS}/]*")
"""An address's domain after a literal `@`: up to a delimiter or a `/` (`<bob@x.org>`, `/bob@x.org/`)."""
_DOMAIN_END = "'`"  # no domain holds a quote: `'alice@x.org'` keeps its closing one
_URL_DOMAIN_END = _DOMAIN_END + "=&?#"


def _local_spans(text: str) -> list[tuple[int, int]]:
    """(start, end) of each local part in `text`, merged where they overlap; `end` is where its `@` is.

    Each character is looked at a bounded number of times, so a line of `%40%40...` or `a@a@...` costs
    linear time: a literal `@` looks left up to the previous literal one (a delimiter anyway), a `%40`
    up to the previous match, continuing the previous `%40`'s run when nothing separates them.
    """
    spans: list[tuple[int, int]] = []
    after_at = 0  # the end of the previous literal `@`
    prev_end = 0  # the end of the previous match, literal or encoded
    run: int | None = None  # where the previous `%40`'s unbroken run began
    for m in _AT.finditer(text):
        at = m.start()
        literal = m.group() in _LITERAL_ATS
        last, floor = (_LAST_DELIMITER, after_at) if literal else (_LAST_URL_DELIMITER, prev_end)
        if at > 0 and text[at - 1] == '"':
            start = _quoted_start(text, at - 1)
            if start is None:  # its opening quote is not on the line: the name before the quote goes
                end = at - 1 - _backslashes(text, at - 1)
                d = last.match(text, floor, end)
                start = d.end() if d else floor
                if start >= end:
                    start = at
            run = None
        else:
            d = last.match(text, floor, at)
            if d:
                start = d.end()
            else:
                start = floor if literal or run is None else run
            while start < at and text[start] in _OPENING:
                start += 1
            run = None if literal else start
        prev_end = m.end()
        if literal:
            after_at = prev_end
        if start >= at:
            continue
        while spans and spans[-1][1] > start:  # a quoted local part holding an `@` covers the one before
            start = min(start, spans.pop()[0])
        spans.append((start, at))
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
    spans = _local_spans(text)
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
    outside ASCII each lowered character maps back to the original one it came from."""
    low = text.lower()
    if not address_l or address_l not in low:
        return text
    origin = None
    if len(low) != len(text):
        origin = [i for i, char in enumerate(text) for _ in char.lower()]
        origin.append(len(text))
    out, start, at = [], 0, 0
    while (i := low.find(address_l, at)) >= 0:
        at = i + len(address_l)
        begin, end = (i, at) if origin is None else (origin[i], origin[at - 1] + 1)
        out += (text[start:begin], mark)
        start = end
    out.append(text[start:])
    return "".join(out)


def without_recipient(text: str, rcpt_l: str, mark: str = "<rcpt>") -> str:
    """`text` with the recipient's address (`rcpt_l`, lower case) replaced by `mark`, in any case, as written and in
    its VERP form (`bounces+alice=gmail.com@lists.example` encodes `alice@gmail.com` as `alice=gmail.com`). What the
    correlator keeps of a sender, a Message-Id or a jobId when recipients are hashed: their other text stays (they
    are keys a page links by), and the same recipient gives the same text (the report fallback compares senders)."""
    if not text or "@" not in rcpt_l:  # a recipient logged without `@` (`ab`) is no address to look for
        return text
    text = without_address(text, rcpt_l, mark)
    local, at, domain = rcpt_l.rpartition("@")
    return without_address(text, f"{local}={domain}", mark) if at and local and domain else text


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
    ats = [(m.start(), m.end(), m.group() in _LITERAL_ATS) for m in _AT.finditer(text)]
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
        """The same cut of the text with its addresses redacted: what `RedactFilter` formats.

        Only the first `limit + _CLIP_MARGIN` characters are redacted (a bad line can be megabytes): an
        address whose `@` lies beyond would have a local part longer than any real one."""
        head = self.text[: self.limit + _CLIP_MARGIN]
        return Clipped(redact(head), self.limit, self.sep, self.more or len(head) < len(self.text))

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
        return redact(str(self.obj))

    def __repr__(self) -> str:
        return redact(repr(self.obj))

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
        return redact(arg)
    return _RedactedArg(arg)


class RedactFilter(logging.Filter):
    """A handler filter applying `redact` to each record's final message and traceback text.

    Arguments are redacted before the message is formatted where formatting cuts them (a `Clipped`
    argument, a precision such as `%.120r`): a cut local part no longer has the `@` that marks it.
    """

    def filter(self, record: logging.LogRecord) -> bool:
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
            record.msg, record.args = redact(message), None
        if record.exc_info:
            record.exc_text = redact(logging.Formatter().formatException(record.exc_info))
            record.exc_info = None
        elif record.exc_text:
            record.exc_text = redact(record.exc_text)
        if record.stack_info:
            record.stack_info = redact(record.stack_info)
        return True
