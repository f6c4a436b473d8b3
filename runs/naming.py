"""Names of run outputs: a run whose SQL uses its data interval is named for it, so a
folder of outputs reads like a series (``daily-revenue_2026-11-25.csv``)."""

from datetime import UTC, timedelta

from reports.parameters import BUILT_IN_NAMES
from reports.services.statements import report_zone
from reportsvc.moments import in_zone

DAY_LIKE = timedelta(hours=23)  # a calendar day across a DST change is 23 to 25 hours


def interval_label(run):
    """``2026-11-25`` for an interval of a day or more (its start's date in the report's
    zone), ``2026-11-25T0600`` for a shorter one; None when the run's SQL did not use
    the interval (its recorded values do not include a bound)."""
    if run.interval_start is None or run.interval_end is None:
        return None
    if not any(name in (run.parameters or {}) for name in BUILT_IN_NAMES):
        return None
    zone = report_zone(run.report)
    # A run stored before bounds were checked may start where the zone's calendar does
    # not reach (year 1 in New York): its name then reads the start in UTC.
    start = in_zone(run.interval_start, zone) or in_zone(run.interval_start, UTC)
    day = start.date().isoformat()  # strftime writes year 1 as "1"
    if run.interval_end - run.interval_start >= DAY_LIKE:
        return day
    return f"{day}T{start:%H%M}"


def output_file_stem(run):
    """The stored file's name without extension; unique per run."""
    label = interval_label(run)
    if label:
        return f"{run.report.slug}_{label}_run{run.pk}"
    return f"{run.report.slug}_{run.started_at:%Y%m%dT%H%M%SZ}_run{run.pk}"


def download_file_stem(run):
    """The name a download is saved under, without extension."""
    label = interval_label(run)
    if label:
        return f"{run.report.slug}_{label}"
    started = run.started_at or run.queued_at
    return f"{run.report.slug}_{started:%Y-%m-%d_%H%M}_run{run.pk}"
