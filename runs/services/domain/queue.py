"""The run queue: how runs enter (manual, scheduled fires, retries) and get claimed."""

import logging
from collections import Counter
from datetime import timedelta

from django.conf import settings
from django.db import IntegrityError, transaction
from django.db.models import Q
from django.utils import timezone

from datasources.registry import source_for
from datasources.sandbox import ReportSQLError
from reports.models import Report
from reports.parameters import (
    BUILT_IN_NAMES,
    ParameterError,
    all_parameters,
    json_value,
    resolve_values,
)
from reports.services.history import newest_version_id
from reports.services.statements import declared_of
from reports.zones import report_zone
from reportsvc.moments import out_of_range_message, representable, utc_text
from runs.models import Run, RunStatus, RunTrigger
from runs.services.domain.intervals import (
    default_interval,
    given_without_bounds,
    requested_interval,
)
from runs.services.domain.transitions import start_queued_runs, tally_runs_that_never_started

logger = logging.getLogger(__name__)

ACTIVE_STATUSES = (RunStatus.QUEUED, RunStatus.RUNNING)


def validated_request(report, given, now=None):
    """``(values to store, interval)`` for a run of ``report`` with the ``given``
    parameter values (JSON or text; ``interval_start``/``interval_end`` among them set
    the interval). Raises ParameterError naming the parameter that is wrong."""
    given = _values_object(given)
    interval = requested_interval(report, given, now or timezone.now())
    return checked_values(report, given, interval), interval


def checked_values(report, given, interval):
    """The ``given`` parameter values to store on a run of ``report`` over ``interval``:
    the declared ones each in its type's JSON form (the interval's bounds go on the run
    itself). Raises ParameterError naming the parameter that is wrong."""
    given = _values_object(given)
    declared = declared_of(report)
    rest = given_without_bounds(given)
    values = resolve_values(declared, rest, interval, report_zone(report))
    by_name = all_parameters(declared)
    return {name: json_value(by_name[name], values[name]) for name in rest}


def _values_object(given):
    if given is not None and not isinstance(given, dict):
        raise ParameterError("parameters", 'Give the values as an object: {"name": value}.')
    return given or {}


IDEMPOTENCY_WINDOW = timedelta(hours=24)


class QueueFull(Exception):
    """The report has as many runs waiting as it may; ``str()`` says so to the user."""


def insert_requested_runs(report, idempotency_key, insert, replay):
    """Insert the runs one request queues for ``report``, at most once per idempotency
    key; ``(what insert or replay returned, created)``.

    Requests for one report take turns on its row lock, so checks made in ``insert``
    (room in the queue, intervals covered already) hold until the runs are in.
    ``insert(key)`` creates the runs, the first carrying ``key``. With a key used for
    this report within IDEMPOTENCY_WINDOW, ``replay(earlier run)`` answers instead
    (``created`` False): the request that used it first queued ``earlier``. An older
    key is free again.
    """
    with transaction.atomic():
        # SQLite has no row locks; its IMMEDIATE transactions already take turns.
        list(Report.objects.select_for_update().filter(pk=report.pk).values_list("pk"))
        if idempotency_key:
            earlier = Run.objects.filter(report=report, idempotency_key=idempotency_key).first()
            if earlier is not None:
                if earlier.queued_at >= timezone.now() - IDEMPOTENCY_WINDOW:
                    return replay(earlier), False
                Run.objects.filter(pk=earlier.pk).update(idempotency_key="")  # expired
        if not idempotency_key:
            return insert(""), True
        try:
            with transaction.atomic():
                return insert(idempotency_key), True
        except IntegrityError:  # a concurrent request with the same key got there first
            earlier = Run.objects.get(report=report, idempotency_key=idempotency_key)
            return replay(earlier), False


