"""Hosts that hash recipients beside hosts that do not: no hub answer may show an address beside a hash.

A host with `correlator.hash_recipients` serves `hmac-sha256:<hex>` and keeps addresses out of its keys and replies;
a host without it serves them plain. Merged, one recipient could appear both ways in one answer (a hashing host and
a plain one holding the same Message-Id), pairing the address with its hash for every other answer that host gives.
The hub holds no host's key, so it cannot hash a plain host's recipient: once any host has answered hashed, the
others' timelines are served as a hashing host would serve a row without a recipient (`rcpt` null, the recipient's
address in keys and replies as `[redacted]` / `<rcpt>`, every other address as `<addr>` or `[redacted]`), for the
hub's life (an answer that happens to hold plain rows only would otherwise pair with the next one)."""

from __future__ import annotations

import logging
from typing import Any

from correlator.keys import HASHED_PREFIX, norm_rcpt
from correlator.linking import reply_without_addresses
from exporter.redact import REDACTED, key_without_addresses, key_without_recipient, redact, without_addresses

log = logging.getLogger("watchtower.hub")

_KEYS = ("job_id", "message_id")
"""A timeline's keys; each is also the `kind` exporter.redact's key functions take."""
_EVENT_TEXTS = ("dsn_action", "dsn_status", "dsn_mta", "bounce_category", "feedback_type", "user_agent",
                "reporting_mta")


class PlainWithheld:
    """Applied to the timelines (or search items) of every answer that carries them; remembers the hosts seen
    hashing."""

    def __init__(self) -> None:
        self.hashing: set[str] = set()
        self._said = False

    def learn(self, answers: list[Any], asked: str | None) -> None:
        """Hosts that turned the recipient asked (`asked`, an address) into `hmac-sha256:...` in their echo: they hash,
        timelines or not. An echo of a hash the caller sent proves nothing (a plain host echoes what it is asked)."""
        if not asked or norm_rcpt(asked).startswith(HASHED_PREFIX):
            return
        for a in answers:
            body = getattr(a, "body", None)
            if getattr(a, "ok", False) and isinstance(body, dict) and str(body.get("rcpt") or "").startswith(
                    HASHED_PREFIX):
                self.hashing.add(a.target.name)

    def __call__(self, items: list[dict[str, Any]]) -> list[dict[str, Any]]:
        self.hashing.update(str(it.get("host")) for it in items if it.get("rcpt_hashed") is True)
        if not self.hashing:
            return items
        out = []
        plain: set[str] = set()
        for it in items:
            if it.get("rcpt_hashed") is True:
                out.append(it)
            elif it.get("rcpt"):  # a plain recipient, whatever host serves it now (a name once hashing may not be)
                plain.add(str(it.get("host")))
                out.append(withheld(it))
            else:  # a row without a recipient as a hashing host serves one (prepare.py `keyed`; idempotent: a
                out.append(_without_recipient(it))  # hashing host's own is unchanged, a name once hashing no proof)
        if plain and not self._said:
            self._said = True
            log.warning("hosts %s hash recipients and %s do not: the latter's timelines are served without their "
                        "recipients (rcpt null, addresses redacted), so that no answer pairs an address with its "
                        "hash; set correlator.hash_recipients alike on every host",
                        ", ".join(sorted(self.hashing)[:10]), ", ".join(sorted(plain)[:10]))
        return out


def withheld(item: dict[str, Any]) -> dict[str, Any]:
    """A plain host's timeline (or search item) as a hashing host serves a row without a recipient."""
    rcpt = item.get("rcpt")
    rcpt_l = rcpt.lower() if isinstance(rcpt, str) and "@" in rcpt else None
    out = dict(item, rcpt=None)
    for kind in _KEYS:
        value = item.get(kind)
        if isinstance(value, str) and value:
            if rcpt_l:
                value = key_without_recipient(value, rcpt_l, kind).replace("<rcpt>", REDACTED)
            out[kind] = key_without_addresses(value, kind)  # `[redacted]`: the pages show it as text, not a link
    orig = item.get("orig")
    if isinstance(orig, str) and orig and rcpt_l:
        out["orig"] = key_without_recipient(orig, rcpt_l, "sender")
    return _replies_withheld(out, rcpt_l)


def _without_recipient(item: dict[str, Any]) -> dict[str, Any]:
    """A row without a recipient (an anonymised report) as a hashing host stores it: its sender and jobId without any
    local part, its Message-Id as logged (the key pages link by), its replies without addresses."""
    out = dict(item)
    for field in ("job_id", "orig"):
        value = item.get(field)
        if isinstance(value, str) and value:
            out[field] = redact(value)
    return _replies_withheld(out, None)


def _replies_withheld(item: dict[str, Any], rcpt_l: str | None) -> dict[str, Any]:
    """`item` with its events' texts as a hashing host stores them (`rcpt_l`'s address as `<rcpt>`, others `<addr>`)."""
    events = item.get("events")
    if not isinstance(events, list):
        return item
    return dict(item, events=[_event(ev, rcpt_l) if isinstance(ev, dict) else ev for ev in events])


def _event(ev: dict[str, Any], rcpt_l: str | None) -> dict[str, Any]:
    out = dict(ev)
    if isinstance(ev.get("dsn_diag"), str):
        out["dsn_diag"] = reply_without_addresses(ev["dsn_diag"], rcpt_l)
    for key in _EVENT_TEXTS:
        if isinstance(ev.get(key), str):
            out[key] = without_addresses(ev[key])
    return out
