"""A report's versions (reports.history records them): what each one changed, as a
given user may see it, and reverting a report to one of them.

What a user sees follows their Visibility (``shows``: ``.sql``, ``.targets``): without
view_report_sql a changed SQL says that it changed, never what it says; without
change_report email addresses read as their domain. Webhook URLs are kept as scheme and
host only and the webhook secret not at all, so those are never shown, and a revert
leaves them as they are.

Diffs stay bounded whatever the text: at most DIFF_COMPARED_LINES changed lines of
each side are compared (PAGE_COMPARED_LINES on one page), DIFF_SHOWN_LINES lines of
diff shown, LINE_SHOWN_CHARS characters of a line; a note says what was left out.
"""

import difflib
import json
from dataclasses import dataclass

from django.utils.text import capfirst

from reports.history import REDACTED_FIELDS, SECRET_FIELDS
from reports.models import REPORT_SETTINGS_FIELDS, Report
from reports.services.schedules import save_report
from reports.services.validation import check_report
from reports.targets import redacted_emails, redacted_targets, redacted_webhooks

HistoricalReport = Report.history.model

KINDS = {"+": "created", "~": "changed", "-": "deleted"}
# Shown as a line diff; the others as before and after.
LINE_DIFF_FIELDS = ("sql", "description", "parameters")
# What a revert restores: every setting the history keeps as it was.
RESTORED_FIELDS = tuple(name for name in REPORT_SETTINGS_FIELDS if name not in REDACTED_FIELDS)
FIELD_ORDER = {name: index for index, name in enumerate((*REPORT_SETTINGS_FIELDS, *SECRET_FIELDS))}

DIFF_COMPARED_LINES = 1000
DIFF_CONTEXT_LINES = 2
PAGE_COMPARED_LINES = 20_000
DIFF_SHOWN_LINES = 200
LINE_SHOWN_CHARS = 500
VALUE_SHOWN_CHARS = 2000

SQL_CHANGED_HIDDEN = "The SQL changed. Hidden: the SQL needs the view_report_sql permission."
SECRET_REPLACED = "Replaced by a new random secret. Secrets are never kept in the history."
WEBHOOKS_KEPT_SHORT = "The history keeps webhook URLs as scheme and host only."
WEBHOOKS_CHANGED_UNSEEN = (
    "A URL's user, password, path or query changed: the history keeps webhook URLs as "
    "scheme and host only."
)
EMAILS_REDACTED = (
    "Addresses are shown as their domain: only users who may change the report see them."
)
EMAILS_CHANGED_UNSEEN = "The addresses changed. " + EMAILS_REDACTED


def versions_of(report_id):
    """The report's versions, newest first."""
    return (
        HistoricalReport.objects.filter(id=report_id)
        .select_related("history_user")
        .order_by("-history_version")
    )


# The largest number a version may have (PostgreSQL's integer): a larger one in a URL
# is no version, not a database error.
LARGEST_VERSION = 2**31 - 1


def version_of(report_id, number):
    """Version ``number`` of the report, or None."""
    if not 1 <= number <= LARGEST_VERSION:
        return None
    return versions_of(report_id).filter(history_version=number).first()


def newest_version_id(report_id):
    """The id of the report's newest version (what a run started now records), or None."""
    return (
        HistoricalReport.objects.filter(id=report_id)
        .order_by("-history_version")
        .values_list("history_id", flat=True)
        .first()
    )


def newest_version_number(report_id):
    """The number of the report's newest version, or None."""
    return (
        HistoricalReport.objects.filter(id=report_id)
        .order_by("-history_version")
        .values_list("history_version", flat=True)
        .first()
    )


def previous_versions(versions):
    """{number: version} of the versions just before each of ``versions`` (one report's)."""
    if not versions:
        return {}
    wanted = {version.history_version - 1 for version in versions} - {0}
    found = {version.history_version: version for version in versions}
    missing = wanted - set(found)
    if missing:
        found.update(
            (version.history_version, version)
            for version in HistoricalReport.objects.filter(
                id=versions[0].id, history_version__in=missing
            )
        )
    return {number: found[number] for number in wanted if number in found}


def kind_of(version):
    return KINDS[version.history_type]


def label_of(name):
    return capfirst(Report._meta.get_field(name).verbose_name)


@dataclass(frozen=True)
class DiffLine:
    kind: str  # "hunk" (@@ …), "add", "remove" or "same"
    text: str  # with the diff's own prefix: "+", "-" or " "


@dataclass(frozen=True)
class Diff:
    lines: tuple
    note: str  # what was left out, or ""

    def as_text(self):
        return "\n".join([line.text for line in self.lines] + ([self.note] if self.note else []))