def request_run(
    report,
    trigger,
    *,
    requested_by=None,
    idempotency_key="",
    parameters=None,
    interval=None,
    rerun_of=None,
):
    """Queue a run on request (API, admin); returns ``(run, created)``.

    ``parameters`` (checked by :func:`validated_request`) and ``interval`` (start,
    end; default: the latest complete one) are the run's values; ``rerun_of`` the run
    it repeats.

    With an idempotency key, a repeat for the same report within 24 hours returns the
    run the first request queued instead of queuing another. A report that already has
    ``REPORT_MAX_QUEUED_RUNS`` runs waiting gets no more: :class:`QueueFull`.
    """

    def insert(key):
        _check_queue_room(report)
        start, end = interval or default_interval(report, timezone.now())
        return Run.objects.create(
            report=report,
            trigger=trigger,
            requested_by=requested_by,
            parameters=parameters or {},
            interval_start=start,
            interval_end=end,
            rerun_of=rerun_of,
            idempotency_key=key,
        )

    return insert_requested_runs(report, idempotency_key, insert, replay=lambda earlier: earlier)


def _check_queue_room(report):
    limit = settings.REPORT_MAX_QUEUED_RUNS
    if not limit:
        return
    waiting = (
        Run.objects.filter(report=report, status=RunStatus.QUEUED)
        .exclude(trigger=RunTrigger.BACKFILL)[:limit]
        .count()
    )  # backfills have a cap of their own (BACKFILL_MAX_RUNS)
    if waiting >= limit:
        raise QueueFull(
            f"Report '{report.slug}' already has {waiting} runs waiting in the queue, the "
            "most one report may have (REPORT_MAX_QUEUED_RUNS). Queue another once one "
            "of them has started."
        )


FIRE_INSERT_BATCH = 500


def record_scheduled_fires(fires):
    """Record schedule fires, ``(report_id, fire time, previous fire time)``, as runs.

    Each run covers the interval from the previous fire time of its schedule to its
    own. ``(report, scheduled_for)`` is unique, so a fire recorded already is left
    alone. A fire while the report's previous run is still queued or running is
    recorded as ``skipped`` instead of piling up or overlapping.
    """
    if not fires:
        return
    report_ids = sorted({report_id for report_id, _, _ in fires})
    busy = {}
    active = Q(status=RunStatus.QUEUED, report_id__in=report_ids) | Q(
        status=RunStatus.RUNNING, report_id__in=report_ids
    )  # one branch per partial index (run_queue_idx, run_running_idx)
    # Backfilled runs wait in line without making fires skip: the fire queues behind them.
    for report_id, run_id, status in (
        Run.objects.filter(active)
        .exclude(trigger=RunTrigger.BACKFILL)
        .order_by("-queued_at")
        .values_list("report_id", "pk", "status")
    ):
        busy[report_id] = (run_id, status)  # ends with the oldest active run
    now = timezone.now()
    runs = [
        _fire_run(report_id, when, previous, busy.get(report_id), now)
        for report_id, when, previous in fires
    ]
    with transaction.atomic(savepoint=False):
        Run.objects.bulk_create(runs, ignore_conflicts=True, batch_size=FIRE_INSERT_BATCH)
        _tally_skipped_fires([run for run in runs if run.status == RunStatus.SKIPPED], now)


def _tally_skipped_fires(skipped, now):
    """Tally the fires this call recorded as skipped (runs born finished).

    A fire recorded before is a conflict the insert left alone; the runs this call
    inserted are those of its fires stamped with its own ``now``.
    """
    if not skipped:
        return
    wanted = {(run.report_id, run.scheduled_for) for run in skipped}
    report_ids = sorted({report_id for report_id, _ in wanted})
    counts = Counter()
    for start in range(0, len(report_ids), FIRE_INSERT_BATCH):
        inserted = Run.objects.filter(
            report_id__in=report_ids[start : start + FIRE_INSERT_BATCH],
            queued_at=now,
            status=RunStatus.SKIPPED,
        ).values_list("report_id", "scheduled_for")
        counts.update(report_id for report_id, fire in inserted if (report_id, fire) in wanted)
    tally_runs_that_never_started(RunStatus.SKIPPED, counts)


def _fire_run(report_id, scheduled_for, interval_start, previous_run, now):
    """A fire's run, queued, or skipped from the start if the previous one is active.

    Born skipped, never queued-then-skipped, so no worker can claim it in between.
    """
    run = Run(
        report_id=report_id,
        trigger=RunTrigger.SCHEDULE,
        scheduled_for=scheduled_for,
        interval_start=interval_start,
        interval_end=scheduled_for,
        queued_at=now,
    )
    if previous_run is not None:
        run.status = RunStatus.SKIPPED
        run.finished_at = now
        run.error = (
            f"Skipped: the previous run ({previous_run[0]}) was still {previous_run[1]} "
            "at this fire time."
        )
    return run


