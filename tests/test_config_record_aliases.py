"""`sources[].records` takes short codes or long aliases; docs/config.md said "or long aliases" without naming them,
and a bad value (`records: [D]`) was refused listing the codes only."""

from __future__ import annotations

import pytest

from exporter.config import RECORD_ALIASES, ConfigError, SourceConfig, config_from_dict


def test_the_description_names_every_alias_with_its_code() -> None:
    text = SourceConfig.model_fields["records"].description or ""
    for alias, code in RECORD_ALIASES.items():
        assert f"`{code}` ({alias})" in text, (alias, text)


def test_a_bad_value_is_refused_naming_the_codes_and_the_aliases() -> None:
    with pytest.raises(ConfigError) as caught:
        config_from_dict({"sources": [{"paths": ["/logs/acct-*.csv"], "records": ["d", "D"]}], "state_dir": "/s"})
    assert caught.value.problems == [
        "sources.0.records: unknown record type 'D'; expected one of d (delivery), b (bounce), t (transient), "
        "tq (transient-queue), f (feedback-loop), rb (remote-bounce), rs (remote-status), r (receipt): a code or its "
        "alias, in lower case"]


def test_the_aliases_are_taken_as_their_codes() -> None:
    source = SourceConfig(paths=["/logs/acct-*.csv"], records=list(RECORD_ALIASES))
    assert source.records == list(RECORD_ALIASES.values())
