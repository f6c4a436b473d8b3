"""What a report's notifications say, and when they stay quiet.

The decisions are plain functions of a report's alert state (AlertState) and what just
happened: ``decide_run`` for a finished run, ``decide_freshness`` for the leader's
freshness check. They return notices; the notifier sends them (runs.services.notifications.notifier)
through whatever channels the report has, with a text per kind.

Kinds of notice:
- about a run: ``failed``, ``reminder`` (still failing: how many failures since when),
  ``recovered`` (the first success after a notified failure), ``finished`` (always),
  ``alert`` (the alert condition started to hold);
- about the report: ``stale`` (no success within ``expect_success_within``), ``fresh``
  (a run succeeded again).

notify_when: ``failure`` speaks on state changes (the first failure after a success, a
reminder at most every ``effective_repeat_after`` while failing, ``recovered``);
``every_failure`` on every failure; ``always`` after every run; ``never`` not about
runs. A failure kept quiet is a *suppressed* notice: recorded, never sent. Freshness
and the alert condition notify whatever notify_when says.

The state is written with conditional updates only (``AlertState.version`` for the
failing streak, ``stale_since`` for freshness): of two processes deciding about the same
report at once, one wins and the other decides again on what it wrote, so each notice
goes out once.
"""

import logging
from dataclasses import dataclass, replace
from datetime import datetime, timedelta

from django.db import transaction
from django.db.models import F, Q
from django.utils import timezone

from reports.models import AlertCondition, NotifyWhen, Report
from runs.models import AlertState, RunStatus, RunTally
from runs.services.notifications.channels.base import streak_text

logger = logging.getLogger("reportsvc.notify")

# A decision lost to a concurrent one is made again on the state that one wrote.
CAS_ATTEMPTS = 5


@dataclass(frozen=True)
class Streak:
    """A report's failing streak as AlertState keeps it."""

    failing_since: datetime | None = None
    failures: int = 0
    notified_at: datetime | None = None

    @property
    def failing(self):
        return self.failing_since is not None


@dataclass(frozen=True)
class Notice:
    """One thing to tell a report's targets (or, ``suppressed``, to record only)."""

    kind: str
    suppressed: bool = False
    failures: int = 0  # in the streak, this run's failure included
    since: datetime | None = None  # the streak's first failure
    note: str = ""  # why suppressed; or what a reminder or recovery says

    @property
    def reason(self):
        """What a Delivery records as its reason."""
        return self.kind


def _when(moment):
    return f"{moment:%Y-%m-%d %H:%M:%S %Z}" if moment else "-"


# --- decisions (no database) -------------------------------------------------------


def decide_run(streak, status, finished_at, notify_when, repeat_after, now):
    """``(notices, new streak)`` for a run of a report that ended in ``status``.

    ``streak`` is the state before; the new one counts the run whatever notify_when
    says, so a report switched to ``failure`` mid-streak reminds with the right count.
    """
    if status == RunStatus.FAILED:
        return _decide_failure(streak, finished_at, notify_when, repeat_after, now)
    if status == RunStatus.SUCCEEDED:
        return _decide_success(streak, finished_at, notify_when)
    if status == RunStatus.CANCELLED and notify_when == NotifyWhen.ALWAYS:
        # Someone stopped it: "after every run" hears of it. A cancel is no failure: the
        # failure settings stay quiet, and a streak neither ends nor grows.
        return [Notice("cancelled")], streak
    return [], streak  # skipped (and any other final status) tells nobody


def _decide_failure(streak, finished_at, notify_when, repeat_after, now):
    first = not streak.failing
    since = finished_at if first else streak.failing_since
    failures = 1 if first else streak.failures + 1
    after = Streak(since, failures, streak.notified_at)
    if notify_when == NotifyWhen.NEVER:
        return [], after
    told = replace(after, notified_at=now)
    if notify_when in (NotifyWhen.EVERY_FAILURE, NotifyWhen.ALWAYS):
        return [Notice("failed", failures=failures, since=since)], told
    if first:
        note = (
            "Further failures are not sent until it recovers; a reminder at most every "
            f"{repeat_after} while it keeps failing."
        )
        return [Notice("failed", failures=1, since=since, note=note)], told
    if streak.notified_at is None or now - streak.notified_at >= repeat_after:
        note = f"Still failing: {streak_text(failures, since)}."
        return [Notice("reminder", failures=failures, since=since, note=note)], told
    note = (
        f"Suppressed: failing since {_when(since)} ({failures:,} failures); "
        f"the next reminder from {_when(streak.notified_at + repeat_after)}."
    )
    return [Notice("failed", suppressed=True, failures=failures, since=since, note=note)], after


