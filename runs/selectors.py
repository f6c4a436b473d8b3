"""Read-side queries about runs, shared by the API, the admin and health checks."""

import functools
import json
from collections import namedtuple
from datetime import UTC, datetime, timedelta

from django.conf import settings
from django.db import connection
from django.db.models import (
    BooleanField,
    Case,
    DateTimeField,
    ExpressionWrapper,
    F,
    FilteredRelation,
    OuterRef,
    Q,
    Subquery,
    Value,
    When,
)
from django.db.models.functions import Coalesce, Now
from django.db.models.lookups import LessThan
from django.utils import timezone

from reports.models import REPORT_SETTINGS_FIELDS, Report
from runs.models import Run, RunStatus, SchedulerLease, WorkerHeartbeat


def runs_with_report():
    """Runs with what their pages show: the report, who asked, the deliveries, and the
    number of the report's version each ran."""
    return (
        Run.objects.select_related("report", "requested_by", "cancelled_by")
        .prefetch_related("deliveries")
        .annotate(report_version_number=F("report_version__history_version"))
    )


def report_version_number(run):
    """The number of the report's version ``run`` ran (None before it started, or for
    runs from before reports had versions)."""
    if run.report_version_id is None:
        return None
    if hasattr(run, "report_version_number"):
        return run.report_version_number
    return run.report_version.history_version


def successful_runs_newest_first():
    """Succeeded runs that still have their output, the one that finished last first.

    "Latest successful run" means this order everywhere (admin, API, latest.csv): a
    retry that finishes after a later-queued manual run holds the newer output.
    """
    return (
        Run.objects.filter(status=RunStatus.SUCCEEDED)
        .exclude(output="")
        .order_by("-finished_at", "-id")
    )


def latest_successful_run(report):
    """The newest succeeded run of ``report`` that still has its output file record."""
    return successful_runs_newest_first().select_related("report").filter(report=report).first()


def latest_successful_run_id():
    """``latest_successful_run``'s id as a subquery, to annotate reports with it."""
    runs = successful_runs_newest_first().filter(report=OuterRef("pk"))
    return Subquery(runs.values("pk")[:1])


def latest_successful_output():
    """The file name of ``latest_successful_run``'s output as a subquery."""
    runs = successful_runs_newest_first().filter(report=OuterRef("pk"))
    return Subquery(runs.values("output")[:1])


# The join reports_with_freshness makes to each report's tally of succeeded runs: a
# query built on it can read the tally's other columns without joining it again.
SUCCESS_TALLY = "success_tally"


def reports_with_freshness(now=None):
    """``with_freshness`` of all reports."""
    return with_freshness(Report.objects.all(), now)


def with_freshness(reports, now=None):
    """Reports with ``last_success_at`` (when a run of theirs last succeeded, or None)
    and ``stale``, as of ``now``.

    The one definition of stale: a report that declares ``expect_success_within`` and
    has had no run succeed within it before ``now`` (none since it was created, if none
    ever has). Reports without an expectation are never stale. The last success comes
    from the report's tally (RunTally), so retention deleting that run forgets nothing,
    and all reports cost one join, not a look through each report's runs.
    """
    now = now or timezone.now()
    deadline = ExpressionWrapper(
        Value(now, output_field=DateTimeField()) - F("expect_success_within"),
        output_field=DateTimeField(),
    )
    successes = FilteredRelation(
        "run_tallies", condition=Q(run_tallies__status=RunStatus.SUCCEEDED)
    )
    return reports.annotate(
        **{SUCCESS_TALLY: successes},
        last_success_at=F(f"{SUCCESS_TALLY}__last_finished_at"),
    ).annotate(
        stale=Case(
            When(expect_success_within__isnull=True, then=Value(False)),
            When(LessThan(Coalesce("last_success_at", "created_at"), deadline), then=Value(True)),
            default=Value(False),
            output_field=BooleanField(),
        )
    )


def freshness_of(report_ids=None, now=None):
    """``{report id: (stale, last_success_at)}`` as ``reports_with_freshness`` says, for
    all reports or those in ``report_ids``: one query."""
    reports = reports_with_freshness(now)
    if report_ids is not None:
        reports = reports.filter(pk__in=report_ids)
    return {
        pk: (stale, last_success_at)
        for pk, stale, last_success_at in reports.values_list("pk", "stale", "last_success_at")
    }


# What "a report's last run" means everywhere: the run queued last.
NEWEST_FIRST = ("-queued_at", "-id")


def with_last_run(reports):
    """``reports`` joined to each one's last run, ``last_run``: filter, order and read
    its fields as ``last_run__<field>`` (None for a report that has never run).

    One lookup per report through the (report, queued_at) index, however many of the
    run's fields are read.
    """
    newest = Run.objects.filter(report=OuterRef("pk")).order_by(*NEWEST_FIRST)
    return reports.annotate(
        last_run=FilteredRelation("runs", condition=Q(runs__pk=Subquery(newest.values("pk")[:1])))
    )


