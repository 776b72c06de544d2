"""THE metric table: every metric Watchtower exposes, its type, help and labels, in one place.

Everything else imports from here: the record aggregator (`aggregate.py`) serves the `pmta_*`
record metrics, the queue poller serves `pmta_queue_*`, and `SelfMetrics` holds the
`watchtower_*` health metrics. `docs/metrics.md` is checked against this table by tests, so a
metric cannot be added without being documented. Label values are closed sets (see
`LABEL_VALUES`): no recipient, recipient domain, message id or job id is ever a label (a sending domain is, capped by
`labels.max_senders` or listed in `labels.senders`).
"""

from __future__ import annotations

import platform
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Literal

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, disable_created_metrics
from prometheus_client.core import Metric

from exporter import __version__

disable_created_metrics()  # no `_created` series: they double the series count and confuse users

Kind = Literal["counter", "gauge", "histogram"]

PLACEHOLDER_NONE = "none"
"""Label value when PMTA wrote an empty vmta / vmtaPool field (no VirtualMTA or pool selected)."""
PLACEHOLDER_UNKNOWN = "unknown"
"""Label value when the record type carries no vmta / pool (f, rb, rs) and nothing correlates."""
PLACEHOLDER_OVERFLOW = "overflow"
"""Label value once a label's cap (`labels.max_vmtas`, `labels.max_pools`) is reached, or for a value longer than
`MAX_LABEL_VALUE_CHARS`."""
MAX_LABEL_VALUE_CHARS = 256
"""The longest label value a cap (exporter/labelcap.py) admits: a domain name is 253 characters at most, PMTA's VMTA
and pool names are short. A longer one is `overflow`, as a value past the cap is: never cut to a prefix, which could
merge two VMTAs into one series under a name that is neither, or split a join with the record series. VMTA names of
60 KB each grew /metrics to 216 MB; a Prometheus with `label_value_length_limit` would refuse the whole scrape."""
PLACEHOLDER_OTHER = "other"


@dataclass(frozen=True, slots=True)
class MetricSpec:
    name: str
    kind: Kind
    help: str
    labels: tuple[str, ...]
    group: Literal["records", "queue", "self", "correlator"]
    deprecated_for: str | None = None
    """The current name of a renamed metric, when this is its old name: served with the same values (and a
    `Deprecated: use NEW.` help) until a later release removes it. Made from `RENAMED`, never by hand."""


RECORD_LABELS = ("vmta", "vmta_pool", "isp")

RENAMED: dict[str, str] = {
    # current name -> its old name, still served with the same values for a deprecation period (the unit goes
    # last, before `_total`: https://prometheus.io/docs/practices/naming/)
    "watchtower_read_bytes_total": "watchtower_bytes_read_total",
    "watchtower_behind_bytes": "watchtower_bytes_behind",
    "watchtower_commit_backlog_lost_bytes_total": "watchtower_commit_backlog_bytes_lost_total",
}


def _with_deprecated_aliases(specs: Iterable[MetricSpec]) -> Iterator[MetricSpec]:
    """The table with each renamed metric's old name right after it (so the reference lists them together)."""
    for spec in specs:
        yield spec
        old = RENAMED.get(spec.name)
        if old is not None:
            yield MetricSpec(old, spec.kind, f"Deprecated: use {spec.name}. {spec.help}", spec.labels, spec.group,
                             deprecated_for=spec.name)


