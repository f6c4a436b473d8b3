"""True or false; text such as yes/no, on/off, t/f, 1/0 reads too."""

from datasources.parameters.base import ParameterError, ParameterType

WORDS = {
    "true": True,
    "t": True,
    "yes": True,
    "on": True,
    "1": True,
    "false": False,
    "f": False,
    "no": False,
    "off": False,
    "0": False,
}


class BooleanType(ParameterType):
    name = "boolean"
    sql_type = "boolean"

    def parse(self, parameter, raw, zone):
        if isinstance(raw, bool):
            return raw
        if isinstance(raw, str) and raw.strip().lower() in WORDS:
            return WORDS[raw.strip().lower()]
        raise ParameterError(parameter.name, "Give true or false.")

    def text(self, value):
        return "true" if value else "false"

    def sample(self, parameter, interval):
        return False

    def literal(self, value):
        return bool(value)

    def form_field(self, parameter, *, initial, note="", **options):
        from django import forms

        return forms.ChoiceField(
            choices=[("true", "true"), ("false", "false")], initial=initial or "false", **options
        )


TYPE = BooleanType()
