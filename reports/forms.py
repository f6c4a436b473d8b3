"""Pieces of the report page's form: the parameters as rows, the data source as a choice,
the SQL in an editor. The stored values stay what the API reads and writes: parameters
a JSON list, the data source a name; the checks stay the model's (reports.models)."""

import contextlib
import json
import re

from django import forms
from django.core.exceptions import ValidationError
from django.template.loader import render_to_string
from django.utils.html import escape

from datasources.parameters import parameter_types
from datasources.parameters.base import MAX_TEXT_LENGTH
from datasources.registry import data_source_names, is_demo_source, source_for, source_variable
from reports.parameters import BUILT_IN_NAMES, LABEL_MAX_LENGTH, MAX_PARAMETERS, NAME_MAX_LENGTH
from reportsvc.moments import in_zone
from reportsvc.text import shown

PARAMETER_ROWS_PREFIX = "parameters"
ROW_KEYS = ("name", "type", "label", "default", "choices")
# A declaration's problem as the model reports it: "parameters[2].default: message".
ROW_PROBLEM = re.compile(r"parameters\[(\d+)\]\.(\w+): (.*)", re.DOTALL)


# --- Parameters as rows ---------------------------------------------------------------


def _type_choices():
    return [(name, name) for name in parameter_types()]


class ParameterRowForm(forms.Form):
    """One declared parameter. The type's own parsing checks the default (in the model's
    clean, as for the API); this form only says what a row holds."""

    name = forms.CharField(
        max_length=NAME_MAX_LENGTH,
        required=False,
        widget=forms.TextInput(attrs={"placeholder": "region", "spellcheck": "false"}),
    )
    type = forms.ChoiceField(choices=_type_choices, initial="text")
    label = forms.CharField(max_length=LABEL_MAX_LENGTH, required=False)
    default = forms.CharField(max_length=MAX_TEXT_LENGTH, required=False, strip=False)
    choices = forms.CharField(
        max_length=MAX_TEXT_LENGTH * 2,
        required=False,
        strip=False,
        widget=forms.Textarea(attrs={"rows": 1}),
    )

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        for name, field in self.fields.items():  # the column's header, for screen readers
            field.widget.attrs.setdefault("aria-label", field.label or name.capitalize())
        kind = self.initial.get("type")
        if kind and kind not in parameter_types():  # shown as stored; the save says why not
            self.fields["type"].choices = [*_type_choices(), (kind, f"{kind} (unknown)")]
        lines = str(self.initial.get("choices") or "").count("\n") + 1
        self.fields["choices"].widget.attrs["rows"] = min(lines, 5)

    def is_blank(self):
        """Nothing typed but perhaps a type: the row is not a parameter."""
        data = getattr(self, "cleaned_data", {})
        return not any(
            str(data.get(key) or "").strip() for key in ("name", "label", "default", "choices")
        )

    def clean(self):
        cleaned = super().clean()
        nameless = not (cleaned.get("name") or "").strip()
        if nameless and not self.is_blank() and "name" not in self.errors:
            self.add_error("name", "Name the parameter, as in {{ name }}.")
        return cleaned

    def declaration(self):
        """The row as the stored JSON object (the model normalises it)."""
        data = self.cleaned_data
        item = {
            "name": data["name"].strip(),
            "type": data["type"],
            "label": data["label"].strip(),
            "default": data["default"] if data["default"].strip() else None,
        }
        choices = [line.strip() for line in data["choices"].splitlines() if line.strip()]
        if choices:
            item["choices"] = choices
        return item


class BaseParameterRows(forms.BaseFormSet):
    default_error_messages = {
        **forms.BaseFormSet.default_error_messages,
        "too_many_forms": f"A report has at most {MAX_PARAMETERS} parameters.",
    }

    def kept_rows(self):
        """The rows that declare a parameter, in order: not deleted, not blank."""
        return [
            form
            for form in self.forms
            if form.is_valid() and not self._should_delete_form(form) and not form.is_blank()
        ]

    def declarations(self):
        """The declared parameters as the stored JSON list; ValidationError (for the
        parameters field) when a row is wrong, the row marked."""
        if not self.is_valid():
            raise ValidationError(self.summary())
        return [form.declaration() for form in self.kept_rows()]

    def summary(self):
        wrong = [number for number, form in enumerate(self.forms, 1) if form.errors]
        if wrong:
            return f"Fix parameter row {', '.join(map(str, wrong))} (marked below)."
        return "Fix the parameters (see below)."

    def mark(self, messages):
        """Put the model's messages about ``parameters[i].key`` on row i's field; return
        the summaries for the parameters field, and the messages no row holds."""
        rows, left = self.kept_rows(), []
        for message in messages:
            match = ROW_PROBLEM.fullmatch(str(message))
            index = int(match[1]) if match else -1
            if not match or index >= len(rows) or match[2] not in ROW_KEYS:
                left.append(message)
                continue
            row = rows[index]
            name = shown(row.cleaned_data.get("name", ""))
            row.add_error(match[2], match[3])  # takes the field out of cleaned_data
            number = self.forms.index(row) + 1
            left.append(f"Parameter row {number} ({name}), {match[2]}: {match[3]}")
        return left


ParameterRows = forms.formset_factory(
    ParameterRowForm,
    formset=BaseParameterRows,
    extra=1,
    can_delete=True,
    max_num=MAX_PARAMETERS,
    validate_max=True,
    absolute_max=MAX_PARAMETERS + 10,
)