METRICS: tuple[MetricSpec, ...] = tuple(_with_deprecated_aliases((
    # --- from accounting records -------------------------------------------------------------
    MetricSpec("pmta_delivered_total", "counter", "Recipients delivered (d records).", RECORD_LABELS, "records"),
    MetricSpec(
        "pmta_delivered_bytes_total", "counter", "Bytes delivered (dlvSize of d records; one that is no whole number "
        "adds none and counts in watchtower_parse_errors_total as bad_size).",
        RECORD_LABELS, "records",
    ),
    MetricSpec(
        "pmta_bounced_total", "counter", "Recipients bounced by PMTA (b records).",
        (*RECORD_LABELS, "category", "class"), "records",
    ),
    MetricSpec(
        "pmta_deferred_total", "counter",
        "Deferred delivery attempts: recipient-level (t) and queue-level (tq) transient errors.",
        (*RECORD_LABELS, "class"), "records",
    ),
    MetricSpec(
        "pmta_complaints_total", "counter", "Feedback-loop complaints (f records).",
        (*RECORD_LABELS, "feedback_type"), "records",
    ),
    MetricSpec(
        "pmta_remote_bounced_total", "counter", "Asynchronous bounces from remote servers (rb records).",
        (*RECORD_LABELS, "category", "class"), "records",
    ),
    MetricSpec(
        "pmta_remote_status_total", "counter", "Remote delivery status notifications (rs records).",
        (*RECORD_LABELS, "action"), "records",
    ),
    MetricSpec("pmta_received_total", "counter", "Recipients received by PMTA (r records).",
               ("vmta", "vmta_pool"), "records"),
    MetricSpec(
        "pmta_delivery_delay_seconds", "histogram",
        "Time from queueing to delivery (timeLogged - timeQueued of d records).", RECORD_LABELS, "records",
    ),
    MetricSpec(
        "pmta_deferral_age_seconds", "histogram",
        "Age of the message at each recipient deferral (timeLogged - timeQueued of t records).",
        ("vmta_pool", "isp"), "records",
    ),
    MetricSpec("pmta_sender_delivered_total", "counter", "Recipients delivered, by sending domain.",
               ("sender", "isp"), "records"),
    MetricSpec("pmta_sender_bounced_total", "counter", "Recipients bounced (b), by sending domain.",
               ("sender", "isp", "class"), "records"),
    MetricSpec("pmta_sender_deferred_total", "counter", "Recipient deferrals (t), by sending domain.",
               ("sender", "isp", "class"), "records"),
    MetricSpec("pmta_sender_complaints_total", "counter", "Feedback-loop complaints, by sending domain.",
               ("sender", "isp", "feedback_type"), "records"),
    # --- from PMTA's HTTP management interface ---------------------------------------------
    MetricSpec("pmta_queue_recipients", "gauge",
               "Recipients queued, per VMTA and ISP. A cell (of every pmta_queue_* gauge) gone from its VMTA's "
               "listing read whole is 0 for 10 minutes, then absent.", ("vmta", "isp"), "queue"),
    MetricSpec("pmta_queue_unlisted_recipients", "gauge",
               "Recipients in a VMTA's queues beyond PMTA's top-N listing of it (its total less the queues shown; "
               "their ISP is unknown). Its total: the listing's totalRcp, or its rcp in /vmtas where totalRcp counts "
               "every queue (UNCERTAIN in PMTA's docs: both read); never more than the host's rest.",
               ("vmta",), "queue"),
    MetricSpec("pmta_queue_bytes", "gauge", "Bytes queued, per VMTA and ISP (PMTA's kb x 1024).", ("vmta", "isp"),
               "queue"),
    MetricSpec("pmta_queue_connections", "gauge", "Open outbound connections, per VMTA and ISP.",
               ("vmta", "isp"), "queue"),
    MetricSpec("pmta_queue_backoff", "gauge", "Queues in backoff mode, per VMTA and ISP.", ("vmta", "isp"), "queue"),
    MetricSpec("pmta_queue_paused", "gauge", "Paused queues, per VMTA and ISP.", ("vmta", "isp"), "queue"),
    MetricSpec("pmta_queue_paused_recipients", "gauge",
               "Recipients in paused queues, per VMTA and ISP (part of `pmta_queue_recipients`; the stall alerts "
               "leave them out).", ("vmta", "isp"), "queue"),
    MetricSpec("pmta_status_queue_recipients", "gauge", "Recipients queued on the host (/status), by delivery type.",
               ("type",), "queue"),
    MetricSpec("pmta_status_queue_domains", "gauge", "Domains with queued mail on the host (/status).",
               ("type",), "queue"),
    MetricSpec("pmta_status_queue_bytes", "gauge", "Bytes queued on the host (/status; PMTA's kb x 1024).",
               ("type",), "queue"),
    MetricSpec("pmta_status_connections", "gauge", "Open SMTP connections on the host (/status).",
               ("direction",), "queue"),
    MetricSpec("pmta_status_spool_files", "gauge", "Spool files in use on the host (/status).", (), "queue"),
    # --- Watchtower's own health -------------------------------------------------------------
    MetricSpec("watchtower_build_info", "gauge", "Always 1; labels carry the build.", ("version", "python"), "self"),
    MetricSpec("watchtower_records_read_total", "counter", "Valid records read.", ("source", "type"), "self"),
    MetricSpec("watchtower_records_skipped_total", "counter",
               "Valid records of a type the source does not feed (its `records` list).", ("source", "type"), "self"),
    MetricSpec("watchtower_parse_errors_total", "counter",
               "Lines that could not be used, by reason; bad_timestamp and bad_size: a record counted without the "
               "field named (its delay, its bytes).", ("source", "reason"), "self"),
    MetricSpec("watchtower_records_repaired_total", "counter",
               "Records used after repair: invalid UTF-8 bytes replaced by U+FFFD (reason `invalid_utf8`).",
               ("source", "reason"), "self"),
    MetricSpec("watchtower_negative_delays_total", "counter",
               "d/t records whose timeLogged precedes timeQueued (clock skew); counted in the histograms as 0.",
               ("source",), "self"),
    MetricSpec("watchtower_lines_read_total", "counter", "Complete lines read, headers and bad lines included.",
               ("source",), "self"),
    MetricSpec("watchtower_read_bytes_total", "counter", "Bytes consumed from accounting files.", ("source",), "self"),
    MetricSpec("watchtower_files_followed", "gauge", "Files currently followed.", ("source",), "self"),
    MetricSpec("watchtower_file_opens_total", "counter", "Files opened for reading.", ("source",), "self"),
    MetricSpec("watchtower_rotations_total", "counter",
               "Files retired after being drained (rotated away, moved or deleted).", ("source",), "self"),
    MetricSpec("watchtower_truncations_total", "counter",
               "Files found truncated or rewritten in place under the read offset, each followed as a new file: from "
               "byte 0, or from its end when cut back to an older copy of itself (its first record unchanged: records "
               "read before). Not a new file in a deleted file's inode.",
               ("source",), "self"),
    MetricSpec("watchtower_read_errors_total", "counter", "Failed opens or reads, by reason.",
               ("source", "reason"), "self"),
    MetricSpec("watchtower_last_record_timestamp_seconds", "gauge",
               "timeLogged of the newest record read (Unix time), never ahead of the clock: a record up to a day "
               "ahead counts as logged when read, one further ahead, or before 2000 (a clock not set yet), is not "
               "believed.", ("source",), "self"),
    MetricSpec("watchtower_behind_bytes", "gauge",
               "Bytes written to followed files but not yet read, kept current while reading is paused (commits "
               "failing). A file not read by design (compressed, or lines ending in a lone CR: named once in the log) "
               "counts 0.", ("source",), "self"),
    MetricSpec("watchtower_last_checkpoint_timestamp_seconds", "gauge",
               "When offsets and counters were last committed (Unix time).", (), "self"),
    MetricSpec("watchtower_checkpoint_errors_total", "counter",
               "Failed commits to the state database, the correlator process's included.", (), "self"),
    MetricSpec("watchtower_correlator_restarts_total", "counter",
               "Restarts of the correlator process (correlator.worker: process) after it exited or could not "
               "start; absent with the thread worker.", (), "self"),
    MetricSpec("watchtower_correlator_stalled", "gauge",
               "1 while the correlator process (correlator.worker: process) is alive but has stored nothing for "
               "correlator.stall_timeout while behind (stopped, hung, waiting for a lock held elsewhere; /healthz is "
               "503 meanwhile), else 0; absent with the thread worker.", (), "self"),
    MetricSpec("watchtower_commit_backlog_rows", "gauge",
               "Rows read and held in memory for the correlator, not yet committed (reading pauses at "
               "tail.max_pending_rows: the read in progress may take it past that by one read's rows).",
               (), "self"),
    MetricSpec("watchtower_commit_backlog_bytes", "gauge",
               "Bytes of accounting files counted in the metrics whose rows the correlator has not stored yet and "
               "that are not held in memory: its own process (correlator.worker: process) or the state writer "
               "thread reads them again from the files.", (), "self"),
    MetricSpec("watchtower_commit_backlog_lost_bytes_total", "counter",
               "Backlog bytes whose file was removed or replaced before the correlator could read them again.",
               (), "self"),
    MetricSpec("watchtower_attribution_skipped_total", "counter",
               "f/rb records counted with vmta `unknown` without a look in the correlator's store: their batch's"
               " store lookups had spent their budget of index seeks or time (at a big store while the correlator is"
               " behind, or on a saturated host, the metrics would wait for them).", (), "self"),
    MetricSpec("watchtower_maintenance_errors_total", "counter",
               "Failed correlator maintenance runs (retention pruning); retried later.", (), "self"),
    MetricSpec("watchtower_files_open", "gauge", "Accounting files held open (bounded by tail.max_open_files).",
               (), "self"),
    MetricSpec("watchtower_label_overflow_total", "counter",
               "Records whose label value was replaced by `overflow`/`other` because a cap was reached or the "
               f"value was longer than {MAX_LABEL_VALUE_CHARS} characters.",
               ("label",), "self"),
    MetricSpec("watchtower_metric_series", "gauge", "Series currently held per record metric family.",
               ("metric",), "self"),
    MetricSpec("watchtower_counters_withheld", "gauge",
               "1 while the pmta_* record families are left off /metrics after an unclean stop (their restored values "
               "are lower than those last served) until the daemon has read that far again; 0 otherwise. Rules "
               "read it to tell a host catching up from one that stopped delivering.", (), "self"),
    MetricSpec("watchtower_counters_start_timestamp_seconds", "gauge",
               "When the pmta_* counters began (Unix time): the creation of the state database that keeps them "
               "across restarts (0 when it cannot be told, and in a oneshot's page). It changes only when they "
               "begin again from zero (the database moved aside or deleted): the critical PmtaDeliveryStalled reads "
               "it to know whether the deliveries counted since PMTA's last queue report can be trusted.", (),
               "self"),
    MetricSpec("watchtower_pmta_api_up", "gauge",
               "1 if the last poll of PMTA's management API read anything (then its pmta_queue_*/pmta_status_* "
               "series are served); 0 if it read nothing or the poller is stuck (then none are).", (), "self"),
    MetricSpec("watchtower_pmta_api_partial", "gauge",
               "1 if the last poll was up but a request failed or missed `pmta.poll_deadline`, or a listing gave a "
               "queue no recipient count (`rcp` missing, not a number, or out of range): the series it "
               "would have given (a VMTA's pmta_queue_*, those of a label it shares with others such as `overflow`, "
               "or pmta_status_*) are absent, not stale.", (), "self"),
    MetricSpec("watchtower_pmta_api_poll_duration_seconds", "gauge",
               "Time the last API poll's requests took, parsing their answers included: at most "
               "`pmta.poll_deadline` (a poll the deadline cut off reads the deadline); summing the answers into the "
               "gauges afterwards is not counted.", (), "self"),
    MetricSpec("watchtower_pmta_api_errors_total", "counter",
               "Failed API requests, by reason; a request cut by the poll deadline is a timeout, a redirect to another "
               "server is an http_status, an answer with a DTD, past 16 MiB or of more than 1,000,000 elements is a "
               "parse error, as is (once per VMTA and poll) a queue listed without a recipient count.", ("reason",),
               "self"),
    MetricSpec("watchtower_pmta_queue_coverage_ratio", "gauge",
               "Share of the host's queued recipients (/status, else the unfiltered list's totalRcp; absent without "
               "either) the queue gauges account for (per queue, and beyond the VMTAs' top-N listings); weighted by "
               "recipients, so a VMTA with a small backlog barely moves it.",
               (), "self"),
)))