def _decide_success(streak, finished_at, notify_when):
    notices = []
    if notify_when == NotifyWhen.ALWAYS:
        notices.append(Notice("finished"))
    if not streak.failing or finished_at < streak.failing_since:
        return notices, streak  # nothing to end (or older than the streak's start)
    if notify_when == NotifyWhen.FAILURE and streak.notified_at is not None:
        note = f"Recovered after {streak_text(streak.failures, streak.failing_since)}."
        notices.append(
            Notice("recovered", failures=streak.failures, since=streak.failing_since, note=note)
        )
    return notices, Streak()


def decide_freshness(stale, alerted, enabled, expects=True):
    """``"stale"``, ``"fresh"``, ``"forget"`` or None for a report the freshness check
    looks at: ``stale`` as runs.selectors defines it, ``alerted`` whether the stale
    alert went, ``expects`` whether it still declares expect_success_within.

    A disabled report is not alerted about (someone turned it off); once alerted, it
    hears "fresh" when a run succeeds again, enabled or not. One whose expectation was
    removed while alerted is forgotten quietly: nothing came back to say "fresh" about.
    """
    if alerted and not expects:
        return "forget"
    if stale and not alerted and enabled:
        return "stale"
    if alerted and not stale:
        return "fresh"
    return None


def alert_holds(report, row_count):
    condition, threshold = report.alert_condition, report.alert_threshold
    if condition == AlertCondition.HAS_ROWS:
        return row_count > 0
    if condition == AlertCondition.EMPTY:
        return row_count == 0
    if condition == AlertCondition.ROWS_ABOVE:
        return threshold is not None and row_count > threshold
    if condition == AlertCondition.ROWS_BELOW:
        return threshold is not None and row_count < threshold
    return False


# --- applying them -----------------------------------------------------------------


def run_notices(run, *, has_targets, now=None):
    """The notices a finished run calls for, its report's alert state moved on.

    The alert condition's state moves whether or not the report has targets; the
    failing streak only for reports with targets (a report without any costs no query).
    """
    notices = []
    if has_targets and run.status in (RunStatus.FAILED, RunStatus.SUCCEEDED, RunStatus.CANCELLED):
        notices += _streak_notices(run, now or timezone.now())
    if run.status == RunStatus.SUCCEEDED and _alert_started(run):
        notices.append(Notice("alert"))
    return notices


def _alert_started(run):
    """Updates the report's alert state: an alert fires when its condition starts to
    hold, and can fire again only after a successful run where it did not hold."""
    report = run.report
    if not report.alert_condition:
        return False
    holds = alert_holds(report, run.row_count or 0)
    with transaction.atomic():
        # Only the first of two racing runs flips the state (and alerts).
        flipped = Report.objects.filter(pk=report.pk, alert_active=not holds).update(
            alert_active=holds
        )
    return holds and bool(flipped)