def rows_initial(declared):
    """Rows for the stored JSON list (whatever it holds: a broken list shows what it can)."""
    if not isinstance(declared, list):
        return []
    rows = []
    for item in declared:
        if not isinstance(item, dict):
            continue
        choices = item.get("choices")
        rows.append(
            {
                "name": str(item.get("name") or ""),
                "type": str(item.get("type") or "text"),
                "label": str(item.get("label") or ""),
                "default": "" if item.get("default") is None else str(item.get("default")),
                "choices": "\n".join(map(str, choices)) if isinstance(choices, list) else "",
            }
        )
    return rows


def parameter_rows(data, stored):
    """The rows of a report's form: bound to ``data`` when it holds them (the page sends
    them; a POST without them, from a script, may send the list as JSON instead)."""
    if data is not None and f"{PARAMETER_ROWS_PREFIX}-TOTAL_FORMS" in data:
        return ParameterRows(data, prefix=PARAMETER_ROWS_PREFIX)
    if data is not None:
        with contextlib.suppress(TypeError, ValueError):
            stored = json.loads(data.get(PARAMETER_ROWS_PREFIX) or "[]")
    return ParameterRows(initial=rows_initial(stored), prefix=PARAMETER_ROWS_PREFIX)


# What a default of each type looks like, where the type has no hint of its own.
TYPE_HINTS = {"text": "any text", "boolean": "true or false", "choice": "one of the choices"}


def type_hint(kind):
    hint = kind.help_text or TYPE_HINTS.get(kind.name, "")
    return f"{hint}, or {' / '.join(BUILT_IN_NAMES)}" if kind.interval_default else hint


class ParameterRowsWidget(forms.Widget):
    """Renders the form's rows; what is sent is read by the rows themselves."""

    template = "admin/reports/report/parameter_rows.html"

    def __init__(self, rows, attrs=None):
        super().__init__(attrs)
        self.rows = rows

    def render(self, name, value, attrs=None, renderer=None):
        return render_to_string(
            self.template,
            {
                "rows": self.rows,
                "types": [(kind.name, type_hint(kind)) for kind in parameter_types().values()],
                "built_in": BUILT_IN_NAMES,
                "max_rows": MAX_PARAMETERS,
            },
        )

    def value_from_datadict(self, data, files, name):
        return data.get(name)  # the JSON of a POST without rows, else nothing

    def value_omitted_from_data(self, data, files, name):
        return False

    def id_for_label(self, id_):
        return f"id_{PARAMETER_ROWS_PREFIX}-0-name"


# --- The data source --------------------------------------------------------------------


def source_label(name):
    """``warehouse (PostgreSQL)``, ``default (demo, SQLite)``."""
    try:
        vendor = source_for(name).backend.label
    except KeyError:
        return name
    return f"{name} (demo, {vendor})" if is_demo_source(name) else f"{name} ({vendor})"


def unconfigured_source_message(name):
    names = ", ".join(data_source_names())
    return (
        f"The data source '{shown(name)}' is no longer configured ({source_variable(name)} "
        f"is not set): choose one of {names}, or set that variable and restart the service."
    )


def data_source_field(field, stored):
    """A choice of the configured sources for the model's ``data_source`` field; a
    stored name no longer configured is offered as it is, marked, and refused on save."""
    names = data_source_names()
    choices = [(name, source_label(name)) for name in names]
    help_text = (
        "The configured databases: REPORTING_DATABASE_URL and each REPORTING_DATABASE_URL_NAME."
    )
    if stored and stored not in names:
        choices.insert(0, (stored, f"{stored} (no longer configured)"))
        help_text = escape(unconfigured_source_message(stored))  # the admin shows help as HTML
    return forms.ChoiceField(
        choices=choices,
        label=field.label,
        initial=field.initial,
        help_text=help_text,
    )


def clean_data_source(value):
    if value not in data_source_names():
        raise ValidationError(unconfigured_source_message(value), code="unknown_data_source")
    return value


# --- Times in the report's zone ----------------------------------------------------------


def local_text(value, zone):
    """A moment as an input shows it: ``2026-11-26 06:00`` in ``zone``, no offset (the
    seconds only when there are some)."""
    local = in_zone(value, zone) or value
    return local.strftime("%Y-%m-%d %H:%M:%S" if local.second else "%Y-%m-%d %H:%M")


def moment_help(zone):
    return (
        f"A date and time in {zone.key}, e.g. 2026-11-26 06:00; with an offset "
        "(2026-11-26T06:00+01:00, or Z for UTC) it is read as given."
    )


def moment_input(zone):
    return forms.TextInput(
        attrs={
            "class": "rs-moment",
            "placeholder": "YYYY-MM-DD HH:MM",
            "spellcheck": "false",
            "autocomplete": "off",
            "aria-description": f"in {zone.key}",
        }
    )


# --- The SQL ------------------------------------------------------------------------------


class SQLTextarea(forms.Textarea):
    """A textarea that static/reportsvc/sql-editor.js turns into an editor with line
    numbers and highlighting; without JavaScript it stays a textarea."""

    def __init__(self, attrs=None):
        base = {"class": "rs-sql", "rows": 14, "spellcheck": "false", "data-sql-editor": "sql"}
        super().__init__({**base, **(attrs or {})})
