"""A decimal number, exact: never a float, never an exponent."""

import re
from decimal import Decimal, InvalidOperation

from datasources.parameters.base import ParameterError, ParameterType, plain_decimal
from reportsvc.text import shown

MAX_DECIMAL_DIGITS = 100


class DecimalType(ParameterType):
    name = "decimal"
    sql_type = "decimal"
    help_text = "e.g. 12.50"

    def parse(self, parameter, raw, zone):
        name = parameter.name
        if isinstance(raw, bool) or not isinstance(raw, (int, float, str)):
            raise ParameterError(name, "Give a decimal number, e.g. 12.50.")
        # A JSON number reads as a float: 0.0000001 is then 1e-07, written out here.
        text = plain_decimal(Decimal(repr(raw))) if isinstance(raw, float) else str(raw).strip()
        if len(text) > MAX_DECIMAL_DIGITS:
            raise ParameterError(
                name,
                f"A decimal is at most {MAX_DECIMAL_DIGITS} characters written out; this is "
                f"{len(text):,}.",
            )
        if not re.fullmatch(r"[+-]?([0-9]+(\.[0-9]*)?|\.[0-9]+)", text):
            raise ParameterError(
                name, f"'{shown(text)}' is not a decimal number such as 12.50 (no exponent)."
            )
        try:
            return Decimal(text)
        except InvalidOperation:  # pragma: no cover - the pattern admits only decimals
            raise ParameterError(name, f"'{shown(text)}' is not a decimal number.") from None

    def json_value(self, value):
        return plain_decimal(value)

    def sample(self, parameter, interval):
        return Decimal("0")

    def literal(self, value):
        return plain_decimal(value)


TYPE = DecimalType()
