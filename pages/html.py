"""HTML building blocks: every value goes through `e()` (escape) or `u()` (URL-quote then escape).

No template engine and no JavaScript: pages are small, and an f-string that only ever sees
escaped values is easy to audit. The CSP forbids scripts and every off-origin fetch.
"""

from __future__ import annotations

import base64
import hashlib
import html
import re
from typing import Any
from urllib.parse import urlencode

from fastapi.responses import HTMLResponse

from correlator.render import safe
from exporter.logsetup import BIDI_CONTROLS

STYLE = """
body{font:14px/1.4 system-ui,sans-serif;margin:0;color:#1d2126;background:#f6f7f9}
header{background:#1f2937;color:#fff;padding:8px 16px;display:flex;gap:16px;align-items:baseline}
header a{color:#cbd5e1;text-decoration:none}header a:hover{color:#fff}header b{margin-right:16px}
main{padding:16px;max-width:1400px}
form.search{display:flex;gap:8px;flex-wrap:wrap;align-items:end;margin-bottom:16px}
label{display:flex;flex-direction:column;font-size:12px;color:#4b5563}
input{font:inherit;padding:4px 6px;border:1px solid #cbd5e1;border-radius:3px;min-width:14em}
button{font:inherit;padding:5px 14px;border:0;border-radius:3px;background:#2563eb;color:#fff}
table{border-collapse:collapse;background:#fff;margin:8px 0 20px;width:100%}
th,td{border:1px solid #e5e7eb;padding:3px 6px;text-align:left;vertical-align:top}
th{background:#f1f5f9;font-weight:600;font-size:12px}
td.num{text-align:right;font-variant-numeric:tabular-nums}
code,.mono{font-family:ui-monospace,monospace;font-size:12px;word-break:break-all}
.badge{display:inline-block;padding:0 6px;border-radius:8px;font-size:12px;color:#fff;background:#6b7280}
.o-delivered{background:#15803d}.o-bounced{background:#b91c1c}.o-complained{background:#7c2d12}
.o-deferred{background:#b45309}.o-pending{background:#6b7280}
.warn{background:#fef3c7;border:1px solid #f59e0b;padding:6px 10px;margin-bottom:12px}
.err{background:#fee2e2;border:1px solid #ef4444;padding:6px 10px;margin-bottom:12px}
section.rcpt{background:#fff;border:1px solid #e5e7eb;padding:8px 12px;margin-bottom:16px}
section.rcpt h2{font-size:15px;margin:0 0 4px}
.meta{color:#4b5563;font-size:12px}
.redacted{text-decoration:underline dotted;cursor:help}
bdi,.meta,h1,.free{overflow-wrap:anywhere}
svg text{font-size:12px;fill:#1d2126}
"""

CSP = (f"default-src 'none'; style-src 'sha256-{base64.b64encode(hashlib.sha256(STYLE.encode()).digest()).decode()}'; "
       "img-src 'self' data:; form-action 'self'; base-uri 'none'; frame-ancestors 'none'")
"""No script, no off-origin request, and no style but the page's own <style> (by its hash, not 'unsafe-inline':
markup that ever slipped through escaping could not restyle the page either)."""


def e(value: Any) -> str:
    """Escaped text for display; None and "" become an en dash. Control and bidi-control characters are made
    visible as the API's text format shows them (correlator.render.safe): an ESC is invisible in a page, and a
    U+202E in a jobId made "1 · from x" read backwards (Trojan-Source spoofing of a forensic page)."""
    return "\u2013" if value is None or value == "" else html.escape(safe(value), quote=True)


def attr(value: Any) -> str:
    """Escaped exact text for a hidden input's value or a data- attribute (never shown); None and "" stay empty."""
    return "" if value is None else html.escape(str(value), quote=True)


_UNBOXABLE = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029" + "".join(map(chr, BIDI_CONTROLS)) + "]")
"""What a shown input box must not hold: controls, line separators and bidi controls (the box draws its value raw:
U+202E drew `id\u202eabc@x` as `idx@cba`). Other invisible characters (ZWNJ in Persian, ZWJ in emoji) stay: they
reorder nothing, and a box is what the operator edits."""


def input_value(value: Any) -> str:
    """Escaped exact text for a shown input's value, or "" when it holds what `_UNBOXABLE` names; the page then names
    the value escaped (`not_boxed`), and the box is left for the operator to fill."""
    if value is None or _UNBOXABLE.search(str(value)):
        return ""
    return html.escape(str(value), quote=True)


def not_boxed(**values: Any) -> str:
    """A line naming, escaped (`e`), each searched value `input_value` left out of its box: the page still says what
    it answers. "" when every value fits its box."""
    left = [f'{name.replace("_", " ")} <span class="mono">{e(value)}</span>' for name, value in values.items()
            if value and _UNBOXABLE.search(str(value))]
    return f'<p class="meta" id="not-boxed">Searched {", ".join(left)} (not put back in the box above: it holds a ' \
           "control or direction character).</p>" if left else ""


def query(**params: Any) -> str:
    """The non-empty params, URL-encoded (no `?`)."""
    return urlencode({k: v for k, v in params.items() if v not in (None, "")})


def u(path: str, **params: Any) -> str:
    """An escaped URL: `path` plus the non-empty params, URL-encoded."""
    q = query(**params)
    return html.escape(path + ("?" + q if q else ""), quote=True)


def page(title: str, body: str, root: str, status: int = 200, subtitle: str = "") -> HTMLResponse:
    nav = (f'<header><b>{e(subtitle or "PMTA Watchtower")}</b><a href="{u(root + "/ui/")}">Search</a>'
           f'<a href="{u(root + "/ui/flows")}">Flows</a></header>')
    doc = (f'<!doctype html><html lang="en"><head><meta charset="utf-8">'
           f'<meta name="viewport" content="width=device-width, initial-scale=1">'
           f'<link rel="icon" href="data:,"><title>{e(title)}</title><style>{STYLE}</style></head>'
           f"<body>{nav}<main>{body}</main></body></html>")
    # nosniff and no-store come with every answer of the listener (exporter.http.SAFE_HEADERS); the CSP is the page's
    return HTMLResponse(doc, status_code=status, headers={"content-security-policy": CSP,
                                                          "referrer-policy": "no-referrer"})


def partial_banner(body: Any) -> str:
    if not isinstance(body, dict) or not body.get("missing_hosts"):
        return ""
    hosts = ", ".join(f"{m.get('host')} ({m.get('error')})" for m in body["missing_hosts"])
    return f'<div class="warn" id="partial">Partial answer: hosts not answering: {e(hosts)}</div>'


def error_box(status: int, body: Any) -> str:
    msg = body.get("error") if isinstance(body, dict) else str(body)
    param = body.get("parameter") if isinstance(body, dict) else None
    where = f" (parameter <code>{e(param)}</code>)" if param else ""
    return f'<div class="err" id="error">{e(status)}: {e(msg)}{where}</div>' + partial_banner(body)
