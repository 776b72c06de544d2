"""Plain-text renderings for `Accept: text/plain` / `?format=text`: readable in a terminal.

Every value comes from accounting files that remote parties write into (dsnDiag, Message-Id,
feedbackType...), so C0/C1 control characters are shown as `\\xNN` / `\\u00NN` escapes: a
`curl | less` must never run an attacker's terminal escape sequence. Only the renderer's own
newlines reach the output. Bidi marks, embeddings, overrides and isolates are shown the same way: a
U+202E reverses what follows it on the line (a jobId or reply reading backwards: Trojan-Source spoofing)
in a terminal that renders bidi and in a browser (the /ui pages show values through `safe` too). So is
every other invisible format character (Unicode category Cf: zero-width space and joiners, word joiner, soft
hyphen, BOM, tag characters...): `job-\\u2060alice@gmail.com` looked exactly like `job-alice@gmail.com`.
ZWJ and ZWNJ are escaped too: a value here is evidence, where an emoji sequence shown as its parts costs little
and a joiner that makes one value look like another costs a wrong conclusion.
"""

from __future__ import annotations

import re
from typing import Any

from exporter.logsetup import BIDI_CONTROLS

FORMAT_CHARACTERS = (
    "\u00ad\u0600-\u0605\u061c\u06dd\u070f\u0890\u0891\u08e2\u180e\u200b-\u200f\u202a-\u202e\u2060-\u2064"
    "\u2066-\u206f\ufeff\ufff9-\ufffb\U000110bd\U000110cd\U00013430-\U00013438\U0001bca0-\U0001bca3"
    "\U0001d173-\U0001d17a\U000e0001\U000e0020-\U000e007f"
)
"""Every character of Unicode category Cf (Unicode 14, Python 3.11's unicodedata; tests/test_render_invisible.py checks
it against the running Python's), as a regex class body: spelt out, as scanning unicodedata costs 0.15 s per start."""
_CONTROLS = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029" + "".join(map(chr, BIDI_CONTROLS)) + FORMAT_CHARACTERS + "]")


def _escape_char(m: re.Match[str]) -> str:
    c = ord(m.group())
    if c < 0x100:
        return f"\\x{c:02x}"
    return f"\\u{c:04x}" if c <= 0xFFFF else f"\\U{c:08x}"  # (a tag character's 5 digits read as 4 and one more)


def safe(value: object) -> str:
    """str(value) with control characters (C0, DEL, C1, line/paragraph separators, bidi controls) and every other
    invisible format character (category Cf) escaped."""
    return _CONTROLS.sub(_escape_char, str(value))


def _t(value: str | None) -> str:
    return safe(value or "-").replace("T", " ")


def timeline(tl: dict[str, Any]) -> str:
    e = safe
    head = [
        f"rcpt {e(tl['rcpt'] or '(unknown)')}  message-id {e(tl['message_id'] or '-')}  job {e(tl['job_id'] or '-')}",
        f"from {e(tl['orig'] or '-')}  vmta {e(tl['vmta'] or '-')}"
        + (f" (pool {e(tl['vmta_pool'])})" if tl["vmta_pool"] else "")
        + f"  isp {e(tl['isp'] or '-')}  outcome {e(tl['outcome']).upper()}  attempts {tl['attempts']}",
    ]
    if tl.get("events_omitted"):
        head.append(f"({tl['events_omitted']} older events omitted)")
    if tl.get("queue_events_omitted"):
        head.append(f"({tl['queue_events_omitted']} older queue events of {e(tl['queue'])} omitted)")
    lines = []
    for ev in tl["events"]:
        parts = [_t(ev["time"]), f"{e(ev['kind']):<15}"]
        if ev.get("attempt"):
            parts.append(f"#{ev['attempt']}")
        for key in ("vmta", "dsn_status", "dsn_diag", "dsn_mta", "feedback_type", "reporting_mta"):
            if ev.get(key):
                parts.append(e(ev[key]))
        if ev.get("response_class"):
            parts.append(f"[{e(ev['response_class'])}]")
        lines.append(("  " + "  ".join(parts)).rstrip())
    return "\n".join(head + lines) + "\n"


def lookup_title(job: str, message_id: str, rcpt: str) -> str:
    """The first line of a text timeline asked by (jobId or Message-Id, rcpt), each as the answer shows it: the
    daemon's and the hub's alike."""
    return f"{f'job {job}' if job else f'message-id {message_id}'} rcpt {rcpt}"


def timelines(title: str, items: list[dict[str, Any]], note: str = "") -> str:
    blocks = [safe(title) + (f"  {safe(note)}" if note else "")]
    blocks += [timeline(tl) for tl in items]
    return "\n".join(blocks)


def message_note(shown: int, total: int, next_cursor: str | None) -> str:
    """The title note of a message page in text: how many of its recipients, and the cursor of the next page."""
    count = f"({shown} of {total} recipients)" if total > shown else ""
    return "; ".join(part for part in (count, f"next page: ?cursor={next_cursor}" if next_cursor else "") if part)


def search(page: dict[str, Any]) -> str:
    e = safe
    lines = []
    for it in page["items"]:
        lines.append("  ".join((
            _t(it["first_seen"]), f"{e(it['outcome']):<10}", e(it["rcpt"] or "-"), f"job={e(it['job_id'] or '-')}",
            f"vmta={e(it['vmta'] or '-')}", f"mid={e(it['message_id'] or '-')}", f"id={it['id']}",
            *((f"host={e(it['host'])}",) if it.get("host") else ()),  # the hub's: ids are per host
        )))
    if not lines:
        lines.append("(no matching timelines)")
    if page["next_cursor"]:
        lines.append(f"next cursor: {e(page['next_cursor'])}")
    return "\n".join(lines) + "\n"


def flows(data: dict[str, Any]) -> str:
    e = safe
    lines = [f"flows since {_t(data['since'])}" + (f" until {_t(data['until'])}" if data["until"] else "")]
    for x in data["edges"]:
        lines.append(
            f"  {e(x['source'])} -> {e(x['target'])}  delivered={x['detail__delivered']} "
            f"bounced={x['detail__bounced']} deferred={x['detail__deferred']} complained={x['detail__complained']}"
        )
    if not data["edges"]:
        lines.append("  (no traffic)")
    return "\n".join(lines) + "\n"
