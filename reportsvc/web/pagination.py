"""Cursor pagination, newest first, as the API's lists share it; and opt-in pages of a
list that stays a plain array (the next page's address in a Link header)."""

import base64
import binascii
import json

from django.utils.text import capfirst
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter
from rest_framework.exceptions import NotFound, ValidationError
from rest_framework.pagination import CursorPagination
from rest_framework.utils.urls import replace_query_param


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


class LinkHeaderPages:
    """Opt-in pages of a list whose answer stays a JSON array, so clients made before
    pages existed keep working: without ``page_size`` the whole list, as always; with it,
    at most that many items and, when there are more, ``Link: <…>; rel="next"`` (RFC
    8288) with the next page's address. Keyset pages: the cursor is the sort key of the
    page's last item, so a page is one indexed range, whatever its depth.
    Subclasses set ``max_page_size`` and ``items``."""

    page_size_query_param = "page_size"
    cursor_query_param = "cursor"
    max_page_size = 500
    items = "items"

    def __init__(self, request):
        self.request = request
        raw_size = request.query_params.get(self.page_size_query_param)
        raw_cursor = request.query_params.get(self.cursor_query_param)
        self.requested = raw_size is not None or raw_cursor is not None
        self.size = self._size(raw_size) if self.requested else None
        self.after = self._after(raw_cursor) if raw_cursor is not None else None

    def _size(self, raw):
        if raw is None:
            return self.max_page_size
        try:
            size = int(raw)
        except ValueError:
            size = 0
        if size < 1:
            raise ValidationError(
                {self.page_size_query_param: [f"A whole number from 1 to {self.max_page_size}."]}
            )
        return min(size, self.max_page_size)

    def _after(self, raw):
        try:
            key = json.loads(base64.urlsafe_b64decode(raw.encode("ascii")))
        except (ValueError, UnicodeError, binascii.Error):
            key = None
        if not (isinstance(key, list) and len(key) == 2 and isinstance(key[1], int)):
            raise ValidationError(
                {self.cursor_query_param: ["Invalid cursor: use the Link header's next page."]}
            )
        return tuple(key)

    def next_link(self, key):
        """The Link header's value for the page after the item whose sort key is ``key``."""
        cursor = base64.urlsafe_b64encode(json.dumps(list(key)).encode()).decode("ascii")
        url = self.request.build_absolute_uri()
        url = replace_query_param(url, self.page_size_query_param, self.size)
        return f'<{replace_query_param(url, self.cursor_query_param, cursor)}>; rel="next"'

    @classmethod
    def schema_parameters(cls):
        return [
            OpenApiParameter(
                cls.page_size_query_param,
                {"type": "integer", "minimum": 1, "maximum": cls.max_page_size},
                description=f"Asks for pages: at most this many {cls.items} (a larger number "
                f"gives {cls.max_page_size}). The answer is the same array, and while more "
                "follow, its `Link` header names the next page. Without it, every one.",
            ),
            OpenApiParameter(
                cls.cursor_query_param,
                OpenApiTypes.STR,
                description="Opaque position, from a `Link` header's next page (400 if it "
                "is not one).",
            ),
            OpenApiParameter(
                "Link",
                OpenApiTypes.STR,
                OpenApiParameter.HEADER,
                response=[200],
                description='With `page_size`, while more follow: `<URL>; rel="next"`, the '
                "next page's address.",
            ),
        ]