SPECS: dict[str, MetricSpec] = {m.name: m for m in METRICS}
DEPRECATED_ALIASES: dict[str, tuple[MetricSpec, ...]] = {
    new: tuple(m for m in METRICS if m.deprecated_for == new) for new in RENAMED}
"""Current name -> the specs of its deprecated old names (served by `_make` from the same values)."""


def sample_names(name: str, kind: str) -> tuple[str, ...]:
    """The sample names of a family in the exposition (a counter's is its own name: it ends in `_total`), which
    `/metrics?name[]=` selects by."""
    return (name,) if kind == "counter" else (name + "_bucket", name + "_count", name + "_sum")

PARSE_ERROR_REASONS: tuple[str, ...] = (
    "bad_quoting",
    "short_row",
    "long_row",
    "unknown_type",
    "missing_header",
    "bad_timestamp",
    "nul_padding",
    "bad_json",
    "bad_size",
)
READ_ERROR_REASONS: tuple[str, ...] = ("permission", "not_found", "io", "stat", "scan", "lost")
"""stat: a glob match that cannot be stat'ed (symlink loop, stale NFS handle, ...); scan: a directory of a glob
that cannot be listed (descriptors exhausted, I/O error): the files already followed are kept; not_found: a file
gone before it could be opened, or a symlink to a missing file; lost: a file that went (deleted, moved out of reach)
while no descriptor of it was open and bytes of it were unread: those records are lost (one per file)."""

