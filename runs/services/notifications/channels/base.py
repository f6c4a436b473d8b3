"""The channel interface, the events channels speak of, and what every message says.

An :class:`Event` is what happened (``kind``, the report, the run if there is one, a
note from whoever emits it). :func:`summarize` turns it into a :class:`Summary`, the
content every channel shows in its own form (email text and HTML, Block Kit, an
Adaptive Card, a JSON payload): so a new event kind needs a line in ``KINDS`` and every
channel has a message for it.
"""

import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from django.conf import settings
from django.urls import reverse

from datasources.sandbox import without_statement_text
from runs.services.notifications.channels.addresses import redact_text

EVENT_KINDS = (
    "success",
    "failure",
    "alert",
    "recovered",
    "reminder",
    "stale",
    "fresh",
    "cancelled",
)

# How each kind reads: (status word, icon, one line saying what happened).
KINDS = {
    "success": ("succeeded", "\u2705", "The run succeeded."),
    "failure": ("FAILED", "\U0001f534", "The run failed."),
    "alert": ("ALERT", "\u26a0\ufe0f", "The alert condition holds."),
    "recovered": ("recovered", "\U0001f7e2", "The report succeeds again after failing."),
    "reminder": ("still failing", "\U0001f501", "The report is still failing."),
    "stale": ("STALE", "\u23f3", "No run has succeeded within the expected time."),
    "fresh": ("fresh again", "\U0001f7e2", "A run succeeded again within the expected time."),
    "cancelled": ("cancelled", "\u26d4", "The run was cancelled."),
}

# Delivery.reason of a kind: success and failure keep the words deliveries always had.
DELIVERY_REASONS = {"success": "finished", "failure": "failed"}

# Rows every channel that shows rows shows at most (the report's inline_rows is ≤ this).
INLINE_ROWS_MAX = 50
INLINE_COLUMNS_MAX = 20


def streak_text(failures, since):
    """A failing streak as messages say it: ``3 failed runs since 2026-11-25 06:00:00 UTC``."""
    runs = "1 failed run" if failures == 1 else f"{failures:,} failed runs"
    when = f"{since:%Y-%m-%d %H:%M:%S %Z}" if since else "-"
    return f"{runs} since {when}"


def delivery_reason(kind):
    return DELIVERY_REASONS.get(kind, kind)


def kind_of_reason(reason):
    """The event kind of a Delivery.reason (or of an old notifier reason)."""
    return {value: key for key, value in DELIVERY_REASONS.items()}.get(reason, reason)


@dataclass
class Event:
    kind: str  # one of EVENT_KINDS
    report: object
    run: object = None  # None for report-level events (stale, fresh)
    note: str = ""  # what the emitter adds, e.g. "failing since 06:00 (3 runs)"
    rows: object = None  # a runs.services.infrastructure.preview.Preview of the run's file, or None
    file: "StoredFile | None" = None  # the run's file, for channels that attach or upload it
    # A failing streak (failed, reminder, recovered): its failures and first failure.
    failures: int = 0
    since: object = None
    # Freshness (stale, fresh): the report's expectation and its last success.
    expect_success_within: object = None
    last_success_at: object = None

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ValueError(f"unknown event kind {self.kind!r}")


@dataclass(frozen=True)
class StoredFile:
    """A run's stored output as channels attach or upload it. Whoever sends the event
    makes it (runs.services.notifications.notifier): channels know neither how outputs
    are named nor where they are stored."""

    name: str  # as its download is named: ``daily-revenue_2026-11-25.csv``
    output_format: object  # its OutputFormat (runs.services.formats)
    size: int | None  # bytes; None when the run recorded none
    open: Callable  # () -> the file, open for reading bytes


@dataclass(frozen=True)
class Target:
    channel: str
    address: str
    options: dict = field(default_factory=dict)


class TargetProblem(ValueError):
    """A target cannot be saved; ``str()`` is the message for the user."""


class DeliveryFailed(Exception):
    """Sending failed after ``attempts`` attempts; ``str()`` is the recorded reason."""

    def __init__(self, message, attempts=1):
        super().__init__(message)
        self.attempts = attempts


class Attempt:
    """What a send may use: the worker's ``stopping`` event, waits that end with it."""

    def __init__(self, stopping=None):
        self.stopping = stopping

    def stopped(self):
        return self.stopping is not None and self.stopping.is_set()

    def wait(self, seconds):
        """Sleep ``seconds``; True if the worker started stopping meanwhile."""
        if self.stopping is None:
            time.sleep(seconds)
            return False
        return self.stopping.wait(seconds)


@dataclass
class Cell:
    text: str
    length: int = 0
    is_null: bool = False
    cut: bool = False


@dataclass
class Table:
    header: list
    rows: list  # lists of Cell
    more_rows: bool = False  # the file has more rows than shown
    hidden_columns: int = 0


@dataclass
class Summary:
    kind: str
    status: str  # "succeeded", "FAILED", …
    icon: str
    headline: str  # "Daily revenue: FAILED"
    what: str  # one line: what happened
    facts: list  # (label, value) pairs
    reason: str = ""  # failures: the first line of the error, as viewers see it
    note: str = ""
    links: list = field(default_factory=list)  # (label, url)
    table: Table | None = None
    footer: str = ""


