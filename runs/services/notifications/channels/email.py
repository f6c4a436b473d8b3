"""Email: a ``multipart/alternative`` message, the text part and an HTML part with the
same summary (and, when the report asks, its first rows as a table), the run's file
attached within NOTIFY_ATTACH_MAX_BYTES.

The HTML part is escaped throughout (Django's template engine), its CSS inlined into
``style`` attributes (css-inline) so mail clients that drop ``<style>`` render it, and it
stays under ``HTML_MAX_BYTES``: Gmail clips larger messages. It is cut in this order:
each cell to ``CELL_CHARS`` characters (its length shown), the error to
``ERROR_CHARS``, then rows from the end of the table until it fits, with a line saying
how many rows were left out and why.
"""

import json
from pathlib import Path

import css_inline
from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.mail import EmailMultiAlternatives
from django.core.validators import EmailValidator
from django.db import DEFAULT_DB_ALIAS, connections
from django.template import Context, Engine

from datasources.sandbox import without_statement_text
from runs.services.formats import format_of_file
from runs.services.notifications.channels.addresses import redact_email
from runs.services.notifications.channels.base import (
    Channel,
    DeliveryFailed,
    TargetProblem,
    cell_text,
    run_links,
    streak_text,
    summarize,
    table_notes,
)

HTML_MAX_BYTES = 100_000
CELL_CHARS = 100
ERROR_CHARS = 2000
FACT_CHARS = 500

CSS = """
body { margin: 0; padding: 16px; background: #f4f5f7; color: #1d1d1f;
       font-family: -apple-system, 'Segoe UI', Helvetica, Arial, sans-serif; font-size: 14px; }
.card { max-width: 960px; background: #ffffff; border: 1px solid #dcdfe4; border-radius: 6px;
        padding: 16px 20px; }
h1 { font-size: 18px; margin: 0 0 4px 0; }
.bad { color: #b42318; }
.good { color: #067647; }
.what { margin: 0 0 12px 0; color: #555555; }
.note { margin: 0 0 12px 0; padding: 8px; background: #fff8e1; }
.facts th { text-align: left; padding: 2px 16px 2px 0; color: #555555; font-weight: normal;
            vertical-align: top; }
.facts td { padding: 2px 0; }
.error { white-space: pre-wrap; background: #fef3f2; border-left: 3px solid #b42318;
         padding: 8px; font-family: Menlo, Consolas, monospace; font-size: 12px; }
.links a { display: inline-block; margin: 12px 12px 0 0; padding: 6px 12px; background: #1f6feb;
           color: #ffffff; text-decoration: none; border-radius: 4px; }
.rows { border-collapse: collapse; margin-top: 16px; font-size: 12px; }
.rows th { background: #eef0f3; text-align: left; padding: 4px 8px; border: 1px solid #dcdfe4; }
.rows td { padding: 4px 8px; border: 1px solid #dcdfe4; vertical-align: top;
           font-family: Menlo, Consolas, monospace; white-space: pre-wrap; }
.rows td.null { color: #98a2b3; font-style: italic; }
.rows td.short { white-space: pre; }
.rows .cut { color: #98a2b3; }
.small { color: #667085; font-size: 12px; margin-top: 12px; }
"""

# Escapes everything it is given (autoescape); the CSS is ours.
TEMPLATE = Engine(dirs=[Path(__file__).parent], autoescape=True).get_template("email.html")

BAD_KINDS = ("failure", "alert", "reminder", "stale", "cancelled")


def _cut(text, chars):
    return text if len(text) <= chars else text[:chars] + f"… ({len(text):,} chars)"


def _html_cells(table):
    rows = []
    for row in table.rows:
        shown = []
        for cell in row:
            cut = cell.cut or len(cell.text) > CELL_CHARS
            length = f"{cell.length:,}" + (
                "+" if cell.cut and cell.length <= len(cell.text) else ""
            )
            shown.append(
                {
                    "null": cell.is_null,
                    "text": cell.text[:CELL_CHARS],
                    "cut": cut,
                    "length": length,
                    "short": len(cell.text) <= 24,  # kept on one line: dates, numbers
                }
            )
        rows.append(shown)
    return rows


def html_body(event, summary, attach_note=""):
    """The HTML part: inlined CSS, under HTML_MAX_BYTES (see the module's docstring)."""
    run = event.run
    error = (
        _cut(without_statement_text(run.error), ERROR_CHARS)
        if run is not None and run.error
        else ""
    )
    facts = [(label, _cut(value, FACT_CHARS)) for label, value in summary.facts]
    table = summary.table
    cells = _html_cells(table) if table else []
    keep = len(cells)
    while True:
        note = table_notes(table) if table else ""
        if table and keep < len(cells):
            note = (
                f"{keep} of the first {len(cells)} rows shown: the message is kept under "
                f"{HTML_MAX_BYTES // 1000} KB, as Gmail clips larger ones. " + note
            ).strip()
        html = css_inline.inline(
            TEMPLATE.render(
                Context(
                    {
                        "s": summary,
                        "css": CSS,
                        "tone": "bad" if summary.kind in BAD_KINDS else "good",
                        "facts": facts,
                        "error": error,
                        "table": table,
                        "rows": cells[:keep],
                        "table_note": note,
                        "attach_note": attach_note,
                    }
                )
            )
        )
        if len(html.encode()) < HTML_MAX_BYTES or keep == 0:
            return html
        keep = keep // 2 if len(html.encode()) > 2 * HTML_MAX_BYTES else keep - 1


# Subjects shout what needs attention or changed, as they always have.
SUBJECT_LABELS = {"reminder": "STILL FAILING", "recovered": "RECOVERED", "fresh": "FRESH AGAIN"}


