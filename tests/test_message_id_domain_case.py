"""A Message-Id's domain is compared as domains are, without case; its local part keeps its case (RFC 5322).

The correlator hashed the id as written: a complaint whose ARF copy names `<Ab.1@MAIL.S.EXAMPLE>` (the ISP wrote the
domain in capitals) made a timeline of its own beside the delivery of `<Ab.1@Mail.S.example>`, its vmta was not
found for the metrics, and /api/v1/messages/Ab.1@mail.s.example answered 404.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

from correlator import store
from correlator.keys import LINKS_AS_WRITTEN, h64, message_hash, mid_key
from tests.test_correlator_support import Harness, batch

SENT = "Ab.1@Mail.S.example"
DELIVERY = batch("/l/acct.csv", f"""
type,timeLogged,timeQueued,orig,rcpt,vmta,vmtaPool,dsnStatus,header_Message-Id
d,2024-05-01 10:10:00+0000,2024-05-01 10:00:00+0000,a@s.example,zed@yahoo.com,vmta9,pool-z,2.0.0 (ok),<{SENT}>
""")
COMPLAINT = batch("/l/fbl.csv", """
type,timeLogged,orig,rcpt,header_Message-Id
f,2024-05-02 11:00:00+0000,a@s.example,,<Ab.1@MAIL.S.EXAMPLE>
""")


def _found(h: Harness, ids: list[str]) -> list[tuple[int, list[str]]]:
    async def ask() -> list[tuple[int, list[str]]]:
        async with h.client() as client:
            out = []
            for mid in ids:
                answer = await client.get(f"/api/v1/messages/{mid}")
                body = answer.json()
                out.append((answer.status_code, [r["outcome"] for r in body.get("recipients", [])]))
            return out
    return asyncio.run(ask())


def test_the_key_lowers_the_domain_only() -> None:
    assert mid_key("Ab.1@Mail.S.example") == mid_key("Ab.1@MAIL.S.EXAMPLE") == "Ab.1@mail.s.example"
    assert mid_key("ab.1@mail.s.example") != mid_key("Ab.1@mail.s.example")  # the local part keeps its case
    assert mid_key("a@b@C.example") == "a@b@c.example" and mid_key("NoDomain") == "NoDomain"
    assert message_hash("Ab.1@MAIL.S.EXAMPLE") == message_hash("Ab.1@mail.s.example")
    assert message_hash("x@s.example") == h64("m\0x@s.example")  # a lower-case domain is keyed as it always was


def test_a_report_naming_the_domain_in_capitals_joins_its_delivery(tmp_path: Path) -> None:
    h = Harness(tmp_path)
    h.commit(DELIVERY)
    assert h.sink.lookup_vmta(COMPLAINT.columns, COMPLAINT.rows)[0][:2] == ("vmta9", "pool-z")  # the metrics' side
    h.commit(COMPLAINT)
    assert h.conn.execute("SELECT message_id, flags != 0 FROM corr_timelines").fetchall() == [(SENT, 1)]
    assert _found(h, [SENT, "Ab.1@mail.s.example", "<Ab.1@MAIL.S.EXAMPLE>", "ab.1@mail.s.example"]) == [
        (200, ["complained"]), (200, ["complained"]), (200, ["complained"]), (404, [])]
    h.close()


SAME_CASE = batch("/l/fbl.csv", f"""
type,timeLogged,orig,rcpt,header_Message-Id
f,2024-05-02 11:00:00+0000,a@s.example,,<{SENT}>
""")


def _store_of_the_previous_build(tmp_path: Path) -> None:
    """The delivery as a build before `mid_key` stored it: the id's hash as written, schema 3, no link_keys."""
    h = Harness(tmp_path)
    h.commit(DELIVERY)
    h.conn.execute("UPDATE corr_timelines SET mid_h=?", (h64("m\0" + SENT),))
    h.conn.execute("DELETE FROM corr_meta WHERE key = ?", (store.LINK_KEYS,))
    h.conn.execute("UPDATE corr_meta SET value = '3' WHERE key = 'schema_version'")
    h.close()


def test_a_store_of_the_previous_build_keeps_keying_ids_as_written(tmp_path: Path) -> None:
    """Upgrade: a delivery stored before, its complaint after, naming the id as it was sent (capitals in its domain).
    Keyed by `mid_key` over the old keys, the complaint made a second timeline (flags 128, no rcpt), lost its vmta in
    the metrics and hid the delivery from /api/v1/messages (regression review 2026-12-06)."""
    _store_of_the_previous_build(tmp_path)
    h = Harness(tmp_path)
    assert h.sink.hasher.links.scheme == LINKS_AS_WRITTEN
    assert h.sink.lookup_vmta(SAME_CASE.columns, SAME_CASE.rows)[0][:2] == ("vmta9", "pool-z")
    h.commit(SAME_CASE)
    assert h.conn.execute("SELECT message_id, flags != 0 FROM corr_timelines").fetchall() == [(SENT, 1)]
    assert _found(h, [SENT]) == [(200, ["complained"])]
    h.close()
