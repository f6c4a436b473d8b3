"""The Prometheus metrics of ``GET /metrics``, read from the database at each scrape.

No figure is kept in the process: every web process answers with what the database says
at that moment, so any number of web and worker processes give one picture. A scrape
reads one row per report (its staleness from ``reports_with_freshness``, joined with its
tallies: counts and last runs), the number of queued and running runs (an index) and
the worker heartbeats: never the runs themselves.

The text is Prometheus' text format 0.0.4 as prometheus-client writes it. It is written
here rather than by ``prometheus_client.generate_latest``, which takes about 10 µs a
sample on the development machine, and 5,000 reports make 31,000 samples: a third of a
second a scrape (bench/metrics.py). The tests compare the two writers' bytes for the
same readings, odd label values included; numbers are formatted by prometheus-client.

Most reports' rows are the same from one scrape to the next, so the lines of a report
are kept, keyed by its whole row as read, until a scrape reads a different row: only
text is reused, never a figure (see ``ReportLines``).
"""

import functools
import re
import threading
from dataclasses import dataclass, field
from datetime import UTC, datetime
from operator import and_

from django.db import connection
from django.db.models import BigIntegerField, Case, Count, F, FilteredRelation, Func, Q, When
from django.utils import timezone
from isal import igzip
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4
from prometheus_client.utils import floatToGoString

from runs.models import FINISHED_STATUSES, Run, RunStatus, WorkerHeartbeat
from runs.selectors import SUCCESS_TALLY, reports_with_freshness

CONTENT_TYPE = CONTENT_TYPE_PLAIN_0_0_4
PREFIX = "reportsvc_"
# Plain strings: an enum member's hash is a Python call, 15,000 of them a scrape.
ACTIVE_STATUSES = tuple(status.value for status in (RunStatus.QUEUED, RunStatus.RUNNING))
FINAL_STATUSES = tuple(status.value for status in FINISHED_STATUSES)
MICROSECONDS = 1_000_000


def _sqlite_epoch_microseconds(sql):
    # Stored as UTC text, "YYYY-MM-DD HH:MM:SS[.ffffff]": whole seconds, then the
    # fraction's digits as written, padded to six.
    return (
        f"(CAST(strftime('%%s', {sql}) AS INTEGER) * 1000000 "
        f"+ CAST(substr(substr({sql}, 21) || '000000', 1, 6) AS INTEGER))"
    )


class EpochMicroseconds(Func):
    """A time stamp as Unix time in whole microseconds, computed by the database.

    An integer, exact on both databases: the driver reads integers about twice as fast
    as floats, and divided by a million it is the float ``datetime.timestamp()`` gives.
    """

    output_field = BigIntegerField()

    def as_postgresql(self, compiler, connection, **extra):
        # EXTRACT is numeric: exact to the microsecond before the cast.
        return self.as_sql(
            compiler,
            connection,
            template="(EXTRACT(EPOCH FROM %(expressions)s) * 1000000)::bigint",
            **extra,
        )

    def as_sqlite(self, compiler, connection, **extra):
        sql, params = compiler.compile(self.source_expressions[0])
        return _sqlite_epoch_microseconds(sql), params * 2


class MicrosecondsBetween(Func):
    """From the first time stamp to the second, in whole microseconds, computed by the
    database."""

    output_field = BigIntegerField()

    def as_postgresql(self, compiler, connection, **extra):
        (start, start_params), (end, end_params) = map(compiler.compile, self.source_expressions)
        sql = f"(EXTRACT(EPOCH FROM {end} - {start}) * 1000000)::bigint"
        return sql, [*end_params, *start_params]

    def as_sqlite(self, compiler, connection, **extra):
        (start, start_params), (end, end_params) = map(compiler.compile, self.source_expressions)
        sql = f"({_sqlite_epoch_microseconds(end)} - {_sqlite_epoch_microseconds(start)})"
        return sql, [*end_params, *end_params, *start_params, *start_params]


