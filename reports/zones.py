"""The one answer to "which zone is this report read in"."""

from reportsvc.moments import named_zone

UTC_ZONE = named_zone("UTC")


def report_zone(report):
    """The zone a report's schedule, intervals, values and outputs are read in: its
    own, or UTC when its stored name is no zone."""
    return named_zone(report.timezone) or UTC_ZONE
