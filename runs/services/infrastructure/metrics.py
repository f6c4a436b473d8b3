"""The Prometheus metrics of ``GET /metrics``, read from the database at each scrape.

No figure is kept in the process: every web process answers with what the database says
at that moment, so any number of web and worker processes give one picture. A scrape
reads one row per report (its staleness from ``reports_with_freshness``, joined with its
tallies: counts and last runs), the number of queued and running runs (an index) and
the worker heartbeats: never the runs themselves.

The text is Prometheus' text format 0.0.4 as prometheus-client writes it. It is written
here rather than by ``prometheus_client.generate_latest``, which takes about 10 µs a
sample on the development machine, and 5,000 reports make 26,000 samples: a quarter of
a second and more a scrape (bench/metrics.py). The tests compare the two writers' bytes
for the same readings, odd label values included; numbers are formatted by
prometheus-client.
"""

import functools
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime
from operator import and_

from django.db import connection
from django.db.models import Case, Count, F, FilteredRelation, FloatField, Func, Q, When
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


class EpochSeconds(Func):
    """A time stamp as Unix time (float seconds), computed by the database: turning
    20,000 PostgreSQL time stamps into datetimes took longer than the whole scrape."""

    output_field = FloatField()

    def as_postgresql(self, compiler, connection, **extra):
        # date_part() is float8 already; EXTRACT() is numeric, slower, then cast.
        return self.as_sql(
            compiler, connection, template="date_part('epoch', %(expressions)s)", **extra
        )

    def as_sqlite(self, compiler, connection, **extra):
        # Stored as UTC text, "YYYY-MM-DD HH:MM:SS[.ffffff]": whole seconds, plus the
        # fraction as written (julianday() would round it).
        sql, params = compiler.compile(self.source_expressions[0])
        return (
            f"(CAST(strftime('%%s', {sql}) AS REAL) + CAST('0' || substr({sql}, 20) AS REAL))",
            params * 2,
        )


class SecondsBetween(Func):
    """From the first time stamp to the second, in seconds (float), computed by the
    database."""

    output_field = FloatField()

    def as_postgresql(self, compiler, connection, **extra):
        (start, start_params), (end, end_params) = map(compiler.compile, self.source_expressions)
        return f"date_part('epoch', {end} - {start})", [*end_params, *start_params]

    def as_sqlite(self, compiler, connection, **extra):
        (start, start_params), (end, end_params) = map(compiler.compile, self.source_expressions)
        # Whole seconds and fractions apart, so no digit of a short run is lost.
        sql = (
            f"((CAST(strftime('%%s', {end}) AS INTEGER) - CAST(strftime('%%s', {start}) "
            f"AS INTEGER)) + (CAST('0' || substr({end}, 20) AS REAL) - "
            f"CAST('0' || substr({start}, 20) AS REAL)))"
        )
        return sql, [*end_params, *start_params, *end_params, *start_params]


@dataclass
class Family:
    """One metric: its name (without the prefix, and a counter's without ``_total``),
    type, help and samples, ``(label values, value)`` in ``label_names`` order."""

    name: str
    kind: str
    help: str
    label_names: tuple
    samples: list = field(default_factory=list)


def read_metrics(now=None):
    """Every family, read from the database as of ``now``."""
    now = now or timezone.now()
    last_success = Family(
        "report_last_success_timestamp_seconds",
        "gauge",
        "When a run of the report last succeeded (Unix time); absent if none ever did.",
        ("report",),
    )
    duration = Family(
        "report_last_run_duration_seconds",
        "gauge",
        "How long the report's last run took from start to end, whatever its outcome "
        "(skipped runs never start).",
        ("report",),
    )
    stale = Family(
        "report_stale",
        "gauge",
        "1 if the report expects a success within expect_success_within and none came, else 0.",
        ("report",),
    )
    finished = Family(
        "runs_finished",
        "counter",
        "Runs that ended, by report and final status. Deleting runs never lowers it.",
        ("report", "status"),
    )
    rows = _report_rows(now)
    # Per row: slug, expects a success, stale, last success, last run's duration, then
    # the runs of each final status (FINAL_STATUSES order).
    stale.samples = [((row[0],), 1 if row[2] else 0) for row in rows if row[1]]
    last_success.samples = [((row[0],), row[3]) for row in rows if row[3] is not None]
    duration.samples = [((row[0],), row[4]) for row in rows if row[4] is not None]
    # Every final status of every report, 0 until its first run: a series that appeared
    # at its first run would hide that run from increase() and rate().
    counted = list(enumerate(FINAL_STATUSES, start=5))
    finished.samples = [
        ((row[0], status), row[column] or 0) for row in rows for column, status in counted
    ]
    return [last_success, duration, stale, finished, _runs_now(), _worker_heartbeats()]