@dataclass
class Family:
    """One metric: its name (without the prefix, and a counter's without ``_total``),
    type, help and samples, ``(label values, value)`` in ``label_names`` order."""

    name: str
    kind: str
    help: str
    label_names: tuple
    samples: list = field(default_factory=list)

    @functools.cached_property
    def _sample_format(self):
        """The text around a sample's label values, labels sorted by name as
        prometheus-client writes them: (name, start, first label's index, middle, second
        label's index); no family has more than two labels."""
        name = PREFIX + self.name + ("_total" if self.kind == "counter" else "")
        first, *rest = sorted(range(len(self.label_names)), key=self.label_names.__getitem__)
        start = f'{name}{{{self.label_names[first]}="'
        if not rest:
            return name, start, first, None, None
        (second,) = rest
        return name, start, first, f'",{self.label_names[second]}="', second

    def header(self):
        name = self._sample_format[0]
        help_text = self.help.replace("\\", r"\\").replace("\n", r"\n")
        return f"# HELP {name} {help_text}\n# TYPE {name} {self.kind}\n"

    def lines(self, samples, escaped=None):
        """The samples' lines; ``escaped`` maps a label value to its text (label_value,
        or a memo of it). One f-string per sample: this is most of the writing."""
        escaped = escaped or label_value
        _, start, first, middle, second = self._sample_format
        if middle is None:
            return "".join(
                f'{start}{escaped(values[first])}"}} {number(value)}\n' for values, value in samples
            )
        return "".join(
            f'{start}{escaped(values[first])}{middle}{escaped(values[second])}"}} {number(value)}\n'
            for values, value in samples
        )

    def text(self, escaped=None):
        return self.header() + self.lines(self.samples, escaped)


def report_families():
    """The families read from the reports' rows, without samples, in the text's order."""
    return [
        Family(
            "report_last_success_timestamp_seconds",
            "gauge",
            "When a run of the report last succeeded (Unix time); absent if none ever did.",
            ("report",),
        ),
        Family(
            "report_last_run_duration_seconds",
            "gauge",
            "How long the report's last run took from start to end, whatever its outcome "
            "(skipped runs never start).",
            ("report",),
        ),
        Family(
            "report_stale",
            "gauge",
            "1 if the report expects a success within expect_success_within and none came, else 0.",
            ("report",),
        ),
        Family(
            "runs_finished",
            "counter",
            "Runs that ended, by report and final status. Deleting runs never lowers it.",
            ("report", "status"),
        ),
    ]


def report_samples(row):
    """A report's samples in each of ``report_families``, from its row of
    ``_report_rows``: slug, whether it expects a success, stale, when a run last
    succeeded and how long its last run took (microseconds), then the runs of each final
    status (FINAL_STATUSES order)."""
    slug, expects_success, stale, last_success, took, *counts = row
    labels = (slug,)
    return (
        [] if last_success is None else [(labels, last_success / MICROSECONDS)],
        [] if took is None else [(labels, took / MICROSECONDS)],
        [(labels, 1 if stale else 0)] if expects_success else [],
        # Every final status of every report, 0 until its first run: a series that
        # appeared at its first run would hide that run from increase() and rate().
        [
            ((slug, status), count or 0)
            for status, count in zip(FINAL_STATUSES, counts, strict=True)
        ],
    )


def read_metrics(now=None):
    """Every family with its samples, read from the database as of ``now``."""
    families = report_families()
    for row in _report_rows(now or timezone.now()):
        for family, samples in zip(families, report_samples(row), strict=True):
            family.samples.extend(samples)
    return [*families, _runs_now(), _worker_heartbeats()]


class ReportLines:
    """Each report's lines in each report family (encoded), as ``report_samples`` of its
    row says, remembered by row until a scrape reads a different one.

    A row holds every figure its lines show, so an equal row has equal lines: reusing
    them skips only the writing. Only the rows of the last scrape are kept, so a report
    that changed or went costs no memory. Worth it because writing 31,000 lines took
    longer than the database took to read them.
    """

    def __init__(self):
        self._by_row = {}
        self._lock = threading.Lock()

    def of(self, rows, families):
        """Per family, the lines of every row, in the rows' order."""
        with self._lock:
            known = self._by_row
        per_row = list(map(known.get, rows))
        if None in per_row or len(known) != len(per_row):
            escaped = _Memo(label_value).__getitem__
            per_row = [
                lines
                or tuple(
                    family.lines(samples, escaped).encode()
                    for family, samples in zip(families, report_samples(row), strict=True)
                )
                for row, lines in zip(rows, per_row, strict=True)
            ]
            with self._lock:
                self._by_row = dict(zip(rows, per_row, strict=True))
        return list(zip(*per_row, strict=True)) or [()] * len(families)


REPORT_LINES = ReportLines()


def metrics_text(now=None):
    """The whole text of a scrape, as ``exposition(read_metrics(now))`` writes it."""
    families = report_families()
    per_family = REPORT_LINES.of(_report_rows(now or timezone.now()), families)
    parts = []
    for family, lines in zip(families, per_family, strict=True):
        parts.append(family.header().encode())
        parts.extend(lines)
    parts.extend(family.text().encode() for family in (_runs_now(), _worker_heartbeats()))
    return b"".join(parts)