@dataclass(frozen=True)
class Change:
    """One changed setting, as one user may see it."""

    field: str
    label: str
    before: str | None  # None: no value before (a new report), or not for this user
    after: str | None
    diff: Diff | None  # for multi-line settings that had a value before
    note: str

    @property
    def multiline(self):
        """Shown as a block of text (the SQL, the description, the parameters)."""
        return self.field in LINE_DIFF_FIELDS


class DiffBudget:
    """How many changed lines one page may still compare: a page of many versions of a
    huge, contrived SQL stays quick (comparing costs up to the square of the lines)."""

    def __init__(self, lines=PAGE_COMPARED_LINES):
        self.left = lines

    def take(self, lines):
        if lines > self.left:
            return False
        self.left -= lines
        return True


def line_diff(before, after, budget=None):
    """A unified line diff of two texts, bounded (see the module's docstring).

    Lines the two texts start and end with alike are set aside first, so that an edit
    to a long SQL compares only the lines around it.
    """
    old, new = before.splitlines(), after.splitlines()
    head = 0
    while head < min(len(old), len(new)) and old[head] == new[head]:
        head += 1
    tail = 0
    while tail < min(len(old), len(new)) - head and old[-1 - tail] == new[-1 - tail]:
        tail += 1
    changed_old, changed_new = old[head : len(old) - tail], new[head : len(new) - tail]
    notes = []
    longest = max(len(changed_old), len(changed_new))
    if longest > DIFF_COMPARED_LINES:
        notes.append(
            f"{longest:,} lines changed: only the first {DIFF_COMPARED_LINES:,} of them are "
            "compared."
        )
        changed_old, changed_new = (
            changed_old[:DIFF_COMPARED_LINES],
            changed_new[:DIFF_COMPARED_LINES],
        )
        tail = 0  # what follows the compared part is not shown
    if budget is not None and not budget.take(len(changed_old) + len(changed_new)):
        return Diff(
            (),
            "Not compared on this page, which shows much changed text already: "
            "open this version to see its diff.",
        )
    # The compared part, with up to DIFF_CONTEXT_LINES alike lines on either side.
    start = max(0, head - DIFF_CONTEXT_LINES)
    after_old = old[len(old) - tail : len(old) - tail + DIFF_CONTEXT_LINES] if tail else []
    after_new = new[len(new) - tail : len(new) - tail + DIFF_CONTEXT_LINES] if tail else []
    body = list(
        _unified(
            old[start:head] + changed_old + after_old,
            new[start:head] + changed_new + after_new,
            start,
        )
    )
    if not body and before != after:
        notes.append("Only line breaks or white space at the end changed.")
    if len(body) > DIFF_SHOWN_LINES:
        notes.append(
            f"… {len(body) - DIFF_SHOWN_LINES:,} more diff lines not shown: see the versions "
            "in full."
        )
    lines = tuple(
        DiffLine({"@": "hunk", "+": "add", "-": "remove"}.get(text[:1], "same"), _cut(text))
        for text in body[:DIFF_SHOWN_LINES]
    )
    return Diff(lines, " ".join(notes))


def _unified(old, new, offset):
    """difflib's unified diff of two line lists without its file header, numbering the
    lines from ``offset`` (where the lists start in the texts)."""
    matcher = difflib.SequenceMatcher(None, old, new)
    for group in matcher.get_grouped_opcodes(DIFF_CONTEXT_LINES):
        (_, old_start, _, new_start, _), (_, _, old_end, _, new_end) = group[0], group[-1]
        yield (
            f"@@ -{_range(offset + old_start, old_end - old_start)} "
            f"+{_range(offset + new_start, new_end - new_start)} @@"
        )
        for tag, i1, i2, j1, j2 in group:
            if tag == "equal":
                yield from (f" {line}" for line in old[i1:i2])
                continue
            yield from (f"-{line}" for line in old[i1:i2])
            yield from (f"+{line}" for line in new[j1:j2])


def _range(start, length):
    """A hunk's range as unified diffs write it: "3" for one line, "3,2", "2,0"."""
    if length == 1:
        return str(start + 1)
    return f"{start + 1 if length else start},{length}"


def _cut(text, limit=LINE_SHOWN_CHARS):
    if len(text) <= limit:
        return text
    return f"{text[:limit]}… ({len(text):,} characters)"


