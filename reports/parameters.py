"""A report's parameters: their declarations, their values for a run, and the SQL with
the values in it.

Every report has two built-in parameters, ``interval_start`` and ``interval_end`` (time
stamps with zone: the data interval a run covers); a report can declare more, each with
a type (datasources.parameters). A value never becomes SQL text by itself: the data
source's backend quotes it with its driver's own quoting and gives it an explicit cast,
so ``{{ day }}`` becomes ``('2026-11-25'::date)`` on PostgreSQL and
``CAST('2026-11-25' AS TEXT)`` on SQLite.

Where a placeholder stands is decided by the database's parser, not by a lexer here
(the backend's ``check_positions``): a placeholder inside a string literal or a comment
would not be a parameter, and is refused; so is any bind parameter the SQL holds itself
(``$2``, ``:x``, ``?``).
"""

import re
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from datasources.parameters import TYPES, ParameterError, parameter_type, parameter_types
from datasources.placeholders import substitute
from reportsvc.text import shown, storage_problem

INTERVAL_START = "interval_start"
INTERVAL_END = "interval_end"
BUILT_IN_NAMES = (INTERVAL_START, INTERVAL_END)

MAX_PARAMETERS = 50
NAME_MAX_LENGTH = 63
LABEL_MAX_LENGTH = 200

NAME_PATTERN = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")


@dataclass(frozen=True)
class Parameter:
    """A declared parameter (or a built-in one)."""

    name: str
    type: str
    label: str = ""
    default: object = None  # a value of the type, INTERVAL_START/END, or None
    choices: tuple = field(default_factory=tuple)

    @property
    def kind(self):
        """The parameter's type (datasources.parameters)."""
        return parameter_type(self.type)

    @property
    def has_default(self):
        return self.default is not None

    @property
    def default_text(self):
        """The default as text (stored and shown that way for every type), or None."""
        if self.default is None or self.default in BUILT_IN_NAMES:
            return self.default
        return self.kind.text(self.default)

    def as_json(self):
        data = {"name": self.name, "type": self.type, "label": self.label}
        data["default"] = self.default_text
        if self.choices:
            data["choices"] = list(self.choices)
        return data


BUILT_IN_PARAMETERS = {
    INTERVAL_START: Parameter(INTERVAL_START, "timestamp", "Interval start"),
    INTERVAL_END: Parameter(INTERVAL_END, "timestamp", "Interval end"),
}


# --- Declarations ------------------------------------------------------------------


def declared_parameters(raw, zone=UTC):
    """The declared parameters of a report from their JSON form (a list of objects);
    a naive timestamp default is read in ``zone``.

    Raises :class:`ParameterError` whose field is ``parameters[i].key`` for the first
    thing wrong, with a message that says how to fix it.
    """
    if raw in (None, ""):
        return []
    if not isinstance(raw, list):
        raise ParameterError("parameters", "Parameters are a list of objects (or empty).")
    if len(raw) > MAX_PARAMETERS:
        raise ParameterError("parameters", f"A report has at most {MAX_PARAMETERS} parameters.")
    parameters, seen = [], set()
    for index, item in enumerate(raw):
        where = f"parameters[{index}]"
        if not isinstance(item, dict):
            raise ParameterError(where, "Each parameter is an object with name, type and label.")
        unknown = sorted(set(item) - {"name", "type", "label", "default", "choices"})
        if unknown:
            raise ParameterError(
                f"{where}.{shown(unknown[0])}",
                f"Unknown key '{shown(unknown[0])}': a parameter has name, type, label, "
                "default and (for choice) choices.",
            )
        name = item.get("name")
        if not isinstance(name, str) or not NAME_PATTERN.match(name):
            raise ParameterError(
                f"{where}.name",
                "A parameter's name is letters, digits and underscores, starting with a "
                "letter or underscore (e.g. region), as in {{ region }}.",
            )
        if len(name) > NAME_MAX_LENGTH:
            raise ParameterError(f"{where}.name", f"Use at most {NAME_MAX_LENGTH} characters.")
        if name in BUILT_IN_NAMES:
            raise ParameterError(
                f"{where}.name",
                f"'{name}' is built in (the run's data interval): use it without declaring it.",
            )
        if name in seen:
            raise ParameterError(f"{where}.name", f"'{name}' is declared twice.")
        seen.add(name)
        kind = item.get("type")
        if kind not in TYPES:
            raise ParameterError(f"{where}.type", f"Use one of: {', '.join(TYPES)}.")
        label = item.get("label", "")
        if not isinstance(label, str) or len(label) > LABEL_MAX_LENGTH:
            raise ParameterError(
                f"{where}.label", f"A label is text of at most {LABEL_MAX_LENGTH} characters."
            )
        if problem := storage_problem(label):
            raise ParameterError(f"{where}.label", problem)
        choices = parameter_type(kind).declared_choices(item, where)
        label = label.strip() or name.replace("_", " ").capitalize()
        parameter = Parameter(name, kind, label, None, choices)
        default = item.get("default")
        if default is not None and default != "":
            if default in BUILT_IN_NAMES:
                if not parameter.kind.interval_default:
                    allowed = " and ".join(
                        each.name for each in parameter_types().values() if each.interval_default
                    )
                    raise ParameterError(
                        f"{where}.default",
                        f"Only {allowed} parameters can default to '{default}'.",
                    )
            else:
                try:
                    default = parse_value(parameter, default, zone)
                except ParameterError as error:
                    raise ParameterError(f"{where}.default", error.message) from None
            parameter = Parameter(name, kind, label, default, choices)
        parameters.append(parameter)
    return parameters


