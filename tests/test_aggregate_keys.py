"""The reduced keys the aggregator groups by give the classifiers' own answers (polars vs Python)."""

from __future__ import annotations

import polars as pl
from hypothesis import given, settings
from hypothesis import strategies as st

from exporter.aggregate import mx_host
from exporter.classify import IspClassifier

_TABLE = IspClassifier.load()
HOSTS = ["gmail-smtp-in.l.google.com", "mta6.am0.yahoodns.net", "x.mail.protection.outlook.com", "mx.tiny.example",
         "MX01.Mail.iCloud.com.", ""]
mta = st.builds(lambda host, pad, ip, tail: f"{pad}{host}{pad} ({ip}){tail}", st.sampled_from(HOSTS),
                st.sampled_from(["", " ", "\t", "\u00a0", "\u2003"]), st.text(alphabet="0123456789.:(", max_size=8),
                st.text(max_size=3)) | st.text(max_size=12)


@settings(max_examples=200, deadline=None)
@given(st.lists(mta, min_size=1, max_size=20), st.sampled_from(["corp.example", "gmail.com", ""]))
def test_isp_of_the_reduced_mx_host_equals_isp_of_the_raw_dsn_mta(mtas: list[str], domain: str) -> None:
    hosts = pl.DataFrame({"m": mtas}).select(mx_host(pl.col("m"))).to_series().to_list()
    for raw, host in zip(mtas, hosts, strict=True):
        fresh = IspClassifier(_TABLE._domains, _TABLE._suffixes)
        assert fresh.classify(domain, host) == IspClassifier(_TABLE._domains, _TABLE._suffixes).classify(domain, raw)


HEADERS = [
    ["type", "timeLogged", "timeQueued", "orig", "rcpt", "dsnStatus", "dsnDiag", "dsnMta", "bounceCat", "dlvSize",
     "vmta", "vmtaPool", "queue"],
    ["type", "timeLogged", "timeQueued", "orig", "dsnStatus", "dsnDiag", "vmta", "vmtaPool", "queue"],  # no rcpt
]
row = st.tuples(st.sampled_from(["d", "b", "t", "tq"]), st.sampled_from(["2026-11-25 12:00:30+0000", "1000", "", "x"]),
                st.sampled_from(["", "vmta-1", " V2 "]), st.sampled_from(["", "gmail.com/vmta-3", "q", "a/b/c"]),
                st.sampled_from(["", "u@Gmail.com", "a@b@c.org", "plain"]),
                st.sampled_from(["", "smtp;550 5.1.1 <x.y@gmail.com> nope a1si2.3 - gsmtp", "451 try later"]))


@settings(max_examples=150, deadline=None)
@given(st.lists(row, min_size=1, max_size=12), st.sampled_from(HEADERS))
def test_derived_columns_for_the_types_present_equal_the_general_ones(rows: list[tuple[str, ...]],
                                                                      names: list[str]) -> None:
    """`_derive` leaves out the branches no row of the chunk takes: the same columns, value for value."""
    from exporter.aggregate import _MAIN, _derive_exprs
    from exporter.records import Columns

    c = Columns.from_header(names)
    values = {"type": 0, "timeLogged": 1, "timeQueued": 1, "vmta": 2, "queue": 3, "rcpt": 4, "orig": 4,
              "dsnDiag": 5, "dsnStatus": 5, "dsnMta": 4, "bounceCat": 5, "dlvSize": 1, "vmtaPool": 2}
    frame = pl.DataFrame({f"c{i}": [r[values[n]] or None for r in rows] for i, n in enumerate(names)},
                         schema={f"c{i}": pl.String for i in range(len(names))})
    types = frozenset(r[0] for r in rows)
    general = frame.select(_derive_exprs(c, True, _MAIN))
    assert frame.select(_derive_exprs(c, True, types)).to_dicts() == general.to_dicts()
