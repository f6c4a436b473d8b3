"""What a parameter type is: one class per type, one instance in the registry.

A type turns a raw value (JSON, or text from a form or the command line) into a typed
Python value, records it as JSON, offers a sample for checking SQL without a run, builds
the admin's form field, and hands backends a canonical value to render as a literal
(each backend quotes it with its driver and casts it with its own table, keyed by
``sql_type``).
"""

from reportsvc.text import storage_problem

MAX_TEXT_LENGTH = 10_000


class ParameterError(ValueError):
    """A parameter value or declaration that is wrong; ``field`` names it."""

    def __init__(self, field, message):
        super().__init__(message)
        self.field = field
        self.message = message


def check_text(field_name, value):
    """Text every database stores as given: valid Unicode, no NUL, not too long."""
    if problem := storage_problem(value):
        raise ParameterError(field_name, problem)
    if len(value) > MAX_TEXT_LENGTH:
        raise ParameterError(
            field_name, f"Text is at most {MAX_TEXT_LENGTH:,} characters; this is {len(value):,}."
        )


def plain_decimal(value):
    """A decimal in plain notation, never an exponent: ``0.0000001``, not ``1E-7``."""
    return format(value, "f")


class ParameterType:
    """A parameter type. Subclasses set the attributes and override what differs.

    ``parameter`` arguments are declared parameters (reports.parameters.Parameter):
    ``name``, ``label``, ``default``, ``choices``.
    """

    name = ""  # as declared in a report's parameters, e.g. "date"
    # The kind of SQL value a literal of this type is: date, timestamp, integer, decimal,
    # text or boolean. Each backend casts a literal by it (its own cast table).
    sql_type = ""
    interval_default = False  # may default to interval_start / interval_end
    help_text = ""  # the admin form's hint
    multiline = False  # the admin form's field is a text area

    def parse(self, parameter, raw, zone):
        """``raw`` (not None) as a value of this type; naive times read in ``zone``.
        Raises ParameterError(parameter.name, message)."""
        raise NotImplementedError

    def json_value(self, value):
        """The value as a run records it (JSON): no float rounding, ISO dates."""
        return value

    def text(self, value):
        """The value as text (a default, as stored and shown)."""
        return str(self.json_value(value))

    def sample(self, parameter, interval):
        """A value for checking SQL without a run; ``interval`` is (start, end)."""
        raise NotImplementedError

    def from_bound(self, bound, zone):
        """The value of a parameter that defaults to an interval bound (an aware
        datetime), for types with ``interval_default``."""
        raise NotImplementedError

    def literal(self, value):
        """The canonical value a backend renders as a literal: str, int, bool, or an
        aware datetime in UTC."""
        return value

    def declared_choices(self, item, where):
        """The choices of a declaration (``item``: its JSON object): none but for choice."""
        if item.get("choices") not in (None, []):
            raise ParameterError(f"{where}.choices", "Only choice parameters have choices.")
        return ()

    def form_field(self, parameter, *, initial, note="", **options):
        """The admin's form field for a value (text parsed by :meth:`parse` later);
        ``note`` adds to the hint, ``options`` are the field's label and required."""
        from django import forms

        widget = forms.Textarea(attrs={"rows": 2}) if self.multiline else None
        return forms.CharField(
            initial=initial, widget=widget, strip=False, help_text=self.help_text + note, **options
        )
