"""A Message-Id's domain is compared as domains are, without case; its local part keeps its case (RFC 5322).

The correlator hashed the id as written: a complaint whose ARF copy names `<Ab.1@MAIL.S.EXAMPLE>` (the ISP wrote the
domain in capitals) made a timeline of its own beside the delivery of `<Ab.1@Mail.S.example>`, its vmta was not
found for the metrics, and /api/v1/messages/Ab.1@mail.s.example answered 404.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

from correlator.keys import h64, message_hash, message_hashes, mid_key
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


def test_a_store_keyed_before_is_still_read_by_the_id_as_written(tmp_path: Path) -> None:
    """Timelines stored before domains were lower-cased hold the hash of the id as written: a lookup of that id still
    finds them (`message_hashes`), with no migration of the stored keys."""
    h = Harness(tmp_path)
    h.commit(DELIVERY)
    h.conn.execute("UPDATE corr_timelines SET mid_h=?", (h64("m\0" + SENT),))  # as the previous build keyed it
    h.sink.ingestor.forget()
    assert message_hashes(SENT) == (message_hash(SENT), h64("m\0" + SENT))
    assert _found(h, [SENT]) == [(200, ["delivered"])]
    h.close()