def subject(event):
    summary = summarize(event)
    run = event.run
    label = {"success": run.status if run is not None else "succeeded"}.get(
        event.kind, SUBJECT_LABELS.get(event.kind, summary.status)
    )
    about = ""
    if run is not None:
        rows = f", {run.row_count:,} rows" if run.row_count is not None else ""
        if event.kind == "reminder" and event.since is not None:
            rows += f"; {streak_text(event.failures, event.since)}"
        about = f" (run {run.pk}{rows})"
    return f"[reportsvc] {event.report.name}: {label}{about}"


def text_body(event, attach_note=""):
    """The text part: every fact, the error in full (without statement text), the links."""
    report, run = event.report, event.run
    summary = summarize(event)
    if run is None:
        lines = [
            f"Report:    {report.name} ({report.slug})",
            f"Event:     {summary.status}",
            summary.what,
        ]
        if event.note:
            lines.append(event.note)
        lines += ["", f"Report in the admin: {summary.links[0][1]}"]
        return "\n".join(lines) + "\n"
    links = run_links(run)
    lines = [
        f"Report:    {report.name} ({report.slug})",
        f"Run:       {run.pk} ({run.trigger})",
        f"Status:    {run.status}",
    ]
    if event.kind == "alert":
        lines.append(
            f"Alert:     {report.get_alert_condition_display()}"
            + (f" (N = {report.alert_threshold})" if report.alert_threshold is not None else "")
        )
    elif event.kind not in ("success", "failure"):
        lines.append(f"Event:     {summary.status}: {summary.what}")
    if event.note:
        lines.append(f"Note:      {event.note}")
    lines += [
        f"Started:   {run.started_at:%Y-%m-%d %H:%M:%S %Z}" if run.started_at else "Started:   -",
        f"Finished:  {run.finished_at:%Y-%m-%d %H:%M:%S %Z}" if run.finished_at else "Finished:  -",
        f"Duration:  {run.duration_seconds:.2f} s"
        if run.duration_seconds is not None
        else "Duration:  -",
        f"Rows:      {run.row_count:,}" if run.row_count is not None else "Rows:      -",
    ]
    if run.interval_start and run.interval_end:
        lines.append(
            f"Interval:  {run.interval_start:%Y-%m-%d %H:%M:%S %Z} to "
            f"{run.interval_end:%Y-%m-%d %H:%M:%S %Z}"
        )
    if run.parameters:
        lines += ["", "Parameters:"]
        lines += [
            f"  {name} = {json.dumps(value, ensure_ascii=False)}"
            for name, value in run.parameters.items()
        ]
    if run.error:
        lines += ["", "Error:", without_statement_text(run.error)]
    lines += ["", f"Run in the admin: {links['admin']}", f"Run in the API:   {links['api']}"]
    if links["download"]:
        lines.append(f"Download ({format_of_file(run.output.name).label}): {links['download']}")
    if summary.table:
        lines += ["", "First rows:"]
        lines.append(" | ".join(summary.table.header))
        lines += [
            " | ".join(cell_text(cell, CELL_CHARS) for cell in row) for row in summary.table.rows
        ]
        if table_notes(summary.table):
            lines.append(table_notes(summary.table))
    if attach_note:
        lines += ["", attach_note]
    return "\n".join(lines) + "\n"


def attachment_plan(file):
    """(attach?, note) for the run's file (a StoredFile, or None) and
    NOTIFY_ATTACH_MAX_BYTES."""
    if file is None or file.size is None:
        return False, ""
    limit = settings.NOTIFY_ATTACH_MAX_BYTES
    label = file.output_format.label
    if file.size <= limit:
        return True, f"The file ({label}) is attached."
    return False, (
        f"The file ({label}, {file.size:,} bytes) is larger than the "
        f"{limit:,}-byte attachment limit (NOTIFY_ATTACH_MAX_BYTES), so it is not "
        "attached: download it with the link above."
    )


def email_attachment(file, content):
    """(file name, content, media type) of the run's file (a StoredFile) attached to an
    email: named as its download is, so a run over an interval arrives as
    ``daily-revenue_2026-11-25.csv``."""
    return file.name, content, file.output_format.media_type


def hang_up_database():
    """Close this thread's database connection before a network wait (unless a
    transaction needs it): a slow receiver must not hold a database session."""
    connection = connections[DEFAULT_DB_ALIAS]
    if not connection.in_atomic_block:
        connection.close()


class EmailChannel(Channel):
    name = "email"
    label = "Email"
    shows_rows = True
    address_help = "An email address."

    def clean_target(self, address, options):
        address = (address or "").strip()
        try:
            EmailValidator()(address)
        except ValidationError:
            raise TargetProblem(f"'{address}' is not an email address.") from None
        return address, self.check_options(options)

    def redact(self, address):
        return redact_email(address)

    def build(self, event, target):
        attach, note = attachment_plan(event.file)
        summary = summarize(event)
        message = EmailMultiAlternatives(
            subject(event), text_body(event, note), to=[target.address]
        )
        message.attach_alternative(html_body(event, summary, note), "text/html")
        return {"email": message, "attach": event.file if attach else None}

    def send(self, target, message, attempt):
        email = message["email"]
        try:
            attached = message["attach"]
            if attached is not None:
                with attached.open() as file:
                    email.attach(*email_attachment(attached, file.read()))
            hang_up_database()
            email.send()
        except Exception as error:  # SMTP, network, a missing file: recorded, never raised
            raise DeliveryFailed(f"{type(error).__name__}: {error}", 1) from None
        return 1


CHANNEL = EmailChannel()
