"""Cursor pagination, newest first, as the API's lists share it."""

from django.utils.text import capfirst
from rest_framework.exceptions import NotFound, ValidationError
from rest_framework.pagination import CursorPagination


class NewestFirstCursorPagination(CursorPagination):
    """Newest first; a page stays the same while new items arrive. Subclasses set
    ``ordering``, ``page_size``, ``max_page_size`` and ``items`` (what a page holds)."""

    page_size_query_param = "page_size"
    items = "items"

    def get_schema_operation_parameters(self, view):
        parameters = super().get_schema_operation_parameters(view)
        for parameter in parameters:
            if parameter["name"] == self.cursor_query_param:
                parameter["description"] = (
                    "Opaque position, taken from the `next` or `previous` link of a page "
                    "(400 if it is not one of those)."
                )
            elif parameter["name"] == self.page_size_query_param:
                parameter["description"] = (
                    f"{capfirst(self.items)} per page: 1 to {self.max_page_size} (default "
                    f"{self.page_size}); a larger number gives {self.max_page_size}."
                )
                parameter["schema"] = {
                    "type": "integer",
                    "minimum": 1,
                    "maximum": self.max_page_size,
                }
        return parameters

    def get_paginated_response_schema(self, schema):
        result = super().get_paginated_response_schema(schema)
        result["required"] = ["next", "previous", "results"]  # always sent, null at the ends
        for name, direction in (("next", "older"), ("previous", "newer")):
            result["properties"][name].pop("example", None)
            result["properties"][name]["description"] = (
                f"The page of {direction} {self.items}, with the same filters; null if there "
                "is none."
            )
        return result

    def decode_cursor(self, request):
        try:
            return super().decode_cursor(request)
        except NotFound:  # DRF answers a bad cursor with 404; it is bad input
            raise ValidationError(
                {self.cursor_query_param: ["Invalid cursor: use the next/previous links."]}
            ) from None