def start_run_in_this_process(
    report, trigger, worker, *, requested_by=None, parameters=None, interval=None
):
    """A run born running, for a process that executes it itself (``runreport``), with
    the report's SQL and newest version, as a claim records them.

    Queuing it first would let a polling worker claim it before this process does.
    """
    now = timezone.now()
    start, end = interval or default_interval(report, now)
    return Run.objects.create(
        report=report,
        trigger=trigger,
        status=RunStatus.RUNNING,
        requested_by=requested_by,
        parameters=parameters or {},
        interval_start=start,
        interval_end=end,
        sql=statement_to_record(report),
        report_version_id=newest_version_id(report.pk),
        worker=worker,
        started_at=now,
        heartbeat_at=now,
    )


def claim_runs(limit, worker):
    """Claim up to ``limit`` queued runs for ``worker``, oldest first; they are running.

    Several workers can claim at once without waiting on or double-claiming each
    other's runs (see ``start_queued_runs``). A run whose report is already running
    waits its turn. The runs come with their reports loaded.
    """
    runs = start_queued_runs(limit, worker)
    if not runs:
        return runs
    report_ids = sorted({run.report_id for run in runs})
    placeholders = ", ".join(["%s"] * len(report_ids))
    reports = {
        report.pk: report
        for report in Report.objects.raw(
            f"SELECT * FROM reports_report WHERE id IN ({placeholders})", report_ids
        )
    }
    claimed = []
    for run in runs:
        if run.report_id in reports:  # else deleted meanwhile, and its runs with it
            run.report = reports[run.report_id]
            claimed.append(run)
    return claimed


def statement_to_record(report):
    """The statement a run of ``report`` executes; the SQL as written if it is invalid
    (the run then fails with the reason)."""
    try:
        return source_for(report.data_source).backend.read_only_statement(report.sql)
    except (KeyError, ReportSQLError):
        return report.sql


def schedule_retry(run):
    """Queue the next attempt of a failed scheduled run, if its report allows more."""
    report = run.report
    if run.trigger != RunTrigger.SCHEDULE or run.attempt > report.max_retries:
        return None
    delay = settings.RETRY_BACKOFF_SECONDS * 2 ** (run.attempt - 1)
    retry = Run.objects.create(
        report=report,
        trigger=RunTrigger.SCHEDULE,
        status=RunStatus.QUEUED,
        attempt=run.attempt + 1,
        retry_of_id=run.retry_of_id or run.pk,
        interval_start=run.interval_start,  # the same data interval, tried again
        interval_end=run.interval_end,
        parameters=run.parameters,
        not_before=timezone.now() + timedelta(seconds=delay),
    )
    logger.info(
        "run %s of %s failed; attempt %s queued in %s s", run.pk, report.slug, retry.attempt, delay
    )
    return retry


def request_rerun(run, trigger, *, requested_by=None, idempotency_key=""):
    """Queue a new run with the values and interval of ``run``, linked to it;
    ``(new run, created)``. Raises ParameterError when the report's parameters have
    changed so that the values no longer fit, QueueFull when the queue is full."""
    report = run.report
    interval = (run.interval_start, run.interval_end)
    if None in interval:
        interval = default_interval(report, run.queued_at)
    zone = report_zone(report)
    # Runs recorded before values were checked may hold what a run cannot use.
    for name, bound in zip(BUILT_IN_NAMES, interval, strict=True):
        if not representable(bound, zone):
            raise ParameterError(name, out_of_range_message(utc_text(bound), zone))
    if not isinstance(run.parameters, dict):
        raise ParameterError("parameters", "The run's recorded values are not an object.")
    declared = declared_of(report)
    given = given_without_bounds(run.parameters)
    resolve_values(declared, given, interval, zone)
    return request_run(
        report,
        trigger,
        requested_by=requested_by,
        idempotency_key=idempotency_key,
        parameters=given,
        interval=interval,
        rerun_of=run,
    )