LABEL_VALUES: dict[str, str] = {
    "vmta": "PMTA's VirtualMTA name as logged; when empty, the VirtualMTA part of the record's `queue` "
    "(`domain/vmta`), else `none`; `unknown` on f/rb/rs records with no "
    f"correlated delivery, `overflow` past `labels.max_vmtas` or longer than {MAX_LABEL_VALUE_CHARS} characters "
    "(record series and queue gauges alike).",
    "vmta_pool": "PMTA's vmtaPool as logged; `none` when empty, `unknown` as for vmta, `overflow` past "
    f"`labels.max_pools` or longer than {MAX_LABEL_VALUE_CHARS} characters.",
    "isp": "Mailbox provider from the shipped ISP table: gmail, google_workspace, yahoo, microsoft, office365, "
    "apple, comcast, gmx, mailru, yandex, orange, other (the table is overridable). Placed by the recipient domain, "
    "else dsnMta. An f/rb/rs record: its recipient domain (or the MX a delivery taught), else its dsnMta, else for f "
    "its reportingMta (`dns; hotmail.com`, where Microsoft JMRP hides the recipient), else the provider of the "
    "delivery the correlator matched it to; `other` when none of these names one.",
    "category": "PMTA's bounceCat: the 17 PMTA categories, `none` when empty, `unknown` otherwise.",
    "class": "Response class: throttled, reputation, blocklisted, auth_failure, tls, content, policy, "
    "user_unknown, mailbox_disabled, mailbox_full, recipient_rate, bad_domain, network, transient_remote, "
    "message_too_large, protocol, expired, other.",
    "feedback_type": "ARF Feedback-Type: abuse, auth-failure, fraud, not-spam, virus, other; `unknown` when empty.",
    "action": "dsnAction: delivered, relayed, failed, delayed, expanded; `unknown` otherwise.",
    "sender": "Sending domain (MAIL FROM) from `labels.senders`, or the first `labels.max_senders` seen (of at most "
    f"{MAX_LABEL_VALUE_CHARS} characters); else `other`. `none` for a MAIL FROM without a domain (the null sender "
    "`<>` of bounces and DSNs) when `labels.senders` is not set. A file whose header has no `orig` column adds "
    "nothing to the pmta_sender_* series (its records are counted by the other series).",
    "source": "The `name` of a configured source.",
    "type": "Record type (d, b, t, tq, f, rb, rs, r) or, on pmta_status_*, PMTA's delivery type (smtp, pipe, "
    "discard, file, alias, bounceProcessor, feedbackLoopProcessor, gmImprinter, and the first others seen up to 32 "
    f"types; later ones, and any longer than {MAX_LABEL_VALUE_CHARS} characters, summed as `overflow`).",
    "reason": "Parse errors: " + ", ".join(PARSE_ERROR_REASONS) + ". Repairs: invalid_utf8. Read errors: "
    + ", ".join(READ_ERROR_REASONS) + ". API errors: timeout, connect, http_status, parse.",
    "direction": "in or out.",
    "label": "vmta, vmta_pool or sender.",
    "metric": "A record metric family name.",
    "version": "Watchtower version.",
    "python": "Python version.",
}

