"""A whole number in the 64-bit range every database's bigint holds."""

import re

from datasources.parameters.base import ParameterError, ParameterType
from reportsvc.text import shown

BIGINT_MIN, BIGINT_MAX = -(2**63), 2**63 - 1


class IntegerType(ParameterType):
    name = "integer"
    sql_type = "integer"
    help_text = "a whole number"

    def parse(self, parameter, raw, zone):
        if isinstance(raw, bool) or not isinstance(raw, (int, str)):
            raise ParameterError(parameter.name, "Give a whole number, e.g. 42.")
        text = str(raw).strip()
        if not re.fullmatch(r"[+-]?[0-9]{1,19}", text):
            raise ParameterError(parameter.name, f"'{shown(text)}' is not a whole number, e.g. 42.")
        value = int(text)
        if not BIGINT_MIN <= value <= BIGINT_MAX:
            raise ParameterError(parameter.name, "The number is outside the 64-bit integer range.")
        return value

    def sample(self, parameter, interval):
        return 0

    def literal(self, value):
        return int(value)


TYPE = IntegerType()
