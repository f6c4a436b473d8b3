"""Text: valid Unicode without NUL, at most MAX_TEXT_LENGTH characters."""

from datasources.parameters.base import ParameterError, ParameterType, check_text


class TextType(ParameterType):
    name = "text"
    sql_type = "text"
    multiline = True

    def parse(self, parameter, raw, zone):
        if not isinstance(raw, str):
            raise ParameterError(parameter.name, "Give text (a JSON string).")
        check_text(parameter.name, raw)
        return raw

    def sample(self, parameter, interval):
        return ""

    def literal(self, value):
        return str(value)


TYPE = TextType()