REPORT_ROW_FIELDS = ("id", *REPORT_SETTINGS_FIELDS, "next_run_at", "created_at", "updated_at")
LAST_RUN_FIELDS = ("id", "status", "queued_at", "finished_at", "row_count", "output")
FRESHNESS_FIELDS = ("stale", "last_success_at")
ReportRow = namedtuple("ReportRow", [*REPORT_ROW_FIELDS, *FRESHNESS_FIELDS, "last_run_id"])
LastRunRow = namedtuple("LastRunRow", LAST_RUN_FIELDS)


# Stand-ins compiled into the cached SQL, replaced by the real values at each call.
_SLUG, _NAME, _ID = "\x01slug", "\x01name", -0x7AB0_0001
_NOW = datetime(2000, 1, 1, 0, 0, 0, 1, tzinfo=UTC)


@functools.cache
def _reports_with_last_run_sql(vendor, *, by_slug, paged=False, limit=None):
    """The SQL of ``reports_with_last_run`` for the database ``vendor``, and its
    parameters: the stand-ins, each in the place of a value given at each call, and the
    constants of the freshness expressions."""
    reports = with_freshness(with_last_run(Report.objects.all()), now=_NOW)
    if by_slug:
        reports = reports.filter(slug=_SLUG)
    if paged:
        reports = reports.filter(Q(name__gt=_NAME) | Q(name=_NAME, id__gt=_ID))
    last_run = (f"last_run__{name}" for name in LAST_RUN_FIELDS)
    columns = (*REPORT_ROW_FIELDS, *FRESHNESS_FIELDS, *last_run)
    rows = reports.order_by("name", "id").values_list(*columns)
    if limit is not None:
        rows = rows[:limit]
    return rows.query.sql_with_params()


# Positions in a report row of what a plain cursor may hand over undecoded.
_JSON_COLUMNS = tuple(REPORT_ROW_FIELDS.index(name) for name in ("parameters", "targets"))
_DURATION_COLUMNS = tuple(
    REPORT_ROW_FIELDS.index(name) for name in ("expect_success_within", "notify_repeat_after")
)


def _adapted(moment):
    return connection.ops.adapt_datetimefield_value(moment)


def reports_with_last_run(slug=None, after=None, limit=None, now=None):
    """``(report rows, {run id: last run row})`` for all reports, or the one with ``slug``;
    by name, those after the ``(name, id)`` ``after``, at most ``limit`` of them.

    Rows are named tuples with the attributes the serializers read, ``stale`` and
    ``last_success_at`` (``with_freshness`` as of ``now``) among them. One query,
    compiled once and read by a plain cursor: listing 500 reports as model instances, or
    through the ORM's conversion of each value, cost more than the query itself
    (bench/api.py).
    """
    vendor = connection.vendor
    query, params = _reports_with_last_run_sql(
        vendor, by_slug=slug is not None, paged=after is not None, limit=limit
    )
    values = {
        _SLUG: slug,
        _NAME: after and after[0],
        _ID: after and after[1],
        _adapted(_NOW): _adapted(now or timezone.now()),
    }
    with connection.cursor() as cursor:
        if vendor == "postgresql":
            _read_moments_natively(cursor)
        cursor.execute(query, [values.get(param, param) for param in params])
        rows = cursor.fetchall()
    reports, last_runs, width = [], {}, len(REPORT_ROW_FIELDS) + len(FRESHNESS_FIELDS)
    stale = len(REPORT_ROW_FIELDS)
    for row in rows:
        fields = list(row[:width])
        fields[stale] = bool(fields[stale])  # SQLite's 0 or 1
        for column in _JSON_COLUMNS:
            if isinstance(fields[column], str):  # a JSON column read by a plain cursor
                fields[column] = json.loads(fields[column])
        for column in _DURATION_COLUMNS:
            if isinstance(fields[column], int):  # SQLite keeps microseconds
                fields[column] = timedelta(microseconds=fields[column])
        last_run_id = row[width]
        reports.append(ReportRow(*fields, last_run_id))
        if last_run_id is not None:
            last_runs[last_run_id] = LastRunRow(*row[width:])
    return reports, last_runs


def _read_moments_natively(cursor):
    """Let this cursor read timestamptz columns with psycopg's compiled loader. Django's
    loader (its Python subclass, which sets the connection's zone on each value) took
    two thirds of the time of reading 500 reports with their last runs; psycopg's gives
    the same moments in the session's zone, which Django sets to the connection's."""
    from psycopg.types.datetime import TimestamptzLoader

    cursor.cursor.adapters.register_loader("timestamptz", TimestamptzLoader)


