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
