"""Names of run outputs, stored and downloaded: the one place that says how they read.

A run whose SQL uses its data interval is named for it, so a folder of outputs reads
like a series (``daily-revenue_2026-11-25.csv``). A stored output is
``<slug>/<slug>_<label>_run<id><extension>``: unique per run, and found by its run id
even when the label is unknown (a run that died before recording what it used).
"""

import re
from datetime import UTC, timedelta

from reports.parameters import BUILT_IN_NAMES
from reports.zones import report_zone
from reportsvc.moments import in_zone
from runs.models import output_upload_path
from runs.services.formats import format_of_file

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


def output_name(run, output_format):
    """The name the run's output is stored under, in its report's folder."""
    return output_upload_path(run, f"{output_file_stem(run)}{output_format.suffix}")


def report_outputs_prefix(run):
    """What the stored name of every output of the run's report starts with, whatever
    each run was named for (its interval or its start)."""
    return output_upload_path(run, f"{run.report.slug}_")


def report_folder(run):
    """The folder of the run's report's outputs in the storage."""
    return report_outputs_prefix(run).rpartition("/")[0]


_RUN_OF_NAME = re.compile(r"_run(\d+)\.[^/]+$")


def run_id_of_name(name):
    """The id of the run a stored output name (or an S3 key) belongs to; None for
    names that are no run's output."""
    match = _RUN_OF_NAME.search(name)
    return int(match.group(1)) if match else None


def output_format_of(run):
    """The format of the run's file: its name's extension says (a report may have
    changed format since the run)."""
    return format_of_file(run.output.name)


def download_file_name(run):
    """The name a download of the run's file (or a mail's attachment) is saved under."""
    return f"{download_file_stem(run)}{output_format_of(run).suffix}"


def download_file_stem(run):
    """The name a download is saved under, without extension."""
    label = interval_label(run)
    if label:
        return f"{run.report.slug}_{label}"
    started = run.started_at or run.queued_at
    return f"{run.report.slug}_{started:%Y-%m-%d_%H%M}_run{run.pk}"