def parameters_json(parameters):
    """The stored (JSON) form of declared parameters, normalised."""
    return [parameter.as_json() for parameter in parameters]


# --- Values ------------------------------------------------------------------------


def parse_value(parameter, raw, zone):
    """``raw`` (JSON value, or text from a form or the command line) as a value of the
    parameter's type; a naive timestamp is read in ``zone``. Raises ParameterError."""
    if raw is None:
        raise ParameterError(parameter.name, "A value is required.")
    return parameter.kind.parse(parameter, raw, zone)


def json_value(parameter, value):
    """A value as recorded on a run (JSON): ISO text for dates and time stamps, decimals
    as text (no float rounding)."""
    if value is None:
        return None
    return parameter.kind.json_value(value)


def interval_default(parameter, bound, zone):
    """A date or timestamp parameter's value when it defaults to an interval bound."""
    return parameter.kind.from_bound(bound, zone)


def resolve_values(declared, given, interval, zone):
    """Every parameter's value for a run: the given values (raw JSON/text) checked, the
    defaults filled in, and the built-ins from ``interval`` (start, end).

    Raises :class:`ParameterError` naming the parameter: unknown names, missing values
    without a default, values of the wrong type.
    """
    given = dict(given or {})
    known = {parameter.name for parameter in declared}
    for name in given:
        if name not in known and name not in BUILT_IN_NAMES:
            listed = ", ".join([*BUILT_IN_NAMES, *sorted(known)])
            raise ParameterError(
                shown(name), f"This report has no parameter '{shown(name)}' (it has: {listed})."
            )
    bounds = dict(zip(BUILT_IN_NAMES, interval, strict=True))
    values = dict(bounds)
    for parameter in declared:
        if parameter.name in given:
            values[parameter.name] = parse_value(parameter, given[parameter.name], zone)
        elif parameter.default in BUILT_IN_NAMES:
            values[parameter.name] = interval_default(parameter, bounds[parameter.default], zone)
        elif parameter.has_default:
            values[parameter.name] = parameter.default
        else:
            raise ParameterError(parameter.name, "A value is required (it has no default).")
    return values


def all_parameters(declared):
    """Built-ins first, then the declared ones: name -> Parameter."""
    return {**BUILT_IN_PARAMETERS, **{parameter.name: parameter for parameter in declared}}


def values_json(declared, values):
    """The values a run used, as recorded (JSON), built-ins first."""
    by_name = all_parameters(declared)
    return {name: json_value(by_name[name], value) for name, value in values.items()}


def sample_values(declared, zone):
    """Typed values for checking a report's SQL without a run: defaults where declared,
    else a sample of the type; the interval is the previous calendar day (UTC)."""
    today = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    interval = (today - timedelta(days=1), today)
    values = dict(zip(BUILT_IN_NAMES, interval, strict=True))
    for parameter in declared:
        if parameter.default in BUILT_IN_NAMES:
            value = interval_default(parameter, values[parameter.default], zone)
        elif parameter.has_default:
            value = parameter.default
        else:
            value = parameter.kind.sample(parameter, interval)
        values[parameter.name] = value
    return values


# --- Placeholders and rendering ----------------------------------------------------


def names_problem(placeholders, declared):
    """A message for the first placeholder that names no parameter, else None."""
    known = all_parameters(declared)
    for placeholder in placeholders:
        if placeholder.name not in known:
            listed = ", ".join(known)
            return (
                f"Unknown parameter in {placeholder}: declare a parameter named "
                f"'{placeholder.name}' under Parameters, or use one of: {listed}."
            )
    return None


def render(sql, placeholders, declared, values, quote):
    """``sql`` with each placeholder replaced by its value as a quoted, cast literal."""
    by_name = all_parameters(declared)

    def literal(index, placeholder):
        return quote(by_name[placeholder.name].kind, values[placeholder.name])

    return substitute(sql, placeholders, literal)[0]


def used_values(placeholders, declared, values):
    """The values a run records: the declared parameters and the built-ins the SQL
    uses (directly or as a default), built-ins first."""
    used = {placeholder.name for placeholder in placeholders}
    used |= {parameter.default for parameter in declared if parameter.default in BUILT_IN_NAMES}
    recorded = {name: values[name] for name in BUILT_IN_NAMES if name in used}
    recorded.update((parameter.name, values[parameter.name]) for parameter in declared)
    return recorded