def value_text(name, value):
    """A setting's value as text: "" for none, true/false, parameters as indented JSON."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if name == "parameters":
        return json.dumps(value, indent=2, ensure_ascii=False) if value else ""
    if name == "targets":
        return "\n".join(json.dumps(item, ensure_ascii=False) for item in value)
    return str(value)


def describe_change(name, before, after, shows, *, new=False, budget=None):
    """The change of setting ``name`` from ``before`` to ``after`` (stored values; for a
    new report ``new`` and no before), as ``shows`` may see it; line diffs compare what
    ``budget`` (a DiffBudget) still allows."""
    label = label_of(name)
    if name in SECRET_FIELDS:
        return Change(name, label, None, None, None, SECRET_REPLACED)
    if name == "sql" and not shows.sql:
        return Change(name, label, None, None, None, SQL_CHANGED_HIDDEN)
    old = None if new else value_text(name, before)
    current = value_text(name, after)
    note = ""
    if name == "notify_emails" and not shows.targets:
        old = None if old is None else redacted_emails(old)
        current = redacted_emails(current)
        note = EMAILS_CHANGED_UNSEEN if old == current else EMAILS_REDACTED
    elif name == "notify_webhooks":
        note = WEBHOOKS_CHANGED_UNSEEN if old == current else WEBHOOKS_KEPT_SHORT
    elif name == "targets":
        if not shows.targets:
            old = None if new else value_text(name, redacted_targets(before))
            current = value_text(name, redacted_targets(after))
        note = WEBHOOKS_CHANGED_UNSEEN if old == current else WEBHOOKS_KEPT_SHORT
    diff = line_diff(old, current, budget) if name in LINE_DIFF_FIELDS and old is not None else None
    return Change(name, label, _value_shown(old), _value_shown(current), diff, note)


def _value_shown(text):
    return None if text is None else _cut(text, VALUE_SHOWN_CHARS)


def version_changes(version, previous, shows, budget=None):
    """What ``version`` changed (against ``previous``, the version before it), as
    ``shows`` may see it: every setting of a new report, nothing for a deletion or for
    the first version of a report that existed before history began. A page showing
    several versions shares one ``budget`` among them."""
    if version.history_type == "-":
        return []
    if version.history_type == "+":
        return [
            describe_change(name, None, getattr(version, name), shows, new=True)
            for name in REPORT_SETTINGS_FIELDS
            if value_text(name, getattr(version, name)) != ""
        ]
    names = sorted(version.history_changes, key=lambda name: FIELD_ORDER.get(name, 99))
    return [
        describe_change(
            name,
            getattr(previous, name, None) if previous is not None else None,
            getattr(version, name, None),
            shows,
            new=previous is None,
            budget=budget,
        )
        for name in names
        if name in FIELD_ORDER
    ]


SETTING_SHOWN_CHARS = 20000


def setting_shown(name, value):
    """``(text, is a block, note)`` of a setting on a version's page: long values cut,
    with a note."""
    text = value_text(name, value)
    if len(text) <= SETTING_SHOWN_CHARS:
        return text, name in LINE_DIFF_FIELDS, ""
    return (
        text[:SETTING_SHOWN_CHARS],
        name in LINE_DIFF_FIELDS,
        (
            f"… cut: {len(text):,} characters in all. The API's version (GET "
            "/api/reports/{slug}/history/{version}/) has them all."
        ),
    )


def version_settings(version, shows):
    """The settings as they were at ``version``, name -> value, as ``shows`` may see
    them: no ``sql`` without view_report_sql, addresses as their domain without
    change_report, webhook URLs as kept (scheme and host)."""
    settings = {name: getattr(version, name) for name in REPORT_SETTINGS_FIELDS}
    if not shows.sql:
        del settings["sql"]
    if not shows.targets:
        settings["notify_emails"] = redacted_emails(settings["notify_emails"])
        settings["targets"] = redacted_targets(settings["targets"])
    return settings


# --- Reverting -------------------------------------------------------------------


def revert_changes(report, version, shows):
    """What reverting ``report`` to ``version`` would change, current value first."""
    return [
        describe_change(name, getattr(report, name), getattr(version, name), shows)
        for name in RESTORED_FIELDS
        if getattr(report, name) != getattr(version, name)
    ]


def webhooks_stay(report, version):
    """True when the version's webhooks differ from the report's as far as the history
    can tell: a revert cannot restore them (it keeps scheme and host only)."""
    return redacted_webhooks(report.notify_webhooks) != version.notify_webhooks


def revert_report(report, version, *, by=None, via=""):
    """Give ``report`` the settings of ``version`` (all but its webhook URLs and secret,
    which the history does not keep), checked as a save is: the model's validation and
    the SQL checked on its data source. Raises ValidationError (by field) and changes
    nothing if they fail. Returns the new version, or None if nothing changed."""
    candidate = Report(
        **{field.attname: getattr(report, field.attname) for field in Report._meta.concrete_fields}
    )
    candidate._state.adding = False  # the report itself: unique checks leave it out
    candidate._remember_targets()  # the restored views are what changes
    for name in RESTORED_FIELDS:
        setattr(candidate, name, getattr(version, name))
    candidate.full_clean()
    check_report(candidate, model_checked=True)
    newest = newest_version_id(report.pk)
    note = f"reverted to version {version.history_version}"
    save_report(
        report,
        {name: getattr(candidate, name) for name in RESTORED_FIELDS},
        by=by,
        via=f"{note} ({via})" if via else note,
    )
    created = newest_version_id(report.pk)
    return None if created == newest else HistoricalReport.objects.get(history_id=created)
