"""Every reply the simulator can write, as the record it writes it in, classified by the exporter's shipped rule
table: the class must be the one the simulator's ground truth expects (exact, every mismatch listed at once)."""

from __future__ import annotations

import pytest

from exporter.classify.replies import ReplyClassifier
from simulator.providers import PROVIDERS, Provider
from simulator.replies import CATALOGUE, REMOTE_BOUNCE, Reply

CTX = {"ip": "198.51.100.10", "rcpt": "a.b@x.example", "domain": "x.example", "sender": "news.example",
       "mx": "mx1.x.example", "mxip": "203.0.113.7", "id": "0123456789", "gid": "a12si3456bcx.7"}
BY_PREFIX = {"generic": "other", "pmta": "other", "rb": "other"}
"""Catalogue prefixes that are no provider: the replies of the long tail, PMTA's own, the remote bounce."""


def isp_of(reply: Reply) -> str:
    """The provider a reply is written for (its id's prefix), as the exporter's `isp` label names it."""
    prefix = reply.id.split(".")[0]
    return BY_PREFIX.get(prefix, prefix)


def providers_using(reply: Reply) -> list[str]:
    """Every provider whose traffic may carry `reply` by default (besides scenarios, which may force any)."""
    def uses(p: Provider) -> bool:
        return reply.id in (p.ok, p.user_unknown, p.mailbox_full, p.content_block, *(r for r, _ in p.transient_replies))
    return [name for name, p in PROVIDERS.items() if uses(p)]


def written_as(reply: Reply) -> list[tuple[str, str]]:
    """(record type, bounceCat) of the records carrying `reply`: b with its category when permanent or expired, t
    (no category) and tq (none either, scenarios' `level: queue`) when transient, rb for the remote bounce."""
    if reply is REMOTE_BOUNCE:
        return [("rb", reply.bounce_cat)]
    if reply.permanent or reply.id == "pmta.expired":
        return [("b", reply.bounce_cat)]
    return [("t", ""), ("tq", "")]


def mismatches(classifier: ReplyClassifier) -> list[str]:
    out = []
    for reply in [*CATALOGUE.values(), REMOTE_BOUNCE]:
        if reply.success:
            continue  # d records carry no reply class
        diag = reply.render_diag(CTX)
        for isp in sorted({isp_of(reply), *providers_using(reply)}):
            for typ, cat in written_as(reply):
                got, rule = classifier.explain(isp, reply.status, diag, cat)
                if got != reply.klass:
                    out.append(f"{reply.id} ({typ}, isp={isp}): simulator {reply.klass}, exporter {got} ({rule})")
    return out


def test_every_simulator_reply_gets_the_class_its_ground_truth_expects() -> None:
    assert mismatches(ReplyClassifier.load()) == []


def test_the_replies_the_reference_decides() -> None:
    """isp-responses.md §2.2: Yahoo PH* errors are content blocks (its text says "policy reasons"); greylisting is
    transient_remote; Apple [CS01] is content (§2.10's row; §2.4 says policy/reputation: see replies.yaml)."""
    rc = ReplyClassifier.load()
    cases = {"yahoo.content": ("yahoo", "content", "yahoo-ph-content"),
             "generic.greylist": ("other", "transient_remote", "greylisting"),
             "apple.content": ("apple", "content", "apple-cs01")}
    for rid, (isp, klass, rule) in cases.items():
        reply = CATALOGUE[rid]
        assert reply.klass == klass, rid
        assert rc.explain(isp, reply.status, reply.render_diag(CTX), reply.bounce_cat) == (klass, rule), rid
    ph = "554 Message not allowed - [PH01] Email not accepted for policy reasons."
    assert rc.explain("comcast", "5.0.0 (undefined status)", "smtp;" + ph, "policy-related") == (
        "content", "yahoo-ph-content")  # comcast.net mail answered by Yahoo's servers


@pytest.mark.parametrize("rid", ["pmta.etimedout", "pmta.econnrefused", "pmta.ediscon", "pmta.dns_failed"])
def test_pmtas_own_connection_failures_are_network(rid: str) -> None:
    """PMTA's own texts carry no `smtp;` and no reply code; with or without a prefix (UNCERTAIN how PMTA writes them
    in dsnDiag) they are the network-errno / dns-temporary rules' `network`."""
    reply = CATALOGUE[rid]
    diag = reply.render_diag(CTX)
    assert not diag.startswith("smtp;") and ("(203.0.113.7)" in diag or diag.startswith("StatusDnsQueryFailed"))
    rule = "dns-temporary" if "StatusDns" in diag else "network-errno"
    rc = ReplyClassifier.load()
    for text in (diag, "smtp;" + diag):
        assert rc.explain("other", reply.status, text, "") == ("network", rule)