def _reports_with_tallies(now):
    """``_report_rows`` as a query: one row per report, by primary key."""
    reports = reports_with_freshness(now)
    ends, counts = {}, []
    for status in FINAL_STATUSES:
        tally = f"tally_{status}"
        if status == RunStatus.SUCCEEDED:
            tally = SUCCESS_TALLY  # joined already
        else:
            reports = reports.annotate(
                **{tally: FilteredRelation("run_tallies", condition=Q(run_tallies__status=status))}
            )
        ends[tally] = F(f"{tally}__last_finished_at")
        counts.append(F(f"{tally}__count"))
    # The last run's duration is its tally's whose run ended last; the database picks
    # it: one column instead of three per status.
    newest_first = [
        When(
            Q(**{f"{tally}__last_finished_at__isnull": False})
            & functools.reduce(
                and_,
                (
                    Q(**{f"{other}__last_finished_at__isnull": True})
                    | Q(**{f"{tally}__last_finished_at__gte": end})
                    for other, end in ends.items()
                    if other != tally
                ),
                Q(),
            ),
            then=MicrosecondsBetween(f"{tally}__last_started_at", f"{tally}__last_finished_at"),
        )
        for tally in ends
    ]
    return reports.order_by("pk").values_list(
        "slug",
        Q(expect_success_within__isnull=False),
        "stale",
        EpochMicroseconds("last_success_at"),
        Case(*newest_first, output_field=BigIntegerField()),
        *counts,
    )


# Stands for "now" in the compiled statement of _reports_with_tallies: compiling it (the
# ORM's work) took longer than the database took to run it, so it is compiled once.
PLACEHOLDER_NOW = datetime(2000, 1, 1, 0, 0, 0, 1, tzinfo=UTC)


@functools.cache
def _report_rows_statement(vendor):
    return _reports_with_tallies(PLACEHOLDER_NOW).query.sql_with_params()


def _report_rows(now):
    """The rows of _reports_with_tallies as of ``now``, as the database driver gives them:
    the ORM's per-value converters cost more than the query for thousands of rows."""
    sql, params = _report_rows_statement(connection.vendor)
    adapt = connection.ops.adapt_datetimefield_value
    placeholder, now = adapt(PLACEHOLDER_NOW), adapt(now)
    params = [now if param == placeholder else param for param in params]
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        return cursor.fetchall()


def _runs_now():
    family = Family(
        "runs", "gauge", "Runs waiting (queued) and being executed (running) now.", ("status",)
    )
    counts = dict(
        Run.objects.filter(status__in=ACTIVE_STATUSES)
        .order_by()
        .values_list("status")
        .annotate(count=Count("pk"))
    )  # run_status_queued_idx
    family.samples = [((status,), counts.get(status, 0)) for status in ACTIVE_STATUSES]
    return family


def _worker_heartbeats():
    family = Family(
        "worker_last_heartbeat_timestamp_seconds",
        "gauge",
        "When each worker (host:pid) last beat (Unix time). A worker that stops removes "
        "its row; a crashed one's stays until housekeeping removes it a day later.",
        ("worker",),
    )
    family.samples = [
        ((name,), seen / MICROSECONDS)
        for name, seen in WorkerHeartbeat.objects.order_by("name").values_list(
            "name", EpochMicroseconds("last_seen_at")
        )
    ]
    return family


def label_value(text):
    """A label value in the text format: backslash, newline and double quote escaped,
    as prometheus-client's writer escapes them."""
    return text.replace("\\", r"\\").replace("\n", r"\n").replace('"', r"\"")


def exposition(families):
    """The families in Prometheus' text format (0.0.4), as bytes."""
    escaped = _Memo(label_value).__getitem__  # a label value is escaped once
    return "".join(family.text(escaped) for family in families).encode()


class _Memo(dict):
    """``memo[key]`` is ``function(key)``, computed once per key."""

    def __init__(self, function):
        super().__init__()
        self.function = function

    def __missing__(self, key):
        value = self[key] = self.function(key)
        return value


@functools.lru_cache(maxsize=1 << 15)
def number(value):
    """A value in the text format, as prometheus-client writes it.

    Most values are the same from one scrape to the next (a count, a last success): each
    is formatted once. Formatting only: the figures are read anew at every scrape.
    """
    return floatToGoString(value)


ACCEPTS_GZIP = re.compile(r"\bgzip\b")


def metrics_body(accept_encoding, now=None):
    """``(body, content encoding or "")`` for a scraper that accepts ``accept_encoding``.

    Prometheus asks for gzip: 5,000 reports' 2.2 MiB of text go as about 120 KiB, for
    1 ms of CPU (ISA-L at level 1, as for csv_gz outputs).
    """
    text = metrics_text(now)
    if ACCEPTS_GZIP.search(accept_encoding):
        return igzip.compress(text, compresslevel=1), "gzip"
    return text, ""