def _streak_notices(run, now):
    report = run.report
    finished_at = run.finished_at or now
    mode, repeat_after = report.notify_when, report.effective_repeat_after
    for _ in range(CAS_ATTEMPTS):
        state = _state_of(report.pk)
        before = Streak(state.failing_since, state.failures, state.notified_at)
        streak = before
        if run.status == RunStatus.FAILED:
            last_success = _last_success_at(report.pk)
            if last_success is not None and last_success > finished_at:
                # A later run succeeded already: this failure is old news.
                if mode == NotifyWhen.FAILURE:
                    note = "Suppressed: a later run has succeeded already."
                    return [Notice("failed", suppressed=True, note=note)]
                return decide_run(Streak(), run.status, finished_at, mode, repeat_after, now)[0]
            if streak.failing and last_success is not None and last_success > streak.failing_since:
                # A success the streak did not see (its notification still on its way,
                # or the report had no targets then) ended it: a new streak starts.
                streak = Streak()
        notices, after = decide_run(streak, run.status, finished_at, mode, repeat_after, now)
        if after == before:
            return notices
        written = AlertState.objects.filter(pk=report.pk, version=state.version).update(
            version=F("version") + 1,
            failing_since=after.failing_since,
            failures=after.failures,
            notified_at=after.notified_at,
        )
        if written:
            return notices
    logger.warning(
        "alert state of report %s kept changing; run %s notifies nothing", report.pk, run.pk
    )
    return []


def _state_of(report_id):
    state = AlertState.objects.filter(pk=report_id).first()
    if state is None:
        AlertState.objects.bulk_create([AlertState(report_id=report_id)], ignore_conflicts=True)
        state = AlertState.objects.get(pk=report_id)
    return state


def _last_success_at(report_id):
    return (
        RunTally.objects.filter(report_id=report_id, status=RunStatus.SUCCEEDED)
        .values_list("last_finished_at", flat=True)
        .first()
    )


def claim_freshness_events(now=None):
    """The freshness alerts ("stale", "fresh") to send now, as ReportEvents.

    Each alert is claimed with a conditional update of ``stale_since`` in this
    transaction: two checks at once send each alert once between them. The leader calls
    it fenced by its lease (runs.services.runtime.freshness).
    """
    from runs.selectors import reports_with_freshness  # reads runs and reports

    now = now or timezone.now()
    events = []
    with transaction.atomic():
        looked_at = (
            reports_with_freshness(now)
            .filter(
                Q(expect_success_within__isnull=False) | Q(alert_state__stale_since__isnull=False)
            )
            .annotate(alerted_at=F("alert_state__stale_since"))
            .only("pk", "name", "slug", "enabled", "expect_success_within", "created_at")
        )
        for report in looked_at:
            kind = decide_freshness(
                report.stale,
                report.alerted_at is not None,
                report.enabled,
                expects=report.expect_success_within is not None,
            )
            if kind is None or not _claim_freshness(report, kind, now):
                continue
            if kind == "forget":
                continue
            events.append(
                ReportEvent(
                    report,
                    Notice(kind, note=_freshness_note(report, kind, now)),
                    last_success_at=report.last_success_at,
                    expect_success_within=report.expect_success_within,
                )
            )
    return events


def _claim_freshness(report, kind, now):
    if kind == "stale":
        AlertState.objects.bulk_create([AlertState(report_id=report.pk)], ignore_conflicts=True)
        claimed = AlertState.objects.filter(pk=report.pk, stale_since__isnull=True)
        return bool(claimed.update(stale_since=now))
    claimed = AlertState.objects.filter(pk=report.pk, stale_since=report.alerted_at)
    return bool(claimed.update(stale_since=None))


def _freshness_note(report, kind, now):
    if kind == "fresh":
        return f"Fresh again: a run succeeded at {_when(report.last_success_at)}."
    if report.last_success_at is None:
        return (
            f"Stale: no run has succeeded since the report was created "
            f"({_when(report.created_at)}); one was expected within "
            f"{report.expect_success_within}."
        )
    return (
        f"Stale: no run has succeeded for {_age(now - report.last_success_at)} (the last "
        f"at {_when(report.last_success_at)}); one was expected within "
        f"{report.expect_success_within}."
    )


def _age(delta):
    return str(timedelta(seconds=int(delta.total_seconds())))


@dataclass(frozen=True)
class ReportEvent:
    """A notice about a report as a whole (no run), for the notification lanes."""

    report: Report
    notice: Notice
    last_success_at: datetime | None = None
    expect_success_within: timedelta | None = None
    pk = None  # not a run

    @property
    def report_id(self):
        return self.report.pk

    def __str__(self):
        return f"{self.notice.kind} alert of {self.report.slug}"