RECORD_TYPE_VALUES: tuple[str, ...] = ("d", "b", "t", "tq", "f", "rb", "rs", "r")


def _family_name(spec: MetricSpec) -> str:
    return spec.name.removesuffix("_total") if spec.kind == "counter" else spec.name


def _make(spec: MetricSpec, registry: CollectorRegistry) -> Counter | Gauge | Histogram:
    cls = {"counter": Counter, "gauge": Gauge}[spec.kind]  # self metrics are never histograms
    aliases = DEPRECATED_ALIASES.get(spec.name, ())
    metric = cls(_family_name(spec), spec.help, list(spec.labels), registry=None if aliases else registry)
    if aliases:
        registry.register(_WithDeprecatedAliases(metric, aliases))
    return metric


class _WithDeprecatedAliases:
    """Serves a renamed metric under its current name and its deprecated old names, from one read of its values.

    The old names cost nothing where values change: `bytes_read` is incremented in the tailer's read loop (per
    chunk of each file) and updating a second child there would double that work (a lock and a label lookup
    more per read) for a name on its way out. Copying the families here, at collect time, costs a few samples
    per source per scrape; and since both names come from the same collect() they carry identical values in
    every scrape (a counter incremented between two collects could not make them differ), including the
    children `SelfMetrics.init_source` creates at 0. Registered in place of the metric itself: describe() names
    both, so the registry refuses another owner of an old name, and `/metrics?name[]=OLD` selects it.
    """

    def __init__(self, metric: Counter | Gauge | Histogram, aliases: tuple[MetricSpec, ...]) -> None:
        self.metric = metric
        self.aliases = aliases

    def describe(self) -> Iterator[Metric]:
        for fam in self.metric.describe():
            yield fam
            yield from (_renamed(fam, alias) for alias in self.aliases)

    def collect(self) -> Iterator[Metric]:
        for fam in self.metric.collect():
            yield fam
            yield from (_renamed(fam, alias) for alias in self.aliases)