class Channel:
    """One way of telling people. Subclasses set ``name``/``label`` and implement the
    four methods below (see the package's docstring)."""

    name = ""
    label = ""
    shows_rows = False  # shows the report's first rows when it asks for them
    address_help = ""
    options_allowed = ()

    def clean_target(self, address, options):
        raise NotImplementedError

    def redact(self, address):
        raise NotImplementedError

    def build(self, event, target):
        raise NotImplementedError

    def send(self, target, message, attempt):
        raise NotImplementedError

    def check_options(self, options):
        if not isinstance(options, dict):
            raise TargetProblem("options must be an object")
        unknown = sorted(set(options) - set(self.options_allowed))
        if unknown:
            allowed = ", ".join(self.options_allowed) or "none"
            raise TargetProblem(
                f"unknown option {unknown[0]!r} for {self.label} (allowed: {allowed})"
            )
        return dict(options)


# --- what every message says --------------------------------------------------------


def run_links(run):
    base = settings.PUBLIC_BASE_URL
    return {
        "admin": base + reverse("admin:runs_run_change", args=[run.pk]),
        "api": base + reverse("run-detail", args=[run.pk]),
        "download": base + reverse("run-download", args=[run.pk]) if run.output else None,
    }


def report_link(report):
    return settings.PUBLIC_BASE_URL + reverse("admin:reports_report_change", args=[report.pk])


def report_api_link(report):
    return settings.PUBLIC_BASE_URL + reverse("report-detail", args=[report.slug])


def first_line_for_viewers(error):
    """The first line of a run's error as people who may not change the report see it:
    no statement text, URLs and addresses redacted."""
    text = redact_text(without_statement_text(error or "")).strip()
    return text.splitlines()[0] if text else ""


def _when(moment):
    return f"{moment:%Y-%m-%d %H:%M %Z}" if moment else "-"


def summarize(event):
    """What every channel says about ``event``."""
    report, run = event.report, event.run
    status, icon, what = KINDS[event.kind]
    facts = [("Status", status)]
    if event.kind == "alert":
        condition = report.get_alert_condition_display()
        if report.alert_threshold is not None:
            condition += f" (N = {report.alert_threshold:,})"
        facts.append(("Alert", condition))
    links = []
    footer = f"reportsvc · {report.slug}"
    if run is not None:
        if run.interval_start and run.interval_end:
            facts.append(
                ("Data interval", f"{_when(run.interval_start)} to {_when(run.interval_end)}")
            )
        facts.append(("Rows", f"{run.row_count:,}" if run.row_count is not None else "-"))
        duration = run.duration_seconds
        facts.append(("Duration", f"{duration:.1f} s" if duration is not None else "-"))
        facts.append(("Finished", _when(run.finished_at)))
        if run.parameters:
            shown = ", ".join(
                f"{name} = {json.dumps(value, ensure_ascii=False)}"
                for name, value in run.parameters.items()
            )
            facts.append(("Parameters", shown))
        found = run_links(run)
        links.append(("Open the run", found["admin"]))
        if found["download"]:
            links.append(("Download", found["download"]))
        footer += f" · run {run.pk} ({run.trigger})"
    else:
        links.append(("Open the report", report_link(report)))
    reason = ""
    if run is not None and run.error and event.kind in ("failure", "reminder", "cancelled"):
        reason = first_line_for_viewers(run.error)
    return Summary(
        kind=event.kind,
        status=status,
        icon=icon,
        headline=f"{report.name}: {status}",
        what=what,
        facts=facts,
        reason=reason,
        note=event.note,
        links=links,
        table=inline_table(event),
        footer=footer,
    )


def inline_table(event):
    """The first rows to show (the report's ``inline_rows``, at most INLINE_COLUMNS_MAX
    columns), from the preview the notifier read of the run's file; None if off."""
    limit = min(getattr(event.report, "inline_rows", 0) or 0, INLINE_ROWS_MAX)
    preview = event.rows
    if not limit or preview is None or preview.problem or not preview.header:
        return None

    def cell(value):
        return Cell(value.text, value.length, value.is_null, value.truncated)

    columns = INLINE_COLUMNS_MAX
    return Table(
        header=[value.text for value in preview.header[:columns]],
        rows=[[cell(value) for value in row[:columns]] for row in preview.rows[:limit]],
        more_rows=preview.more_rows or len(preview.rows) > limit,
        hidden_columns=preview.hidden_columns + max(0, len(preview.header) - columns),
    )


def cell_text(cell, max_chars):
    """A cell as plain text: NULL apart from the empty string, long values cut with
    their length shown."""
    if cell.is_null:
        return "NULL"
    if len(cell.text) > max_chars or cell.cut:
        length = (
            f"{cell.length:,}+"
            if cell.cut and cell.length <= len(cell.text)
            else f"{cell.length:,}"
        )
        return cell.text[:max_chars] + f"… ({length} chars)"
    return cell.text


def table_notes(table):
    notes = []
    if table.more_rows:
        notes.append(f"First {len(table.rows)} rows; the file has more.")
    if table.hidden_columns:
        notes.append(f"{table.hidden_columns} more columns not shown.")
    return " ".join(notes)