def _reports_with_tallies(now):
    """One row per report: slug, whether it expects a success, stale, when a run last
    succeeded (Unix time), how long its last run took (the newest end among the final
    statuses' tallies), then each final status' count, in FINAL_STATUSES order."""
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
    # The database picks the newest: one column instead of three per status.
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
            then=SecondsBetween(f"{tally}__last_started_at", f"{tally}__last_finished_at"),
        )
        for tally in ends
    ]
    return reports.order_by("pk").values_list(
        "slug",
        Q(expect_success_within__isnull=False),
        "stale",
        EpochSeconds("last_success_at"),
        Case(*newest_first, output_field=FloatField()),
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
        ((name,), seen)
        for name, seen in WorkerHeartbeat.objects.order_by("name").values_list(
            "name", EpochSeconds("last_seen_at")
        )
    ]
    return family


def label_value(text):
    """A label value in the text format: backslash, newline and double quote escaped,
    as prometheus-client's writer escapes them."""
    return text.replace("\\", r"\\").replace("\n", r"\n").replace('"', r"\"")


def exposition(families):
    """The families in Prometheus' text format (0.0.4), as bytes."""
    lines = []
    escaped = _Memo(label_value)  # a label value is escaped once, whatever carries it
    for family in families:
        name = PREFIX + family.name + ("_total" if family.kind == "counter" else "")
        help_text = family.help.replace("\\", r"\\").replace("\n", r"\n")
        lines.append(f"# HELP {name} {help_text}\n# TYPE {name} {family.kind}\n")
        # Labels sorted by name, as prometheus-client writes them. One f-string per
        # sample (no join, no list): this loop is most of a scrape's work.
        first, *rest = sorted(range(len(family.label_names)), key=family.label_names.__getitem__)
        start = f'{name}{{{family.label_names[first]}="'
        if not rest:
            lines.extend(
                f'{start}{escaped[values[first]]}"}} {number(value)}\n'
                for values, value in family.samples
            )
            continue
        (second,) = rest  # no family has more than two labels
        middle = f'",{family.label_names[second]}="'
        lines.extend(
            f'{start}{escaped[values[first]]}{middle}{escaped[values[second]]}"}} {number(value)}\n'
            for values, value in family.samples
        )
    return "".join(lines).encode()


@functools.lru_cache(maxsize=1 << 15)
def number(value):
    """A value in the text format, as prometheus-client writes it.

    Most values are the same from one scrape to the next (a count, a last success): each
    is formatted once, which halves the writing of a scrape. Formatting only: the
    figures are read anew at every scrape.
    """
    return floatToGoString(value)


class _Memo(dict):
    """``memo[key]`` is ``function(key)``, computed once per key."""

    def __init__(self, function):
        super().__init__()
        self.function = function

    def __missing__(self, key):
        value = self[key] = self.function(key)
        return value


def metrics_text(now=None):
    return exposition(read_metrics(now))


ACCEPTS_GZIP = re.compile(r"\bgzip\b")


def metrics_body(accept_encoding, now=None):
    """``(body, content encoding or "")`` for a scraper that accepts ``accept_encoding``.

    Prometheus asks for gzip: 5,000 reports' 1.9 MiB of text go as about 100 KiB, for
    1 ms of CPU (ISA-L at level 1, as for csv_gz outputs).
    """
    text = metrics_text(now)
    if ACCEPTS_GZIP.search(accept_encoding):
        return igzip.compress(text, compresslevel=1), "gzip"
    return text, ""
