"""Bounded labels for a PMTA record: which mailbox provider (`isp`) and what kind of reply (`class`).

    isp.py      recipient domain + dsnMta host -> one of ISP_NAMES       (table: isps.yaml)
    replies.py  isp + dsnStatus + dsnDiag + bounceCat -> one of REPLY_CLASSES  (rules: replies.yaml)

Both tables are data shipped in this package and replaceable from the config (`classify.isp_file`,
`classify.replies_file`); both load with validation (ValueError naming the file and entry) and then
answer from bounded plain-dict caches, because the aggregator calls them for every record.
See docs/classification.md.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from exporter.classify.isp import ISP_NAMES, IspClassifier
from exporter.classify.replies import REPLY_CLASSES, ReplyClassifier

if TYPE_CHECKING:
    from exporter.config import Config

__all__ = ["ISP_NAMES", "REPLY_CLASSES", "IspClassifier", "ReplyClassifier", "load_classifiers", "table_problem"]


def load_classifiers(config: Config) -> tuple[IspClassifier, ReplyClassifier]:
    """Both tables of a configuration (the shipped ones unless `classify.*_file` names others)."""
    return IspClassifier.load(config.classify.isp_file), ReplyClassifier.load(config.classify.replies_file)


def table_problem(exc: BaseException) -> str:
    """One line for a table that could not be loaded: a table's ValueError already names the file and the entry
    (`PATH: not UTF-8 (byte 0xff at offset 0); ...`); anything else is a bug, named by its class."""
    if isinstance(exc, ValueError):
        return str(exc)
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