def _renamed(fam: Metric, spec: MetricSpec) -> Metric:
    """`fam`'s samples under `spec`'s name and help (a sample keeps its suffix: `_total` of a counter)."""
    base = _family_name(spec)
    out = Metric(base, spec.help, fam.type, fam.unit)
    out.samples = [s._replace(name=base + s.name[len(fam.name):]) for s in fam.samples]
    return out


class SelfMetrics:
    """Watchtower's own health metrics (the `watchtower_*` rows of the table) on one registry."""

    def __init__(self, registry: CollectorRegistry) -> None:
        def m(name: str) -> Counter | Gauge:
            return _make(SPECS[name], registry)  # type: ignore[return-value]

        self.build_info = m("watchtower_build_info")
        self.build_info.labels(__version__, platform.python_version()).set(1)
        self.records_read = m("watchtower_records_read_total")
        self.records_skipped = m("watchtower_records_skipped_total")
        self.parse_errors = m("watchtower_parse_errors_total")
        self.lines_read = m("watchtower_lines_read_total")
        # bytes_read, bytes_behind, commit_backlog_bytes_lost: attribute names of the metrics' old names (what the
        # tailer and the daemon update), now serving the new names and those old ones (RENAMED)
        self.bytes_read = m("watchtower_read_bytes_total")
        self.files_followed = m("watchtower_files_followed")
        self.file_opens = m("watchtower_file_opens_total")
        self.rotations = m("watchtower_rotations_total")
        self.truncations = m("watchtower_truncations_total")
        self.read_errors = m("watchtower_read_errors_total")
        self.last_record_ts = m("watchtower_last_record_timestamp_seconds")
        self.bytes_behind = m("watchtower_behind_bytes")
        self.last_checkpoint_ts = m("watchtower_last_checkpoint_timestamp_seconds")
        self.counters_start_ts = m("watchtower_counters_start_timestamp_seconds")
        self.checkpoint_errors = m("watchtower_checkpoint_errors_total")
        self.commit_backlog_rows = m("watchtower_commit_backlog_rows")
        self.commit_backlog_bytes = m("watchtower_commit_backlog_bytes")
        self.commit_backlog_bytes_lost = m("watchtower_commit_backlog_lost_bytes_total")
        self.maintenance_errors = m("watchtower_maintenance_errors_total")
        self.attribution_skipped = m("watchtower_attribution_skipped_total")
        self.files_open = m("watchtower_files_open")
        self.label_overflow = m("watchtower_label_overflow_total")
        for label in ("vmta", "vmta_pool", "sender"):  # at 0: a first burst of overflows is a rate() like any other
            self.label_overflow.labels(label)
        self.records_repaired = m("watchtower_records_repaired_total")
        self.negative_delays = m("watchtower_negative_delays_total")

    def init_source(self, source: str, feeds: frozenset[str] | None = None) -> None:
        """Create a source's series at 0 so rate() works from the first scrape (`feeds`: the record types it takes,
        None for all; the others are the types its records can be skipped as)."""
        for t in RECORD_TYPE_VALUES:
            self.records_read.labels(source, t)
            if feeds is not None and t not in feeds:
                self.records_skipped.labels(source, t)
        for reason in PARSE_ERROR_REASONS:
            self.parse_errors.labels(source, reason)
        for reason in READ_ERROR_REASONS:
            self.read_errors.labels(source, reason)
        self.records_repaired.labels(source, "invalid_utf8")
        self.negative_delays.labels(source)
        # bytes_read and bytes_behind (watchtower_read_bytes_total, watchtower_behind_bytes) bring their deprecated
        # old names along: those are served from these children (_WithDeprecatedAliases), at 0 from here on too
        for metric in (self.lines_read, self.bytes_read, self.file_opens, self.rotations, self.truncations,
                       self.files_followed, self.bytes_behind):
            metric.labels(source)


def named_self_metrics(registry: CollectorRegistry, names: tuple[str, ...]) -> dict[str, Counter | Gauge]:
    """The named watchtower_* metrics of one part of the daemon, created on demand by it (the queue poller: its
    collector serves the others from the same snapshot as the queue gauges; the correlator process's restarts)."""
    return {n: _make(SPECS[n], registry) for n in names}