def download_problem(run):
    """Why ``run`` has no output to download, or None if it has one."""
    if run.status in (RunStatus.QUEUED, RunStatus.RUNNING):
        return f"Run {run.pk} is {run.status}; its output is not ready yet."
    if run.status != RunStatus.SUCCEEDED:
        return f"Run {run.pk} {run.status} and has no output."
    if not run.output:
        return f"The output of run {run.pk} was deleted."
    return None


def worker_health(now=None):
    """What /healthz says about workers: count alive and the newest heartbeat's age."""
    now = now or timezone.now()
    max_age = timedelta(seconds=settings.HEALTH_WORKER_MAX_AGE_SECONDS)
    newest = WorkerHeartbeat.objects.order_by("-last_seen_at").first()
    age = (now - newest.last_seen_at).total_seconds() if newest else None
    health = {
        "workers_alive": WorkerHeartbeat.objects.filter(last_seen_at__gte=now - max_age).count(),
        "newest_heartbeat_age_seconds": round(age, 1) if age is not None else None,
        "ok": age is not None and age <= max_age.total_seconds(),
    }
    if not health["ok"]:
        health["problem"] = (
            f"No worker has sent a heartbeat in the last {max_age.total_seconds():g} s: "
            "queued runs wait."
        )
    return health


def scheduler_health():
    """What /healthz and the admin say about scheduling: who holds the scheduler lease,
    and whether fire passes happen. Judged by the database's clock, as the lease is.

    Not ok when no worker has held the lease for longer than the lease's length, or
    when the holder has made no fire pass for that long.
    """
    limit = settings.SCHEDULE_LEADER_LEASE_SECONDS
    lease = SchedulerLease.objects.annotate(db_now=Now()).order_by("pk").first()
    if lease is None or lease.expires_at is None:
        return {
            "ok": False,
            "leader": None,
            "problem": "No worker has held the scheduler lease yet: no report is scheduled.",
        }
    now = lease.db_now
    if lease.expires_at <= now:
        leaderless = (now - lease.expires_at).total_seconds()
        health = {
            "ok": leaderless <= limit,
            "leader": None,
            "last_leader": lease.holder,
            "seconds_without_leader": round(leaderless, 1),
        }
        if not health["ok"]:
            health["problem"] = (
                f"No worker has held the scheduler lease for {int(leaderless)} s (the last "
                f"holder, {lease.holder}, let it lapse at "
                f"{lease.expires_at:%Y-%m-%d %H:%M:%S} UTC): no report is scheduled."
            )
        return health
    last_pass = max(moment for moment in (lease.fire_pass_at, lease.acquired_at) if moment)
    silent = (now - last_pass).total_seconds()
    health = {
        "ok": silent <= limit,
        "leader": lease.holder,
        "lease_epoch": lease.epoch,
        "lease_expires_in_seconds": round((lease.expires_at - now).total_seconds(), 1),
        "seconds_since_fire_pass": round(silent, 1),
    }
    if not health["ok"]:
        health["problem"] = (
            f"The scheduling worker {lease.holder} holds the lease but has made no fire "
            f"pass for {int(silent)} s: no report is scheduled."
        )
    return health


def worker_is_alive(name, now=None):
    """Has the worker ``name`` (host:pid, or a host prefix) beaten recently?"""
    now = now or timezone.now()
    max_age = timedelta(seconds=settings.HEALTH_WORKER_MAX_AGE_SECONDS)
    return WorkerHeartbeat.objects.filter(
        name__startswith=name, last_seen_at__gte=now - max_age
    ).exists()


RECENT_FAILURES_WINDOW = timedelta(hours=24)


def failed_since(since):
    """Runs that failed at or after ``since``, the latest first (run_failed_finished_idx)."""
    return Run.objects.filter(status=RunStatus.FAILED, finished_at__gte=since).order_by(
        "-finished_at", "-id"
    )


def worker_status(now=None):
    """What the admin index shows: workers, who schedules, queue length, recent failures."""
    now = now or timezone.now()
    scheduler = scheduler_health()
    workers = [
        {
            "name": beat.name,
            "is_leader": beat.name == scheduler["leader"],
            "running_runs": beat.running_runs,
            "version": beat.version,
            "started_at": beat.started_at,
            "seconds_since_seen": (now - beat.last_seen_at).total_seconds(),
            "alive": (now - beat.last_seen_at).total_seconds()
            <= settings.HEALTH_WORKER_MAX_AGE_SECONDS,
        }
        for beat in WorkerHeartbeat.objects.order_by("-last_seen_at")[:20]
    ]
    return {
        "workers": workers,
        "scheduler": scheduler,
        "queued": Run.objects.filter(status=RunStatus.QUEUED).count(),
        "running": Run.objects.filter(status=RunStatus.RUNNING).count(),
        "failed_24h": failed_since(now - RECENT_FAILURES_WINDOW).count(),
    }
