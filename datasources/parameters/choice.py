"""One of the texts the declaration lists."""

from datasources.parameters.base import ParameterError, ParameterType, check_text
from reportsvc.text import shown

MAX_CHOICES = 200


class ChoiceType(ParameterType):
    name = "choice"
    sql_type = "text"

    def parse(self, parameter, raw, zone):
        if not isinstance(raw, str):
            raise ParameterError(parameter.name, "Give text (a JSON string).")
        check_text(parameter.name, raw)
        if raw not in parameter.choices:
            raise ParameterError(
                parameter.name,
                f"'{shown(raw)}' is not allowed: use one of {shown(', '.join(parameter.choices))}.",
            )
        return raw

    def sample(self, parameter, interval):
        return parameter.choices[0]

    def literal(self, value):
        return str(value)

    def declared_choices(self, item, where):
        choices = item.get("choices")
        if (
            not isinstance(choices, list)
            or not choices
            or not all(isinstance(choice, str) for choice in choices)
        ):
            raise ParameterError(
                f"{where}.choices", "A choice parameter lists its allowed values as text."
            )
        if len(choices) > MAX_CHOICES or len(set(choices)) != len(choices):
            raise ParameterError(
                f"{where}.choices",
                f"List at most {MAX_CHOICES} different values, each once.",
            )
        for choice in choices:
            check_text(f"{where}.choices", choice)
        return tuple(choices)

    def form_field(self, parameter, *, initial, note="", **options):
        from django import forms

        return forms.ChoiceField(
            choices=[(choice, choice) for choice in parameter.choices], initial=initial, **options
        )


TYPE = ChoiceType()
